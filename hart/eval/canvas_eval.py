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
Outpainting (OUTPAINTS: 2x wide from the left, 4x wide from the centre, 2x tall from the top): each
prompt's trained-size image (its 1x canvas) extended with the same prompt and seed. Measured:
    pixels kept  the image's pixels in the output, after 8-bit rounding, equal the input's
    continued    the judge's background verdict on every window-sized crop of the extension (the plan's
                 windows not inside the image) equals its verdict on the image itself
    seam         as above, across the borders where the image's cells meet drawn ones and drawn windows meet
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
from hart.canvas import OVERLAP, THRESHOLD, draw, outpaint
from hart.data.scenes import BACKGROUNDS
from hart.eval.classifier import load_classifier
from hart.portable.canvas import anchor_offset
from hart.portable.spec import to_uint8

TARGETS = {"background_kept": 0.95, "seam": 1.2}
OUTPAINTS = ((2, 1, "left"), (4, 1, "center"), (1, 2, "top"))  # (width, height) in trained sizes, anchor
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

        bar = tqdm(total=len(cases) * (len(settings.widths) + len(OUTPAINTS)), desc="eval: canvases", unit="canvas",
                   leave=False)
    rows, samples, bases = [], {}, {}
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
            verdicts = _backgrounds(judge, image, result.plan, size)
            if multiple == 1:
                bases[index] = image
            rows.append({"width": multiple, "prompt": prompt, "windows": len(result.plan.windows),
                         "background_kept": float(np.mean([v == background for v in verdicts])),
                         "seam": seam_score(image, result.owners, result.plan.cell) if multiple > 1 else None,
                         "seconds": seconds, "memory_mib": max(0, peak - image.nbytes) / 2**20})
            if index == 0:
                samples[f"{multiple}x"] = image
            if bar is not None:
                bar.update(1)
    extended, pictures = _outpaints(loop, judge, cases, bases, settings, size, bar)
    if bar is not None:
        bar.close()
    results = _summary(rows, settings, size)
    results["outpaint"] = _outpaint_summary(extended)
    results["wall_seconds"] = time.perf_counter() - started
    _write(Path(out), results, {**samples, **pictures}, size)
    return results


def _backgrounds(judge, image: np.ndarray, plan, size: int, skip: list[bool] | None = None) -> list[str]:
    """The judge's background verdict on each window-sized crop of image [3, H, W] at the plan's windows
    (but those `skip` marks)."""
    cell = plan.cell
    crops = np.stack([image[:, w.y * cell:w.y * cell + size, w.x * cell:w.x * cell + size]
                      for i, w in enumerate(plan.windows) if skip is None or not skip[i]])
    with torch.no_grad():
        return list(judge.predict(torch.from_numpy(np.ascontiguousarray(crops)))["background"])


