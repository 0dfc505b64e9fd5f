"""The export wrappers as a backend of the one loop: PyTorch runs the very graphs that get exported.

Used at export time to record each graph's real inputs (for compression error estimates) and in
tests to show the graphs, driven by the loop, reproduce HARTPipeline.
"""

from collections import defaultdict

import numpy as np
import torch

from hart.components import HARTModel
from hart.strict import from_plain
from hart.export.graphs import GraphSpec, graph_specs
from hart.export.manifest import describe_model
from hart.loop import GenerationLoop
from hart.runtime.graph_backend import GraphBackend
from hart.runtime.manifest import RopeSection, TextSection


class TorchWrapperBackend(GraphBackend):
    def __init__(self, model: HARTModel, specs: list[GraphSpec] | None = None, keep: int = 0):
        described = describe_model(model)
        super().__init__(model.config, from_plain(TextSection, described["text"], "text"),
                         from_plain(RopeSection, described["rope"], "rope"))
        self.graphs = {spec.name: spec for spec in (specs or graph_specs(model))}
        self.keep = keep  # how many calls per graph to record
        self.calls: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)

    def can_run(self, name: str) -> bool:
        return name in self.graphs

    @torch.no_grad()
    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        if len(self.calls[name]) < self.keep:
            self.calls[name].append({k: np.array(v) for k, v in feeds.items()})
        spec = self.graphs[name]
        outputs = spec.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return [o.numpy() for o in outputs]


def wrapper_loop(model: HARTModel, specs: list[GraphSpec] | None = None, keep: int = 0) -> GenerationLoop:
    """The one loop over the export wrappers of `model` (recording up to `keep` calls per graph)."""
    return GenerationLoop(model.config, TorchWrapperBackend(model, specs, keep))
