"""The export wrappers as a manifest-loop backend: PyTorch runs the very graphs that get exported.

Used at export time to record each graph's real inputs (for calibration and compression error
estimates) and in tests to show the manifest loop reproduces HARTPipeline.
"""

from collections import defaultdict

import numpy as np
import torch

from hart.export.graphs import GraphSpec
from hart.runtime.loop import NamedGraphBackend


class TorchWrapperBackend(NamedGraphBackend):
    def __init__(self, specs: list[GraphSpec], keep: int = 0):
        self.graphs = {spec.name: spec for spec in specs}
        transformer = self.graphs["step"].module.transformer
        self.cache_shape = (len(transformer.blocks), transformer.blocks[0].attn.heads, transformer.head_dim)
        self.keep = keep  # how many calls per graph to record
        self.calls: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)

    @torch.no_grad()
    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        if len(self.calls[name]) < self.keep:
            self.calls[name].append({k: np.array(v) for k, v in feeds.items()})
        spec = self.graphs[name]
        outputs = spec.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return [o.numpy() for o in outputs]
