"""Device and dtype choice, in one place: the caller names them, models never pick their own."""

import torch

from hart.errors import ConfigError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device mps was asked for but this machine has no Apple GPU; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r} is not supported; use auto, cpu, cuda or mps")
    return device


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("fp16 needs a GPU (cuda or mps); on the CPU use bf16 or fp32")
    return dtype


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock stage timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
