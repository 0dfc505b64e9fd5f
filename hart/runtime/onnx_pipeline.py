"""The ONNX Runtime backend of the one loop: onnxruntime + numpy, no torch."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

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
        self.sessions = {name: ort.InferenceSession(str(folder / graph.file), options,
                                                    providers=providers or ["CPUExecutionProvider"])
                         for name, graph in manifest.graphs.items()}
        self.on_run: Callable[[str, dict], None] | None = None  # a hook that sees every graph's inputs

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        if self.on_run is not None:
            self.on_run(name, feeds)
        return self.sessions[name].run(None, feeds)


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
