"""The ONNX Runtime backend of the one loop: onnxruntime + numpy, no torch."""

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hart.errors import CheckpointError
from hart.loop import Generation, GenerationLoop
from hart.runtime.graph_backend import GraphBackend
from hart.runtime.manifest import Manifest, read_manifest


class OnnxBackend(GraphBackend):
    """The export's graphs as onnxruntime sessions."""

    def __init__(self, folder: Path, manifest: Manifest, threads: int | None = None,
                 providers: list[str] | None = None):
        super().__init__(manifest.config, manifest.text, manifest.rope, folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or 0
        options.log_severity_level = 3
        required = {"condition", "step", "update_final", "residual", "decoder",
                    *(f"update_{si}" for si in range(len(manifest.schedule.patch_nums) - 1))}
        required |= {"text_encoder"} if manifest.text.kind in ("words", "qwen2") else set()
        missing = sorted(required - manifest.graphs.keys())
        if missing:
            raise CheckpointError(f"{folder / 'manifest.json'} lists no graph {', '.join(missing)}; the loop needs "
                                  f"{', '.join(sorted(required))}")
        self.files = {name: folder / graph.file for name, graph in manifest.graphs.items()}
        self.sessions = {}
        for name, graph in manifest.graphs.items():
            try:
                session = ort.InferenceSession(str(folder / graph.file), options,
                                               providers=providers or ["CPUExecutionProvider"])
            except Exception as err:  # onnxruntime raises its own exception types, none a common base
                raise CheckpointError(f"{folder / graph.file} is not a graph onnxruntime can load "
                                      f"({_first_line(err)})") from None
            _check_inputs(session, graph.inputs, f"{folder / graph.file}")
            self.sessions[name] = session
        self.on_run: Callable[[str, dict], None] | None = None  # a hook that sees every graph's inputs

    def can_run(self, name: str) -> bool:
        return name in self.sessions

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        if self.on_run is not None:
            self.on_run(name, feeds)
        try:
            return self.sessions[name].run(None, feeds)
        except Exception as err:
            if not type(err).__module__.startswith("onnxruntime"):
                raise
            raise CheckpointError(f"{self.files[name]} refused the inputs its manifest's model config "
                                  f"implies ({_first_line(err)}); the manifest and its graphs disagree, re-export "
                                  "the model") from None


def _first_line(err: Exception, limit: int = 200) -> str:
    """onnxruntime's message without its bracketed prefix and trailing advice: one short clause."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return text if len(text) <= limit else text[:limit] + "…"


def _check_inputs(session: ort.InferenceSession, declared, source: str) -> None:
    """The graph's inputs must be the manifest's: same names, and the same size on every fixed axis."""
    def well_formed(entry) -> bool:
        return (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("shape"), list)
                and all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in entry["shape"]))

    if not isinstance(declared, list) or not all(well_formed(entry) for entry in declared):
        raise CheckpointError(f"the manifest's inputs of {source} must be a list of {{name, dtype, shape}} entries")
    actual = {i.name: i.shape for i in session.get_inputs()}
    names = [entry["name"] for entry in declared]
    if sorted(actual) != sorted(names):
        raise CheckpointError(f"{source} takes inputs {', '.join(sorted(actual))}, but the manifest lists "
                              f"{', '.join(sorted(names)) or 'none'}")
    for entry in declared:
        shape = actual[entry["name"]]
        if len(shape) != len(entry["shape"]):
            raise CheckpointError(f"{source} input {entry['name']} has {len(shape)} axes, the manifest says "
                                  f"{len(entry['shape'])}")
        for axis, (have, want) in enumerate(zip(shape, entry["shape"])):
            if isinstance(have, int) and isinstance(want, int) and have != want:
                raise CheckpointError(f"{source} input {entry['name']} has size {have} on axis {axis}, the manifest "
                                      f"says {want}")


class OnnxPipeline(GenerationLoop):
    """Generation from an ONNX export folder; every file is checked against the manifest first."""

    def __init__(self, folder: str | Path, threads: int | None = None, providers: list[str] | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)  # refuses missing or altered files before any session opens
        super().__init__(self.manifest.config, OnnxBackend(self.folder, self.manifest, threads, providers))

    @property
    def sessions(self) -> dict:
        return self.backend.sessions


__all__ = ["Generation", "OnnxBackend", "OnnxPipeline"]
