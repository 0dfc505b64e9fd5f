"""`hart eval --task fast`: what each opt-in approximation (hart.approximations) costs and saves.

Every variant draws the same held-out prompts with the same seeds as the exact loop, on the embedded
model (or any model the scene classifier reads). Measured per variant:
    adherence   the scene classifier's color / shape / position accuracy, and their mean (the
                "adherence points" a variant may lose: FAST_BUDGET)
    frechet     Fréchet distance to real renders of the same prompts, in the classifier's features
    psnr        PSNR of each image against the exact loop's image of the same prompt and seed (dB,
                mean; identical images count as hart.portable.metrics' cap)
    seconds     per image on the evaluated model (the batches' total) and, with a latency model (e.g.
                the 0.7B preset, random weights), the median seconds of one image over `runs` rounds,
                the variants interleaved round by round so a noisy machine slows them alike
The variants within FAST_BUDGET points of the exact mean adherence are marked; `--fast` is the
fastest combination of them (hart.approximations.FAST, chosen from this report).
Writes fast.json, fast.md, fast_samples.png (a prompt per row, a variant per column) and fast.png
(adherence against the latency model's speed-up).
"""

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from hart.approximations import EXACT, VARIANTS, Approximations
from hart.atomic import atomic_file
from hart.data.scenes import canonical_caption, make_scene
from hart.eval.classifier import SHIPPED, load_classifier, scene_truth
from hart.eval.evaluate import _accuracy, _batched, _renders
from hart.eval.metrics import frechet_distance
from hart.portable.metrics import psnr
from hart.portable.spec import to_uint8

log = logging.getLogger(__name__)
FAST_BUDGET = 0.02  # mean adherence a variant may lose and still be offered by --fast (2 points)
LATENCY_PROMPT = "a large red circle in the center on a gray background"


@dataclass(frozen=True)
class FastEvalSettings:
    num_prompts: int = 240
    seed: int = 0  # as hart eval: held-out scene i, generated with seed + i
    batch_size: int = 16
    latency_model: str | None = None  # a preset or folder timed image by image (None: no latency rows)
    runs: int = 3  # rounds of the latency model, every variant once per round


def evaluate_fast(loop, out: str | Path, settings: FastEvalSettings = FastEvalSettings(), classifier=None,
                  variants: tuple[Approximations, ...] = VARIANTS, latency_loop=None,
                  show_progress: bool = False) -> dict:
    """Evaluate `variants` (the first must be exact) on `loop`; time them on `latency_loop` when given."""
    if variants[0] != EXACT:
        raise ValueError("the first variant must be the exact loop: the others are compared with it")
    started = time.perf_counter()
    judge = load_classifier(classifier or SHIPPED)
    scenes = [make_scene(i, "heldout", settings.seed) for i in range(settings.num_prompts)]
    prompts, truth = [canonical_caption(s) for s in scenes], [scene_truth(s) for s in scenes]
    real = _renders(scenes, loop.config.image_size)
    real_features = _batched(judge, real, settings.batch_size)[1]
    rows, images = [], {}
    bar = tqdm(total=len(variants) * len(prompts), desc="eval: approximations", unit="image",
               disable=not show_progress, leave=False)
    loop.generate(prompts[:settings.batch_size], seed=settings.seed)  # warm-up: the first variant's time is true
    for variant in variants:
        began, parts = time.perf_counter(), []
        for start in range(0, len(prompts), settings.batch_size):
            batch = prompts[start:start + settings.batch_size]
            parts.append(np.asarray(loop.generate(batch, seed=settings.seed + start, approximate=variant).images))
            bar.update(len(batch))
        seconds = (time.perf_counter() - began) / len(prompts)
        images[variant.name] = drawn = torch.from_numpy(np.concatenate(parts))
        predicted, features, _ = _batched(judge, drawn, settings.batch_size)
        adherence = _accuracy(predicted, truth)
        rows.append({"variant": variant.name, "describe": variant.describe(), "settings": asdict(variant),
                     "adherence": adherence, "adherence_mean": float(np.mean(list(adherence.values()))),
                     "frechet": frechet_distance(features, real_features),
                     "psnr_vs_exact_db": float(psnr(drawn, images[EXACT.name]).mean()),
                     "seconds_per_image": seconds})
        log.info("%s: adherence %.3f", variant.name, rows[-1]["adherence_mean"])
    bar.close()
    if latency_loop is not None:
        _latency(latency_loop, variants, rows, settings.runs, show_progress)
    exact = rows[0]["adherence_mean"]
    for row in rows:
        row["within_budget"] = exact - row["adherence_mean"] <= FAST_BUDGET
    results = {"model": loop.config.name, "latency_model": None if latency_loop is None else latency_loop.config.name,
               "settings": asdict(settings), "budget": FAST_BUDGET, "variants": rows,
               "wall_seconds": time.perf_counter() - started}
    _write(Path(out), results, images, prompts)
    return results


