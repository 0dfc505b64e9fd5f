"""The ONNX Runtime backend of the manifest loop: onnxruntime + numpy, no torch."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hart.runtime.loop import ManifestLoop, NamedGraphBackend, RuntimeResult  # noqa: F401 (re-exported)
from hart.runtime.manifest import read_manifest


class OnnxBackend(NamedGraphBackend):
    """The export's graphs as onnxruntime sessions; the KV cache is explicit past/present I/O."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None, providers: list[str] | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or 0
        options.log_severity_level = 3
        self.sessions = {name: ort.InferenceSession(str(folder / graph["file"]), options,
                                                    providers=providers or ["CPUExecutionProvider"])
                         for name, graph in manifest["graphs"].items()}
        t = manifest["model"]["config"]["transformer"]
        self.cache_shape = (t["depth"], t["heads"], t["width"] // t["heads"])
        self.on_run: Callable[[str, dict], None] | None = None  # a hook that sees every graph's inputs

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        if self.on_run is not None:
            self.on_run(name, feeds)
        return self.sessions[name].run(None, feeds)


class OnnxPipeline(ManifestLoop):
    """Generation from an ONNX export folder; every file is checked against the manifest first."""

    def __init__(self, folder: str | Path, threads: int | None = None, providers: list[str] | None = None):
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)  # refuses missing or altered files before any session opens
        super().__init__(manifest, OnnxBackend(self.folder, manifest, threads, providers), self.folder)

    @property
    def sessions(self) -> dict:
        return self.backend.sessions
