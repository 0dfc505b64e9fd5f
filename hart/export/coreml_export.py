"""`hart export coreml`: mlprogram packages, compressed with coremltools.optimize, for one prompt at a time.

Packages (fp16 compute; iOS 17 unless a feature needs iOS 18):
    text_encoder, condition, residual, decoder   one function each
    encoder, quantize                            one function each, float32 compute, never compressed (edits
                                                 and canvases keep their ids, see coreml_convert.FP32_PACKAGES)
    update                                       functions scale_0 .. scale_{K-2} and final (weights stored once)
    step                                         functions scale_0 .. scale_{K-1}, the KV cache as Core ML state
                                                 (iOS 18): every shape static, the cache never copied in or out,
                                                 the transformer weights stored once for all scales

Why per-scale functions with state: a single flexible function (RangeDim) tends to leave the Neural
Engine, and an explicit past/present cache copies the whole cache in and out at every scale (for the
0.7B model at 1024 px, ~2 GB in fp16 at the last scale). State plus one static function per scale
avoids both; save_multifunction stores the shared weights once (see the sizes in the manifest).

Compression modes: none (fp16 weights), int8 (linear, per channel), palette6 (6-bit k-means LUT,
per tensor), int4-block (linear int4, blocks of 32, iOS 18). Each mode's error is also estimated on
Linux by applying the same compression in PyTorch (coremltools.optimize.torch) to the export
wrappers and comparing their outputs on real inputs; the estimate goes into the manifest.

Traps recorded from coremltools 9.0: traced (jit) conversion with numpy >= 2.4 fails on dynamic
shapes, so everything converts from torch.export; coremltools warns it was tested up to torch 2.7
(this project uses 2.13: every package here converts); Core ML prediction needs macOS.
"""

import logging
from pathlib import Path

import torch

from hart.atomic import atomic_directory
from hart.components import HARTModel
from hart.errors import ConfigError
from hart.export.coreml_compress import COMPRESSIONS
from hart.export.coreml_convert import convert_packages, import_coremltools
from hart.export.coreml_errors import simulated_errors
from hart.export.manifest import build_coreml_manifest, write_manifest
from hart.export.parity import parity_prompts

log = logging.getLogger(__name__)


def parse_compressions(text: str) -> tuple[str, ...]:
    """The modes of a comma list such as "none,int8" (the CLI's --compress), in the order given."""
    chosen = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(set(chosen) - set(COMPRESSIONS))
    if unknown or not chosen:
        raise ConfigError(f"unknown compression(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(COMPRESSIONS)}")
    return chosen


def _package_bytes(folder: Path) -> dict[str, int]:
    """Bytes on disk of each package in `folder` (a package is a folder)."""
    return {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in sorted(folder.glob("*.mlpackage"))}


def export_coreml(model: HARTModel, out: str | Path, compressions: tuple[str, ...] = ("none",),
                  overwrite: bool = False) -> Path:
    """OUT/<compression>/: the packages of that mode + manifest.json (same format, with a coreml section)."""
    ct = import_coremltools()
    model = model.eval().to("cpu", torch.float32)
    prompts = parity_prompts(model.config, 2)
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for compression in compressions:
            folder = tmp / compression
            folder.mkdir()
            graphs = convert_packages(model, folder, compression)
            log.info("%s: packages converted", compression)
            coreml = {"package_bytes": _package_bytes(folder),
                      "simulated_relative_error": simulated_errors(model, compression, prompts),
                      "simulation": "coremltools.optimize.torch on the PyTorch wrappers + fp16 compute, recorded inputs"}
            write_manifest(folder, build_coreml_manifest(model, compression, graphs, coreml, ct.__version__))
    return out


__all__ = ["COMPRESSIONS", "export_coreml", "parse_compressions"]