def _latency(loop, variants, rows: list[dict], runs: int, show_progress: bool) -> None:
    """Median seconds of one image per variant, interleaved round by round, after one warm-up each."""
    times = {v.name: [] for v in variants}
    with tqdm(total=(runs + 1) * len(variants), desc="eval: latency", unit="image", disable=not show_progress,
              leave=False) as bar:
        for round_ in range(runs + 1):
            for variant in variants:
                began = time.perf_counter()
                loop.generate([LATENCY_PROMPT], seed=0, approximate=variant)
                if round_:  # round 0 warms every variant up
                    times[variant.name].append(time.perf_counter() - began)
                bar.update()
    exact = float(np.median(times[EXACT.name]))
    for row in rows:
        row["latency_seconds"] = sorted(times[row["variant"]])
        row["latency_median"] = median = float(np.median(times[row["variant"]]))
        row["speedup_vs_exact"] = exact / median


def markdown(results: dict) -> str:
    timed = results["latency_model"] is not None
    lines = [f"# Approximations on `{results['model']}`", "",
             f"{results['settings']['num_prompts']} held-out prompts, the exact loop's seeds; a variant within "
             f"{100 * results['budget']:.0f} adherence points of exact is marked ✓ (what `--fast` may bundle). "
             f"PSNR is against the exact image of the same prompt and seed.", ""]
    head = "| variant | color | shape | position | mean | Fréchet | PSNR vs exact (dB) | s/image (this model) |"
    if timed:
        head += f" {results['latency_model']}: median s | speed-up |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for row in results["variants"]:
        a = row["adherence"]
        line = (f"| {row['describe']}{' ✓' if row['within_budget'] else ''} | {100 * a['color']:.1f} | "
                f"{100 * a['shape']:.1f} | {100 * a['position']:.1f} | {100 * row['adherence_mean']:.1f} | "
                f"{row['frechet']:.3f} | {row['psnr_vs_exact_db']:.1f} | {row['seconds_per_image']:.4f} |")
        if timed:
            line += f" {row['latency_median']:.2f} | {row['speedup_vs_exact']:.2f}x |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _write(out: Path, results: dict, images: dict[str, torch.Tensor], prompts: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "fast.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_file(out / "fast.md") as tmp:
        tmp.write_text(markdown(results))
    names, size, shown = list(images), next(iter(images.values())).shape[-1], min(6, len(prompts))
    label = 14
    grid = Image.new("RGB", (len(names) * size, label + shown * size), "white")
    pen = ImageDraw.Draw(grid)
    for column, name in enumerate(names):
        pen.text((column * size + 2, 1), name[:12], fill="black")
        for row, pixels in enumerate(to_uint8(images[name][:shown])):
            grid.paste(Image.fromarray(pixels), (column * size, label + row * size))
    with atomic_file(out / "fast_samples.png") as tmp:
        grid.save(tmp, format="PNG")
    _plot(out / "fast.png", results)


def _plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["variants"]
    timed = results["latency_model"] is not None
    x = [r["speedup_vs_exact"] if timed else rows[0]["seconds_per_image"] / r["seconds_per_image"] for r in rows]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter(x, [100 * r["adherence_mean"] for r in rows])
    for xi, row in zip(x, rows):
        axis.annotate(row["variant"], (xi, 100 * row["adherence_mean"]), fontsize=7)
    axis.axhline(100 * (rows[0]["adherence_mean"] - results["budget"]), linestyle="--", linewidth=1)
    axis.set_xlabel(f"speed-up vs exact ({results['latency_model'] if timed else results['model']})")
    axis.set_ylabel("mean adherence (%)")
    axis.set_title("approximations: adherence against speed")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
