"""`hart export onnx`: graphs, precisions, parity checks and the manifest, written atomically.

OUT/<precision>/ holds every graph of that precision plus manifest.json, so each folder can be
handed to a runtime alone. Graphs a precision does not change are hard-linked from fp32.
"""

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import hart
from hart.atomic import atomic_directory
from hart.components import HARTModel
from hart.errors import ConfigError
from hart.export import onnx_quantize
from hart.export.capture import capture_graphs
from hart.export.graphs import GraphSpec, graph_specs
from hart.export.manifest import build_manifest, graph_io, write_manifest
from hart.export.qwen2_onnx import FOLDER as QWEN_FOLDER
from hart.export.quiet import quiet_libraries

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "qdq", "int4")
# graphs each precision rewrites (None: every graph; the rest are the fp32 graphs). int8 rewrites every
# graph so that each weight has one value everywhere: the int8 export is the model on rounded weights.
QUANTIZED = {"fp16": None, "int8": None, "qdq": ("step", "residual"), "int4": None}
INT4_GRAPHS = ("step", "residual")  # 4-bit weights here; int4's other graphs take weight-only int8
QWEN_GRAPH, QWEN_TOKENIZER = f"{QWEN_FOLDER}/model.onnx", f"{QWEN_FOLDER}/tokenizer.json"


def parse_precisions(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PRECISIONS))
    if unknown or not chosen:
        raise ConfigError(f"unknown precision(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PRECISIONS)}")
    return chosen


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _graph_files(folder: Path, name: str) -> list[Path]:
    return [p for p in (folder / f"{name}.onnx", folder / f"{name}.onnx.data") if p.exists()]


def _qwen2_precision(precision: str, fp32: Path, target: Path) -> None:
    """The Qwen2 text encoder: fp16 for fp16 exports, dynamic int8 for the quantized ones."""
    source, destination = fp32 / QWEN_GRAPH, target / QWEN_GRAPH
    destination.parent.mkdir()
    _link_or_copy(fp32 / QWEN_TOKENIZER, target / QWEN_TOKENIZER)
    if precision == "fp16":
        onnx_quantize.convert_fp16(source, destination)
    else:
        onnx_quantize.quantize_int8(source, destination)


def build_precision(precision: str, fp32: Path, target: Path, specs: list[GraphSpec],
                    calibration: dict[str, list[dict[str, np.ndarray]]], int4_block: int, int4_algorithm: str) -> None:
    target.mkdir()
    if (fp32 / QWEN_GRAPH).is_file():
        _qwen2_precision(precision, fp32, target)
    rewrite = QUANTIZED[precision]
    for spec in specs:
        source, destination = fp32 / f"{spec.name}.onnx", target / f"{spec.name}.onnx"
        if rewrite is not None and spec.name not in rewrite:
            for file in _graph_files(fp32, spec.name):
                _link_or_copy(file, target / file.name)
        elif precision == "fp16":
            onnx_quantize.convert_fp16(source, destination)
        elif precision == "int8" or (precision == "int4" and spec.name not in INT4_GRAPHS):
            onnx_quantize.quantize_int8(source, destination)
        elif precision == "int4":
            onnx_quantize.quantize_int4(source, destination, int4_block, int4_algorithm)
        else:
            onnx_quantize.quantize_qdq(source, destination, calibration[spec.name])