def _outpaints(loop, judge, cases: list[tuple[str, str]], bases: dict[int, np.ndarray],
               settings: CanvasEvalSettings, size: int, bar=None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Each prompt's 1x image (drawn now if the widths left it out) extended as OUTPAINTS says, with its seed
    and prompt; -> rows and the first prompt's pictures."""
    rows, pictures = [], {}
    for width, height, anchor in OUTPAINTS:
        canvas_size = (width * size, height * size)
        for index, (prompt, _) in enumerate(cases):
            seed = settings.seed + index
            if index not in bases:
                bases[index] = draw(loop, [prompt], (size, size), seed=seed).images[0]
            pixels = to_uint8(bases[index][None])[0]  # [S, S, 3] uint8: what a user would give
            result = outpaint(loop, pixels.astype(np.float32) / np.float32(255), [prompt], canvas_size, anchor,
                              seed=seed, overlap=settings.overlap, threshold=settings.threshold)
            x, y = anchor_offset(anchor, (size, size), canvas_size)
            n = result.plan.window
            inside = [bool((result.owners[w.y:w.y + n, w.x:w.x + n] == -1).all()) for w in result.plan.windows]
            with torch.no_grad():
                own = judge.predict(torch.from_numpy(bases[index][None]))["background"][0]
            verdicts = _backgrounds(judge, result.images[0], result.plan, size, inside)
            rows.append({"size": f"{canvas_size[0]}x{canvas_size[1]}", "anchor": anchor, "prompt": prompt,
                         "pixels_kept": bool(np.array_equal(to_uint8(result.images)[0][y:y + size, x:x + size],
                                                            pixels)),
                         "continued": float(np.mean([v == own for v in verdicts])), "judged_background": own,
                         "seam": seam_score(result.images[0], result.owners, result.plan.cell)})
            if index == 0:
                pictures[f"outpaint {rows[-1]['size']} {anchor}"] = result.images[0]
            if bar is not None:
                bar.update(1)
    return rows, pictures


def _outpaint_summary(rows: list[dict]) -> dict:
    per_case: dict[str, list[dict]] = {}
    for row in rows:
        per_case.setdefault(f"{row['size']} {row['anchor']}", []).append(row)
    cases = {key: {"pixels_kept": float(np.mean([r["pixels_kept"] for r in mine])),
                   "continued": float(np.mean([r["continued"] for r in mine])),
                   "seam": float(np.mean([r["seam"] for r in mine]))} for key, mine in per_case.items()}
    metrics = {name: float(np.mean([r[name] for r in rows])) for name in ("pixels_kept", "continued", "seam")}
    met = {"pixels_kept": metrics["pixels_kept"] == 1.0,
           "continued": metrics["continued"] >= TARGETS["background_kept"], "seam": metrics["seam"] <= TARGETS["seam"]}
    return {"metrics": metrics, "met": met, "per_case": cases, "outpaints": rows}


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
              + (f"{m['seam']:.2f} (target ≤ 1.2, {'met' if results['met']['seam'] else 'missed'})"
                 if m["seam"] is not None else "not measured (1x only)") + "; time grows "
              + (f"{slope:.2f} s per trained-size area." if slope is not None else "(one width only).")]
    o = results["outpaint"]
    lines += ["", "## Outpainting each prompt's 1x image (same prompt and seed)", "",
              "| canvas, anchor | image pixels kept | extension continues the background | seam |", "|---|---|---|---|"]
    for case, row in o["per_case"].items():
        lines.append(f"| {case} | {100 * row['pixels_kept']:.0f} % | {100 * row['continued']:.1f} % | "
                     f"{row['seam']:.2f} |")
    om = o["metrics"]
    lines += ["", f"Over all outpaintings: pixels kept in {100 * om['pixels_kept']:.0f} %, the extension's windows "
              f"judged to continue the image's background {100 * om['continued']:.1f} % (target ≥ 95 %, "
              f"{'met' if o['met']['continued'] else 'missed'}), seam {om['seam']:.2f} (target ≤ 1.2, "
              f"{'met' if o['met']['seam'] else 'missed'})."]
    return "\n".join(lines) + "\n"


def _write(out: Path, results: dict, samples: dict[str, np.ndarray], size: int) -> None:
    """canvas.json, canvas.md and canvas_samples.png (one labelled row per picture, the first prompt's)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "canvas.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_file(out / "canvas.md") as tmp:
        tmp.write_text(markdown(results))
    label = 12
    widest = max(image.shape[2] for image in samples.values())
    grid = Image.new("RGB", (widest, sum(image.shape[1] + label for image in samples.values())), "white")
    pen, top = ImageDraw.Draw(grid), 0
    for name, image in samples.items():
        pen.text((2, top), f"{name}: {results['canvases'][0]['prompt']}", fill="black")
        grid.paste(Image.fromarray(to_uint8(image[None])[0]), (0, top + label))
        top += image.shape[1] + label
    with atomic_file(out / "canvas_samples.png") as tmp:
        grid.save(tmp, format="PNG")
