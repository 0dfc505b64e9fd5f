"""Which instruction sets this CPU has: they decide whether bf16 and int8 are fast here or emulated.

The benchmark report names them next to every number; the precision choice (hart.device) reads them
to warn before a precision the CPU can only emulate.
"""

import logging
import platform
import subprocess

log = logging.getLogger(__name__)

# The instruction sets that decide how fast a backend can be here, under Linux's /proc/cpuinfo names
# (x86 "flags", aarch64 "Features"). A bf16 or int8 row means something else on a CPU that emulates them.
X86_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8")
ARM_FEATURES = ("asimd", "asimddp", "bf16", "i8mm", "fphp")
CPU_FEATURES = X86_FEATURES + ARM_FEATURES
# macOS names -> the Linux names above: machdep.cpu.* words (Intel) and hw.optional.* keys (both)
_MAC_NAMES = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
              "avx2_0": "avx2", "arm.feat_bf16": "bf16", "arm.feat_dotprod": "asimddp", "arm.feat_i8mm": "i8mm",
              "arm.feat_fp16": "fphp", "neon": "asimd"}


def parse_cpuinfo(text: str) -> set[str] | None:
    """The CPU_FEATURES in the first "flags" (x86) or "Features" (aarch64) line of /proc/cpuinfo text;
    None if it has neither line (another architecture: nothing known, rather than nothing there)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split()) & set(CPU_FEATURES)
    return None


def parse_sysctl(text: str) -> set[str]:
    """The CPU_FEATURES in macOS `sysctl` output: the machdep.cpu.features / leaf7_features words (Intel
    Macs) and "hw.optional.<name>: 1" lines (Intel and Apple silicon), under the Linux names."""
    found = set()
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key.startswith("hw.optional.") and value == "1":
            found.add(key.removeprefix("hw.optional.").lower())
        elif key.startswith("machdep.cpu."):
            found.update(word.lower() for word in value.split())
    return {_MAC_NAMES.get(name, name) for name in found} & set(CPU_FEATURES)


def _sysctl(*names: str) -> str:
    """Whatever sysctl prints for the names it knows (an unknown one, e.g. machdep.cpu.features on Apple
    silicon, only costs a line on stderr)."""
    try:
        return subprocess.run(["sysctl", *names], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_flags() -> set[str] | None:
    """The CPU_FEATURES this OS reports; None where it reports none (Windows, no /proc, failed sysctl)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return parse_cpuinfo(handle.read())
    except OSError:
        pass
    if platform.system() == "Darwin":
        text = _sysctl("machdep.cpu.features", "machdep.cpu.leaf7_features") + _sysctl("hw.optional")
        return parse_sysctl(text) if text else None
    return None


def _torch_capability() -> str | None:
    """torch's CPU dispatch level ("DEFAULT", "AVX2", "AVX512", "SVE256", ...): which kernels it really runs."""
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # torch older than 2.1
        return None


def cpu_features() -> dict:
    """The CPU's instruction sets that decide bf16 / fp16 / int8 speed, and torch's own dispatch level.

    A bf16 matmul without AVX-512 BF16 / AMX (or Arm BF16) is converted to float32 and back, so its row
    measures an emulation; the report marks such rows from the native_* booleans. Where the OS tells
    nothing, flags is empty and the booleans are None (unknown), so no row is marked on a guess."""
    flags = _cpu_flags()
    if flags is None:
        log.info("could not read the CPU's instruction sets on %s", platform.system())

    def native(*names: str) -> bool | None:
        return None if flags is None else bool(flags & set(names))

    return {
        "arch": platform.machine(), "flags": sorted(flags or ()), "torch_capability": _torch_capability(),
        "native_bf16": native("avx512_bf16", "amx_bf16", "bf16"),
        "native_int8_dot": native("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"),
        "native_fp16": native("avx512_fp16", "fphp"),
    }
