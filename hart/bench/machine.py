"""What machine a benchmark ran on (CPU instruction sets included), and its measured matrix-multiplication peak."""

import datetime
import os
import platform
import time

import torch

from hart.cpu import cpu_features


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu_features": cpu_features(),
    }
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of a square matmul (the roofline the stages are compared with)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    sync()
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def peaks() -> dict[str, float]:
    result = {"cpu_fp32": matmul_peak("cpu", torch.float32), "cpu_bf16": matmul_peak("cpu", torch.bfloat16)}
    if torch.cuda.is_available():
        result.update(cuda_fp16=matmul_peak("cuda", torch.float16, 8192), cuda_bf16=matmul_peak("cuda", torch.bfloat16, 8192))
    return result
