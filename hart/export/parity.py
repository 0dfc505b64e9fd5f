"""Parity of an export folder against the PyTorch model: tokens, images and every component.

    token_agreement                share of tokens (all scales) equal to PyTorch's, free-running, same seed
    teacher_forced_token_agreement the same with both sides fed PyTorch's ids at every scale, so one
                                   early difference does not change every later token
    image_psnr_db                  the free-running image against PyTorch's (min and mean over seeds)
    component_relative_error       per graph: ||onnx - torch|| / ||torch|| on the inputs the runtime saw
"""

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from hart.components import HARTModel
from hart.config import HARTConfig
from hart.data.scenes import make_scene
from hart.export.graphs import GraphSpec
from hart.pipeline import HARTPipeline
from hart.portable.metrics import psnr
from hart.runtime.onnx_pipeline import OnnxPipeline

FP32_THRESHOLDS = {"token_agreement": 0.999, "image_psnr_db_min": 40.0}


def parity_prompts(config: HARTConfig, count: int) -> list[str]:
    """Prompts the model can read: scene captions within its vocabulary, or plain phrases."""
    if config.text.kind != "words":
        return [f"a photo of object {i}" for i in range(count)]
    known = set(config.text.vocab)
    captions = [make_scene(i, "test").caption for i in range(20 * count)]
    usable = [c for c in captions if set(c.split()) <= known][:count]
    vocab = list(config.text.vocab)
    while len(usable) < count:  # a foreign vocabulary: strings of its own words
        start = len(usable) % len(vocab)
        usable.append(" ".join((vocab * 2)[start:start + min(6, config.text.max_tokens)]))
    return usable


class _Recorder:
    """Keeps (up to `keep` per graph) the inputs each graph of an ONNX runtime received."""

    def __init__(self, runtime: OnnxPipeline, keep: int):
        self.calls: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.keep = keep
        runtime.backend.on_run = self

    def __call__(self, name: str, feeds: dict[str, np.ndarray]) -> None:
        if len(self.calls[name]) < self.keep:
            self.calls[name].append({k: np.array(v) for k, v in feeds.items()})


def calibration_feeds(folder: Path, prompts: list[str]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Step and residual inputs at every scale, from fp32 ONNX runs (static quantization's calibration)."""
    runtime = OnnxPipeline(folder)
    recorder = _Recorder(runtime, keep=10_000)
    for seed, prompt in enumerate(prompts):
        runtime.generate([prompt], seed=seed)
    return dict(recorder.calls)


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want = want.astype(np.float64)
    return float(np.linalg.norm(got.astype(np.float64) - want) / max(np.linalg.norm(want), 1e-12))


def _to_torch(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(value))


def measure_parity(model: HARTModel, folder: Path, specs: list[GraphSpec], prompts: list[str], seeds: int) -> dict:
    reference = HARTPipeline(model, device="cpu", dtype="fp32")
    runtime = OnnxPipeline(folder)
    recorder = _Recorder(runtime, keep=len(model.config.patch_nums) + 2)
    equal = forced_equal = total = 0
    psnrs = []
    for seed in range(seeds):
        prompt = prompts[seed % len(prompts)]
        want = reference.generate([prompt], seed=seed)
        got = runtime.generate([prompt], seed=seed)
        forced = runtime.generate([prompt], seed=seed, forced_ids=[i.numpy() for i in want.ids])
        for w, g, f in zip(want.ids, got.ids, forced.ids):
            equal += int((w.numpy() == g).sum())
            forced_equal += int((w.numpy() == f).sum())
            total += w.numel()
        psnrs.append(float(psnr(got.images[None], want.images.numpy()[None])[0]))

    graphs = {spec.name: spec for spec in specs}
    errors = {}
    with torch.no_grad():
        for name, calls in recorder.calls.items():
            if name not in graphs:  # the Qwen2 text encoder: checked end to end only
                continue
            worst = 0.0
            for inputs in calls:
                outputs = runtime.sessions[name].run(None, inputs)
                expected = graphs[name].module(*(_to_torch(inputs[i]) for i in graphs[name].inputs))
                expected = expected if isinstance(expected, (tuple, list)) else (expected,)
                worst = max(worst, *(_relative_error(o, e.numpy()) for o, e in zip(outputs, expected)))
            errors[name] = worst
    result = {
        "reference": "PyTorch fp32 eager on CPU, same prompts and seeds",
        "seeds": seeds, "tokens_compared": total,
        "token_agreement": equal / total, "teacher_forced_token_agreement": forced_equal / total,
        "image_psnr_db": {"min": min(psnrs), "mean": float(np.mean(psnrs))},
        "component_relative_error": errors,
    }
    if runtime.manifest.precision == "fp32":
        result["thresholds"] = FP32_THRESHOLDS
        result["met"] = (result["token_agreement"] >= FP32_THRESHOLDS["token_agreement"]
                         and result["image_psnr_db"]["min"] >= FP32_THRESHOLDS["image_psnr_db_min"])
    result["summary"] = (f"tokens {100 * result['token_agreement']:.2f} % (teacher-forced "
                         f"{100 * result['teacher_forced_token_agreement']:.2f} %), image PSNR min "
                         f"{result['image_psnr_db']['min']:.1f} dB, worst component error {max(errors.values()):.2e}")
    return result
