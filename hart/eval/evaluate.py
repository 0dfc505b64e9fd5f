"""`hart eval`: how well the embedded model follows held-out prompts, and HART's two ablations.

1. Prompt adherence: images for held-out prompts (their (color, shape) pair never occurs in
   training), read back by the scene classifier; per attribute, the share that matches the prompt.
   The classifier's own accuracy on clean renders of the same scenes is reported beside it.
2. Tokenizer reconstruction PSNR, discrete-only vs hybrid (HART: rFID 2.11 -> 0.30).
3. Fréchet distance in the classifier's feature space to real renders of the same prompts, with and
   without the residual head (HART: FID 7.85 -> 5.38), plus the distance between two sets of real
   renders as the floor.
Writes eval.json, eval.md and samples.png (real | with residual | discrete only).
"""

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from hart.atomic import atomic_file
from hart.errors import HartError
from hart.data.scenes import canonical_caption, image_array, make_scene
from hart.eval.classifier import ATTRIBUTES, SHIPPED, load_classifier, scene_labels
from hart.eval.metrics import frechet_distance
from hart.pipeline import HARTPipeline
from hart.portable.metrics import psnr
from hart.portable.spec import to_uint8

log = logging.getLogger(__name__)

TARGETS = {"color": 0.90, "shape": 0.85, "position": 0.85}
JUDGE_TARGET = 0.98


@dataclass(frozen=True)
class EvalSettings:
    num_prompts: int = 240
    seed: int = 0  # held-out scenes are make_scene(i, "heldout", seed); image i is generated with seed + i
    batch_size: int = 16
    cfg: float | None = None
    top_k: int | None = None
    temperature: float | None = None
    residual_guidance: float | None = None


def _accuracy(predicted: dict[str, list[str]], truth: list[dict[str, int]]) -> dict[str, float]:
    return {name: float(np.mean([p == ATTRIBUTES[name][t[name]] for p, t in zip(predicted[name], truth)]))
            for name in ATTRIBUTES}


def _batched(judge, images: torch.Tensor, batch: int):
    predictions: dict[str, list[str]] = {name: [] for name in ATTRIBUTES}
    features = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            for name, values in judge.predict(chunk).items():
                predictions[name] += values
            features.append(judge.features(chunk).cpu())
    return predictions, torch.cat(features).numpy()


def _renders(scenes, size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([image_array(s, size) for s in scenes]))


class _Images:
    """Images from the one loop on either backend, with the discrete-only decoding of the same tokens;
    the PyTorch model also gives the tokenizer's reconstructions (its encoder is not exported)."""

    def __init__(self, model: str, device: str, backend: str):
        if backend == "onnx":
            from hart.runtime.onnx_pipeline import OnnxPipeline

            self.loop, self.pipe, self.device = OnnxPipeline(model), None, torch.device("cpu")
        else:
            self.pipe = HARTPipeline.from_pretrained(model, device=device)
            self.loop, self.device = self.pipe.loop, self.pipe.device
        self.config = self.loop.config

    def __call__(self, prompts, seed, settings) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            result = self.loop.generate(prompts, seed=seed, cfg=settings.cfg, top_k=settings.top_k,
                                        temperature=settings.temperature, residual_guidance=settings.residual_guidance,
                                        discrete_too=True, show_progress=False)  # evaluate's bar is the one shown
        return torch.as_tensor(result.images), torch.as_tensor(result.discrete_images)

    def reconstructions(self, real: torch.Tensor, batch: int, show_progress: bool) -> dict[str, torch.Tensor] | None:
        """Discrete-only and hybrid decodings of the real renders, `batch` at a time so that a large model's
        tokenizer neither holds every image at once nor runs minutes without a sign of progress."""
        if self.pipe is None:
            return None
        tokenizer = self.pipe.model.tokenizer
        decoded: dict[str, list[torch.Tensor]] = {"discrete": [], "hybrid": []}
        with torch.no_grad(), tqdm(total=len(real), desc="eval: tokenizer ablation", unit="image",
                                   disable=not show_progress, leave=False) as bar:
            for start in range(0, len(real), batch):
                chunk = real[start:start + batch]
                tokens = tokenizer.encode(chunk.to(self.device, self.pipe.dtype))
                for mode, parts in decoded.items():
                    parts.append(tokenizer.decode(tokens, discrete_only=(mode == "discrete")).float().cpu())
                bar.update(len(chunk))
        return {mode: torch.cat(parts) for mode, parts in decoded.items()}


