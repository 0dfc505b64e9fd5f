"""Device and dtype choice, in one place: the caller names them, models never pick their own.

Precision by device (`--dtype auto`, the default): fp32, the one exact option, everywhere. On CPUs it is
also the fastest exact one (fp16 has no CPU kernels: refused); bf16 is faster only where the CPU has
native bf16 (AVX-512 BF16, AMX or Arm BF16: 2.7x on the 0.7B at 256 px, but its tokens are not fp32's),
and without it every bf16 matmul is emulated (BF16_EMULATED_FACTOR), so asking for it there warns.
On GPUs bf16/fp16 are HART's own inference precisions: faster, not exact, asked for explicitly.
"""

import logging

import torch

from hart.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
# One 0.7B image at 256 px, random weights, PyTorch, 2-core AMD EPYC with AVX2 + F16C and no native bf16:
# bf16 took more than 6 minutes, fp32 29.1 s (issue 20's measurement). With native bf16 (AVX-512 BF16,
# benchmarks/results/cpu-2core) bf16 took 9.0 s against fp32's 24.5 s.
BF16_EMULATED_FACTOR = 12
_warned: set[str] = set()


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


def resolve_dtype(name: str | torch.dtype, device: torch.device, native_bf16: bool | None = None) -> torch.dtype:
    """"auto" -> fp32 (see the module docstring); bf16 on a CPU without native bf16 warns once, with the
    measured slowdown. native_bf16: the CPU's (default: read from hart.cpu; None = unknown, no warning)."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name == "auto":
        dtype = torch.float32
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(DTYPE_CHOICES)}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("fp16 needs a GPU (cuda or mps); on the CPU use fp32 (or bf16 where the CPU has native bf16)")
    if dtype == torch.bfloat16 and device.type == "cpu":
        if native_bf16 is None:
            from hart.cpu import cpu_features

            native_bf16 = cpu_features()["native_bf16"]
        if native_bf16 is False and "bf16" not in _warned:
            _warned.add("bf16")
            log.warning("this CPU has no native bf16 (AVX-512 BF16, AMX or Arm BF16), so bf16 is emulated: about "
                        "%dx slower than fp32 for the 0.7B model where it was measured; use --dtype fp32 (or auto)",
                        BF16_EMULATED_FACTOR)
    return dtype


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock stage timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