def export_onnx(model: HARTModel, out: str | Path, precisions: tuple[str, ...] = ("fp32",), int4_block: int = 32,
                int4_algorithm: str = "rtn", parity_seeds: int = 20, overwrite: bool = False,
                text_encoder_dir: str | Path | None = None, show_progress: bool = False,
                capture_processes: int = 1) -> Path:
    """Export `model` (CPU, float32) to OUT/<precision>/ for every requested precision.

    `capture_processes` > 1 captures the graphs in that many processes (see hart.export.capture; the
    CLI passes `auto_processes(model)`). Every precision's parity is measured against PyTorch and must meet `parity.THRESHOLDS`; if one
    misses, nothing is written and `ParityError` names each missed number. Models with the Qwen2 text
    encoder export it too when `text_encoder_dir` (the local Qwen2 folder) is given (see
    hart.export.qwen2_onnx); without it their export has no text graph."""
    from hart.export.parity import ParityError, calibration_feeds, measure_parity, parity_prompts, reference_run

    if int4_algorithm not in onnx_quantize.INT4_ALGORITHMS or int4_block not in (32, 64, 128, 256):
        raise ConfigError(f"int4 needs --int4-algorithm in {onnx_quantize.INT4_ALGORITHMS} and a block of "
                          f"32, 64, 128 or 256 (got {int4_algorithm!r}, {int4_block})")
    model = model.eval().to("cpu", torch.float32)
    specs = graph_specs(model)
    prompts = parity_prompts(model.config, max(parity_seeds, 1))
    out = Path(out)
    steps = len(specs) + 1 + sum(1 if p == "fp32" else 2 for p in precisions)  # graphs, reference, precisions
    with (atomic_directory(out, overwrite=overwrite) as tmp, quiet_libraries(),
          tqdm(total=steps, desc="export", unit="step", disable=not show_progress, leave=False) as bar):
        fp32 = tmp / "fp32"
        fp32.mkdir()
        started = time.perf_counter()

        def captured(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update()
            log.info("exported %s", name)

        capture_graphs(model, specs, fp32, captured, capture_processes)
        text = None
        if model.config.text.kind == "qwen2" and text_encoder_dir is not None:
            from hart.export.qwen2_onnx import export_qwen2_text_encoder

            text = export_qwen2_text_encoder(text_encoder_dir, fp32, model.config.text)
            log.info("exported the Qwen2 text encoder")

        def manifest(folder: Path, precision: str, parity=None, options=None) -> dict:
            built = build_manifest(model, folder, precision, specs, parity, options)
            if text is not None:
                built["text"] = {**built["text"], **text}
                built["graphs"] = {"text_encoder": {"file": QWEN_GRAPH, "description": "Qwen2 (optimum export)",
                                                    **graph_io(folder / QWEN_GRAPH)}, **built["graphs"]}
            return built

        write_manifest(fp32, manifest(fp32, "fp32"))
        log.info("fp32 graphs in %.1f s", time.perf_counter() - started)
        bar.set_postfix_str("PyTorch reference")
        reference = reference_run(model, prompts, parity_seeds)
        bar.update()
        calibration = calibration_feeds(fp32, prompts[:8]) if "qdq" in precisions else {}
        for precision in precisions:
            if precision != "fp32":
                bar.set_postfix_str(f"{precision} graphs")
                build_precision(precision, fp32, tmp / precision, specs, calibration, int4_block, int4_algorithm)
                write_manifest(tmp / precision, manifest(tmp / precision, precision))
                bar.update()
            options = {"int4_block": int4_block, "int4_algorithm": int4_algorithm} if precision == "int4" else {}
            bar.set_postfix_str(f"{precision} parity")
            parity = measure_parity(model, tmp / precision, specs, prompts, parity_seeds, reference)
            bar.update()
            log.info("%s: %s", precision, parity["summary"])
            if not parity["met"] and model.random_weights:  # timing runs: near-uniform logits tie everywhere
                log.warning("%s missed its parity thresholds (%s); recorded, not enforced: the model has random "
                            "weights", precision, "; ".join(parity["missed"]))
            elif not parity["met"]:
                raise ParityError(f"the {precision} export missed its parity thresholds ({'; '.join(parity['missed'])}), "
                                  f"so nothing was written to {out}")
            write_manifest(tmp / precision, manifest(tmp / precision, precision, parity, options))
        if "fp32" not in precisions:
            shutil.rmtree(fp32)
    log.info("export written to %s (hart %s)", out, hart.__version__)
    return out