def evaluate(model: str, out: str | Path, settings: EvalSettings = EvalSettings(), device: str = "auto",
             classifier: str | Path = SHIPPED, progress: bool = True, backend: str = "torch",
             show_progress: bool = False) -> dict:
    """Evaluate a model (torch backend: preset or folder) or an ONNX export folder (onnx backend); writes to `out`.

    progress: log each generated batch at INFO (for logs that outlive a terminal). show_progress: tqdm
    bars on stderr over the long phases (generation, the tokenizer ablation), as a run takes minutes
    and, on a loaded machine, far longer; the per-batch generation bars stay off so bars never nest."""
    started = time.perf_counter()
    images_for = _Images(model, device, backend)
    judge = load_classifier(classifier).to(images_for.device)
    size = images_for.config.image_size
    if judge.image_size != size:
        raise HartError(f"the scene classifier reads {judge.image_size} px images; {model} makes {size} px ones "
                        "(train a classifier for it with `hart train classifier --preset ...`)")
    scenes = [make_scene(i, "heldout", settings.seed) for i in range(settings.num_prompts)]
    prompts = [canonical_caption(s) for s in scenes]
    truth = [scene_labels(s) for s in scenes]
    real = _renders(scenes, size)
    floor_real = _renders([make_scene(i, "heldout", settings.seed + 1) for i in range(settings.num_prompts)], size)

    hybrid, discrete = [], []
    with tqdm(total=len(prompts), desc="eval: generating (with and without residual head)", unit="image",
              disable=not show_progress, leave=False) as bar:
        for start in range(0, len(prompts), settings.batch_size):
            batch = prompts[start:start + settings.batch_size]
            images, discrete_images = images_for(batch, settings.seed + start, settings)
            hybrid.append(images)
            discrete.append(discrete_images)
            bar.update(len(batch))
            if progress:
                log.info("generated %d / %d", start + len(batch), len(prompts))
    hybrid, discrete = torch.cat(hybrid), torch.cat(discrete)

    judged = {name: _batched(judge, images.to(images_for.device), settings.batch_size)
              for name, images in (("real", real), ("hybrid", hybrid), ("discrete", discrete), ("floor", floor_real))}
    reconstructed = images_for.reconstructions(real, settings.batch_size, show_progress)
    sampling = images_for.loop.settings(cfg=settings.cfg, top_k=settings.top_k,
                                        residual_guidance=settings.residual_guidance)
    results = {
        "model": model, "backend": backend, "config": images_for.config.name, "settings": asdict(settings),
        "sampling": {"cfg": sampling.cfg, "top_k": list(sampling.top_k),
                     "residual_guidance": sampling.residual_guidance},
        "judge_accuracy_on_clean_renders": _accuracy(judged["real"][0], truth),
        "adherence": _accuracy(judged["hybrid"][0], truth),
        "adherence_discrete_only": _accuracy(judged["discrete"][0], truth),
        "tokenizer_psnr_db": None if reconstructed is None else {
            mode: float(psnr(images, real).mean()) for mode, images in reconstructed.items()},
        "frechet_distance": {
            "with_residual_head": frechet_distance(judged["hybrid"][1], judged["real"][1]),
            "without_residual_head": frechet_distance(judged["discrete"][1], judged["real"][1]),
            "real_vs_real_floor": frechet_distance(judged["floor"][1], judged["real"][1]),
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "device": str(images_for.device), "torch_threads": torch.get_num_threads()},
        "wall_seconds": time.perf_counter() - started,
    }
    results["targets_met"] = _targets_met(results)
    _write(Path(out), results, real, hybrid, discrete, prompts)
    return results


def _targets_met(results: dict) -> dict[str, bool]:
    met = {f"adherence_{k}": results["adherence"][k] >= v for k, v in TARGETS.items()}
    met["judge_accuracy"] = min(results["judge_accuracy_on_clean_renders"].values()) >= JUDGE_TARGET
    psnrs = results["tokenizer_psnr_db"]
    if psnrs is not None:
        met["hybrid_psnr_2db_above_discrete"] = psnrs["hybrid"] >= psnrs["discrete"] + 2
    fd = results["frechet_distance"]
    met["residual_head_lowers_frechet"] = fd["with_residual_head"] < fd["without_residual_head"]
    return met


def _markdown(results: dict) -> str:
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    adherence, discrete, judge = results["adherence"], results["adherence_discrete_only"], \
        results["judge_accuracy_on_clean_renders"]
    lines = [
        f"# Evaluation of `{results['model']}` ({results['config']}, {results['backend']} backend)", "",
        f"{results['settings']['num_prompts']} held-out prompts (every (color, shape) pair unseen in training), "
        f"sampling cfg {results['sampling']['cfg']}, top-k {results['sampling']['top_k']}, "
        f"residual guidance {results['sampling']['residual_guidance']}; "
        f"{results['wall_seconds']:.0f} s on {results['machine']['device']}.", "",
        "## Prompt adherence (scene classifier)", "",
        "| attribute | with residual head | discrete only | target | judge on clean renders |",
        "|---|---|---|---|---|",
    ]
    for name in ATTRIBUTES:
        target = f"≥ {pct(TARGETS[name])}" if name in TARGETS else "—"
        lines.append(f"| {name} | {pct(adherence[name])} | {pct(discrete[name])} | {target} | {pct(judge[name])} |")
    psnrs, fd = results["tokenizer_psnr_db"] or {"discrete": float("nan"), "hybrid": float("nan")}, \
        results["frechet_distance"]
    lines += [
        "", "## HART's ablations", "",
        "| | discrete only | hybrid / with residual head | HART (MJHQ-30K) |", "|---|---|---|---|",
        f"| tokenizer reconstruction PSNR (dB, higher is better) | {psnrs['discrete']:.2f} | {psnrs['hybrid']:.2f} "
        "| rFID 2.11 → 0.30 |",
        f"| Fréchet distance to real renders (classifier features, lower is better) | "
        f"{fd['without_residual_head']:.3f} | {fd['with_residual_head']:.3f} | FID 7.85 → 5.38 |",
        "", f"Fréchet distance between two sets of real renders (the floor): {fd['real_vs_real_floor']:.3f}.", "",
        "## Targets", "", "| target | met |", "|---|---|",
    ]
    lines += [f"| {name} | {'yes' if ok else 'no'} |" for name, ok in results["targets_met"].items()]
    return "\n".join(lines) + "\n"


def _write(out: Path, results: dict, real, hybrid, discrete, prompts) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "eval.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_file(out / "eval.md") as tmp:
        tmp.write_text(_markdown(results))
    rows = min(8, len(prompts))
    size = real.shape[-1]
    grid = Image.new("RGB", (3 * size, rows * size), "white")
    for row in range(rows):
        for column, images in enumerate((real, hybrid, discrete)):
            grid.paste(Image.fromarray(to_uint8(images[row:row + 1])[0]), (column * size, row * size))
    with atomic_file(out / "samples.png") as tmp:
        grid.save(tmp, format="PNG")
