"""`hart eval --task canvas`: panoramas window by window, judged per window, with their seams, time and memory.

Prompts: one object on each background colour the embedded model was trained on, e.g. "a red circle on
a blue background". Each is drawn at 1x, 2x, 4x and 8x the trained width (the trained height), seeds
0, 1, ... Measured:
    background   the scene classifier's background verdict on every window-sized crop of the panorama
                 (at the plan's window positions) equals the prompt's background
    seam         mean absolute step between neighbouring pixels across the borders where cells drawn by
                 different windows meet, divided by the mean step between all other neighbours (1.0 =
                 invisible seams); averaged over the panoramas wider than 1x
    time         seconds per panorama (median per width) and the slope of a least-squares line of time
                 against area (seconds per trained-size area)
    memory       peak memory traced by tracemalloc while drawing (numpy arrays: latents, tiles, blends),
                 less the output images themselves: what grows with the canvas beyond its pixels
"""

import json
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from hart.atomic import atomic_file
from hart.canvas import OVERLAP, THRESHOLD, draw
from hart.data.scenes import BACKGROUNDS
from hart.eval.classifier import load_classifier
from hart.portable.spec import to_uint8

TARGETS = {"background_kept": 0.95, "seam": 1.2}
OBJECTS = ("red circle", "white star", "green square", "yellow triangle", "blue diamond", "black cross")


@dataclass(frozen=True)
class CanvasEvalSettings:
    num_prompts: int = 6
    widths: tuple[int, ...] = (1, 2, 4, 8)  # multiples of the trained width
    seed: int = 0
    overlap: int = OVERLAP
    threshold: float = THRESHOLD


def prompts(count: int) -> list[tuple[str, str]]:
    """(prompt, background) pairs cycling through the backgrounds, an object of another colour on each."""
    backgrounds = sorted(BACKGROUNDS)
    out = []
    for i in range(count):
        background = backgrounds[i % len(backgrounds)]
        thing = next(o for k in range(len(OBJECTS)) for o in [OBJECTS[(i + k) % len(OBJECTS)]]
                     if not o.startswith(background))
        out.append((f"a {thing} on a {background} background", background))
    return out


def seam_score(image: np.ndarray, owners: np.ndarray, cell: int) -> float:
    """image [3, H, W], owners [H_c, W_c]: step across borders between windows' cells / step elsewhere."""
    owner = np.repeat(np.repeat(owners, cell, axis=0), cell, axis=1)  # [H, W]
    steps, borders = [], []
    for axis in (1, 2):  # vertical and horizontal neighbours
        step = np.abs(np.diff(image, axis=axis)).mean(axis=0)
        steps.append(step.ravel())
        borders.append((np.diff(owner, axis=axis - 1) != 0).ravel())
    step, border = np.concatenate(steps), np.concatenate(borders)
    if not border.any():
        return 1.0
    return float(step[border].mean() / max(step[~border].mean(), 1e-8))


def evaluate_canvas(loop, out: str | Path, settings: CanvasEvalSettings = CanvasEvalSettings(),
                    classifier: str | Path | None = None, show_progress: bool = False) -> dict:
    """Draw every prompt at every width with `loop` (any backend); write canvas.json, canvas.md and
    canvas_samples.png (one row per width, the first prompt)."""
    started = time.perf_counter()
    judge = load_classifier(classifier) if classifier else load_classifier()
    size = loop.config.image_size
    cases = prompts(settings.num_prompts)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases) * len(settings.widths), desc="eval: canvases", unit="canvas", leave=False)
    rows, samples = [], {}
    for multiple in settings.widths:
        for index, (prompt, background) in enumerate(cases):
            tracemalloc.start()
            began = time.perf_counter()
            result = draw(loop, [prompt], (multiple * size, size), seed=settings.seed + index,
                          overlap=settings.overlap, threshold=settings.threshold)
            seconds = time.perf_counter() - began
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            image = result.images[0]
            crops = np.stack([image[:, w.y * result.plan.cell:w.y * result.plan.cell + size,
                                    w.x * result.plan.cell:w.x * result.plan.cell + size] for w in result.plan.windows])
            with torch.no_grad():
                verdicts = judge.predict(torch.from_numpy(np.ascontiguousarray(crops)))["background"]
            rows.append({"width": multiple, "prompt": prompt, "windows": len(result.plan.windows),
                         "background_kept": float(np.mean([v == background for v in verdicts])),
                         "seam": seam_score(image, result.owners, result.plan.cell) if multiple > 1 else None,
                         "seconds": seconds, "memory_mib": max(0, peak - image.nbytes) / 2**20})
            if index == 0:
                samples[multiple] = image
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    results = _summary(rows, settings, size)
    results["wall_seconds"] = time.perf_counter() - started
    _write(Path(out), results, samples, size)
    return results


