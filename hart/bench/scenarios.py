"""Benchmark scenarios: model x backend x batch size, and which of them this machine can run.

Latency does not depend on weight values, so the 0.7B presets run with random weights (and random
text features instead of Qwen2); the report says so. The embedded model runs its trained weights.
"""

import platform
from dataclasses import asdict, dataclass

MODELS = ("tiny", "hart-0.7b-256px", "hart-0.7b-512px", "hart-0.7b-1024px")

# backend -> (runtime, device, precision)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch-cpu-fp32": ("torch", "cpu", "fp32"),
    "torch-cpu-bf16": ("torch", "cpu", "bf16"),
    "torch-cuda-fp16": ("torch", "cuda", "fp16"),
    "torch-cuda-bf16": ("torch", "cuda", "bf16"),
    "torch-cuda-bf16-compiled": ("torch", "cuda", "bf16"),
    "torch-cuda-bf16-cudagraphs": ("torch", "cuda", "bf16"),
    "onnx-cpu-fp32": ("onnx", "cpu", "fp32"),
    "onnx-cpu-int8": ("onnx", "cpu", "int8"),
    "onnx-cpu-int4": ("onnx", "cpu", "int4"),
    "onnx-cuda-fp32": ("onnx", "cuda", "fp32"),
    "coreml-none": ("coreml", "apple", "none"),
    "official-cpu-fp32": ("official", "cpu", "fp32"),
    "torch-cpu-fp32-fast": ("torch", "cpu", "fp32"),  # -fast: `--fast`'s approximations (not exact)
    "onnx-cpu-int8-fast": ("onnx", "cpu", "int8"),
}
REFERENCE = "torch-cpu-fp32"
OFFICIAL = "official-cpu-fp32"  # the official code (hart bench --official PATH), not a backend of this project


@dataclass(frozen=True)
class Scenario:
    model: str
    backend: str
    batch: int = 1

    @property
    def runtime(self) -> str:
        return BACKENDS[self.backend][0]

    @property
    def device(self) -> str:
        return BACKENDS[self.backend][1]

    @property
    def precision(self) -> str:
        return BACKENDS[self.backend][2]

    @property
    def fast(self) -> bool:
        """Whether the scenario runs `--fast` (hart.approximations.fast_for its runtime)."""
        return self.backend.endswith("-fast")

    @property
    def key(self) -> str:
        return f"{self.model}/{self.backend}/b{self.batch}"

    def to_dict(self) -> dict:
        return {**asdict(self), "runtime": self.runtime, "device": self.device, "precision": self.precision,
                "fast": self.fast}


def available(backend: str) -> tuple[bool, str]:
    """Whether this machine can run a backend, and why not."""
    runtime, device, _ = BACKENDS[backend]
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU"
        if runtime == "onnx":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return False, "onnxruntime has no CUDA provider"
    if runtime == "coreml" and platform.system() != "Darwin":
        return False, "Core ML runs on macOS only"
    if runtime == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, "onnxruntime is not installed (pip install 'hart[onnx]')"
    return True, ""


def plan(models: tuple[str, ...], backends: tuple[str, ...], batches: tuple[int, ...],
         official: bool = False) -> tuple[list[Scenario], list[dict]]:
    """The scenarios to run (the reference first for every model, then the official code's when asked for,
    on the 0.7B presets: the embedded model is this project's own) and the ones skipped, with reasons."""
    run, skipped = [], []
    for model in models:
        wanted = sorted((b for b in backends if b != OFFICIAL), key=lambda b: b != REFERENCE)
        if official and model != "tiny":
            wanted.insert(1, OFFICIAL)
        for backend in wanted:
            ok, why = available(backend)
            for batch in batches:
                scenario = Scenario(model, backend, batch)
                (run.append(scenario) if ok else skipped.append({**scenario.to_dict(), "reason": why}))
    return run, skipped


QUICK = {"models": ("tiny",), "backends": ("torch-cpu-fp32", "torch-cpu-bf16", "onnx-cpu-fp32", "onnx-cpu-int8"),
         "batches": (1,), "runs": 5, "warmup": 1}
FULL = {"models": MODELS[:2], "backends": tuple(b for b in BACKENDS if b != OFFICIAL), "batches": (1,), "runs": 5,
        "warmup": 1}