def _summary(rows: list[dict], settings: CanvasEvalSettings, size: int) -> dict:
    per_width = {}
    for multiple in settings.widths:
        mine = [r for r in rows if r["width"] == multiple]
        per_width[str(multiple)] = {
            "background_kept": float(np.mean([r["background_kept"] for r in mine])),
            "seam": None if multiple == 1 else float(np.mean([r["seam"] for r in mine])),
            "seconds_median": float(np.median([r["seconds"] for r in mine])),
            "memory_mib_max": float(max(r["memory_mib"] for r in mine)), "windows": mine[0]["windows"]}
    areas = np.array([r["width"] for r in rows], dtype=np.float64)  # in trained-size areas
    slope = float(np.polyfit(areas, [r["seconds"] for r in rows], 1)[0]) if len(set(areas)) > 1 else None
    wide = [r for r in rows if r["width"] > 1]
    metrics = {"background_kept": float(np.mean([r["background_kept"] for r in rows])),
               "seam": float(np.mean([r["seam"] for r in wide])) if wide else None,
               "seconds_per_trained_area": slope}
    met = {"background_kept": metrics["background_kept"] >= TARGETS["background_kept"],
           "seam": metrics["seam"] is not None and metrics["seam"] <= TARGETS["seam"]}
    return {"task": "canvas", "settings": asdict(settings), "trained_size": size, "metrics": metrics,
            "targets": TARGETS, "met": met, "per_width": per_width, "canvases": rows}


def markdown(results: dict) -> str:
    s, m = results["settings"], results["metrics"]
    size = results["trained_size"]
    lines = [f"# Canvases ({s['num_prompts']} prompts, overlap {s['overlap']} cells, threshold {s['threshold']})", "",
             "| width | windows | background kept | seam | time (median) | memory beyond the image |",
             "|---|---|---|---|---|---|"]
    for multiple, row in results["per_width"].items():
        seam = "" if row["seam"] is None else f"{row['seam']:.2f}"
        lines.append(f"| {int(multiple) * size}x{size} | {row['windows']} | {100 * row['background_kept']:.1f} % | "
                     f"{seam} | {row['seconds_median']:.2f} s | {row['memory_mib_max']:.1f} MiB |")
    slope = m["seconds_per_trained_area"]
    lines += ["", f"Background kept over all windows: {100 * m['background_kept']:.1f} % (target ≥ 95 %, "
              f"{'met' if results['met']['background_kept'] else 'missed'}); seam score "
              f"{m['seam']:.2f} (target ≤ 1.2, {'met' if results['met']['seam'] else 'missed'}); time grows "
              + (f"{slope:.2f} s per trained-size area." if slope is not None else "(one width only).")]
    return "\n".join(lines) + "\n"


def _write(out: Path, results: dict, samples: dict[int, np.ndarray], size: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "canvas.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_file(out / "canvas.md") as tmp:
        tmp.write_text(markdown(results))
    label, widest = 12, max(samples) * size
    grid = Image.new("RGB", (widest, len(samples) * (size + label)), "white")
    pen = ImageDraw.Draw(grid)
    for row, (multiple, image) in enumerate(sorted(samples.items())):
        top = row * (size + label)
        pen.text((2, top), f"{multiple}x: {results['canvases'][0]['prompt']}", fill="black")
        grid.paste(Image.fromarray(to_uint8(image[None])[0]), (0, top + label))
    with atomic_file(out / "canvas_samples.png") as tmp:
        grid.save(tmp, format="PNG")
