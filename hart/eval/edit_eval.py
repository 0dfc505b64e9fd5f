"""`hart eval --task edit`: how well editing replaces, keeps and erases objects, judged like generation.

Scenes: two small objects far apart on a plain background, drawn with their own seed (not training
scenes). Per scene, object A's bounding box (plus 4 px) is masked and edited twice:
    replace  the prompt names A with another colour and shape, and B as it is
             (also measured with a prompt naming only the new object: the embedded model follows
             one-object prompts far better than two-object ones, see MODEL_CARD.md)
    erase    the prompt names B alone: A's region should become background
Judging reuses the one-object scene classifier by filling the other object's region with the
background first: the edited region must show the asked colour and shape; B must be judged as it is
in the input; an erased region must be background (fewer than 5 % of its pixels off by > 0.25).
Also: PSNR outside the mask before paste (how much the kept tokens reproduce), and a seam score (mean
absolute pixel step across the mask border, divided by the mean step between neighbours in the image).
"""

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from hart.atomic import atomic_file
from hart.data.scenes import (BACKGROUNDS, COLORS, POSITION_PHRASES, SHAPES, Scene, _position_pairs, _sample_object,
                              describe_object, image_array)
from hart.eval.classifier import load_classifier
from hart.portable import edit
from hart.portable.metrics import psnr
from hart.portable.spec import to_uint8

MARGIN = 4  # pixels around an object's bounding box in its mask
TARGETS = {"edited_color": 0.90, "edited_shape": 0.80, "untouched_kept": 0.95, "erased": 0.90,
           "outside_psnr_db": 30.0}


@dataclass(frozen=True)
class EditEvalSettings:
    num_scenes: int = 96
    seed: int = 0
    batch_size: int = 16
    threshold: float = 0.0
    fill: bool = True


def _scene(index: int, seed: int) -> Scene:
    rng = np.random.default_rng([seed, 4242, index])
    background = str(rng.choice(sorted(BACKGROUNDS)))
    pair = _position_pairs()[rng.integers(len(_position_pairs()))]
    a = _sample_object(rng, background, held_out=False, size="small", position=pair[0])
    b = _sample_object(rng, background, held_out=False, size="small", position=pair[1])
    return Scene(background, (a, b), "")


def _prompt(background: str, *objects) -> str:
    """The training grammar's first phrasing: 'a X at P and a Y at Q on a B background'."""
    parts = [f"a {describe_object(o)} {POSITION_PHRASES[o.position][0]}" for o in objects]
    return f"{' and '.join(parts)} on a {background} background"


def _pixels(scene: Scene) -> np.ndarray:
    return image_array(scene, 64).transpose(1, 2, 0)  # [S, S, 3]


def _object_mask(scene: Scene, index: int, size: int) -> np.ndarray:
    alone = _pixels(replace(scene, objects=(scene.objects[index],)))
    background = np.asarray(BACKGROUNDS[scene.background], np.float32) / 255
    pixels = np.abs(alone - background).max(axis=2) > 0.1
    ys, xs = np.nonzero(pixels)
    box = np.zeros_like(pixels)  # its bounding box plus MARGIN px: room for another shape than the one erased
    box[max(0, ys.min() - MARGIN):ys.max() + MARGIN + 1, max(0, xs.min() - MARGIN):xs.max() + MARGIN + 1] = True
    return box


def _fill(images: np.ndarray, masks: np.ndarray, background: list[str]) -> np.ndarray:
    """Each image with its mask's pixels set to its background colour (so the judge sees one object)."""
    out = images.copy()
    for image, mask, name in zip(out, masks, background):
        image[mask] = np.asarray(BACKGROUNDS[name], np.float32) / 255
    return out


def _seam(image: np.ndarray, mask: np.ndarray) -> float:
    steps_x, steps_y = np.abs(np.diff(image, axis=1)).mean(2), np.abs(np.diff(image, axis=0)).mean(2)
    border_x, border_y = mask[:, 1:] != mask[:, :-1], mask[1:] != mask[:-1]
    border = np.concatenate([steps_x[border_x], steps_y[border_y]])
    typical = np.concatenate([steps_x.ravel(), steps_y.ravel()]).mean()
    return float(border.mean() / max(typical, 1e-6)) if border.size else 0.0


def evaluate_edits(loop, out: str | Path, settings: EditEvalSettings = EditEvalSettings(),
                   classifier: str | Path | None = None, show_progress: bool = False) -> dict:
    """Run the replace and erase edits with `loop` (any backend's GenerationLoop); write edit.json, edit.md
    and edit_samples.png (columns: input, mask, replaced, replaced with a one-object prompt, erased)."""
    started = time.perf_counter()
    size = loop.config.image_size
    judge = load_classifier(classifier) if classifier else load_classifier()
    scenes = [_scene(i, settings.seed) for i in range(settings.num_scenes)]
    rng = np.random.default_rng([settings.seed, 4243])
    images = np.stack([_pixels(s) for s in scenes]).astype(np.float32)
    masks = np.stack([_object_mask(s, 0, size) for s in scenes])
    others = np.stack([_object_mask(s, 1, size) for s in scenes])
    asked, replace_prompts, alone_prompts, erase_prompts = [], [], [], []
    for s in scenes:
        a, b = s.objects
        color = str(rng.choice([c for c in COLORS if c not in (s.background, a.color, b.color)]))
        shape = str(rng.choice([x for x in SHAPES if x != a.shape]))
        asked.append((color, shape))
        replace_prompts.append(_prompt(s.background, replace(a, color=color, shape=shape), b))
        alone_prompts.append(_prompt(s.background, replace(a, color=color, shape=shape)))
        erase_prompts.append(_prompt(s.background, b))
    tasks = {"replaced": replace_prompts, "replaced_alone": alone_prompts, "erased": erase_prompts}
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in (*tasks, "raw")}
    batches = range(0, len(scenes), settings.batch_size)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * len(scenes), desc="eval: edits", unit="edit", leave=False)
    for start in batches:
        part = slice(start, start + settings.batch_size)
        seeds = list(range(start, min(start + settings.batch_size, len(scenes))))
        for name, prompts in tasks.items():
            result = loop.edit(images[part], masks[part], prompts[part], seed=seeds, threshold=settings.threshold,
                               fill=settings.fill, paste=False)
            raw = np.asarray(result.images, np.float32).transpose(0, 2, 3, 1)
            pasted = np.stack([edit.paste(r, i, edit.paste_weights(m)) for r, i, m in zip(raw, images[part],
                                                                                         masks[part])])
            outputs[name].append(pasted)
            if name == "replaced":
                outputs["raw"].append(raw)
            if bar is not None:
                bar.update(len(seeds))
    if bar is not None:
        bar.close()
    replaced, alone, erased, raw = (np.concatenate(outputs[k]) for k in ("replaced", "replaced_alone", "erased", "raw"))
    backgrounds = [s.background for s in scenes]

    def predict(batch: np.ndarray) -> dict[str, list[str]]:
        with torch.no_grad():
            return judge.predict(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))

    edited, edited_alone = predict(_fill(replaced, others, backgrounds)), predict(_fill(alone, others, backgrounds))
    kept_before, kept_after = predict(_fill(images, masks, backgrounds)), predict(_fill(replaced, masks, backgrounds))
    background_rgb = np.stack([np.asarray(BACKGROUNDS[b], np.float32) / 255 for b in backgrounds])
    off = [float((np.abs(e[m] - bg).max(axis=1) > 0.25).mean()) for e, m, bg in zip(erased, masks, background_rgb)]
    outside = [float(psnr(r[~m][None], i[~m][None])[0]) for r, i, m in zip(raw, images, masks)]
    metrics = {
        "edited_color": float(np.mean([p == c for p, (c, _) in zip(edited["color"], asked)])),
        "edited_shape": float(np.mean([p == s for p, (_, s) in zip(edited["shape"], asked)])),
        "edited_color_one_object_prompt": float(np.mean([p == c for p, (c, _) in zip(edited_alone["color"], asked)])),
        "edited_shape_one_object_prompt": float(np.mean([p == s for p, (_, s) in zip(edited_alone["shape"],
                                                                                       asked)])),
        "untouched_kept": float(np.mean([kept_before["color"][i] == kept_after["color"][i]
                                         and kept_before["shape"][i] == kept_after["shape"][i]
                                         for i in range(len(scenes))])),
        "erased": float(np.mean([share < 0.05 for share in off])),
        "outside_psnr_db": float(np.mean(outside)),
        "seam": float(np.mean([_seam(p, m) for p, m in zip(replaced, masks)])),
    }
    results = {"task": "edit", "settings": asdict(settings), "metrics": metrics, "targets": TARGETS,
               "met": {k: metrics[k] >= v for k, v in TARGETS.items()}, "scenes": len(scenes),
               "wall_seconds": time.perf_counter() - started,
               "examples": [{"replace": r, "replace_one_object": a, "erase": e}
                            for r, a, e in zip(replace_prompts[:8], alone_prompts[:8], erase_prompts[:8])]}
    _write(Path(out), results, images, masks, replaced, alone, erased)
    return results


def markdown(results: dict) -> str:
    m, t = results["metrics"], results["targets"]
    rows = [("edited region shows the asked colour", "edited_color", "%"),
            ("edited region shows the asked shape", "edited_shape", "%"),
            ("… asked colour, prompt naming only the new object", "edited_color_one_object_prompt", "%"),
            ("… asked shape, prompt naming only the new object", "edited_shape_one_object_prompt", "%"),
            ("untouched object judged as before", "untouched_kept", "%"),
            ("erased region is background", "erased", "%"),
            ("PSNR outside the mask, before paste", "outside_psnr_db", "dB"),
            ("seam score (border step / typical step)", "seam", "")]
    lines = [f"# Editing ({results['scenes']} two-object scenes, threshold {results['settings']['threshold']}, "
             f"fill {results['settings']['fill']})", "", "| measure | value | target | met |", "|---|---|---|---|"]
    for label, key, unit in rows:
        value = f"{100 * m[key]:.1f} %" if unit == "%" else f"{m[key]:.1f} dB" if unit == "dB" else f"{m[key]:.2f}"
        target = "" if key not in t else (f"≥ {100 * t[key]:.0f} %" if unit == "%" else f"≥ {t[key]:.0f} dB")
        met = "" if key not in t else ("yes" if results["met"][key] else "no")
        lines.append(f"| {label} | {value} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, results: dict, images, masks, replaced, alone, erased) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "edit.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_file(out / "edit.md") as tmp:
        tmp.write_text(markdown(results))
    rows, size, label = min(8, len(images)), images.shape[1], 12
    grid = Image.new("RGB", (5 * size, label + rows * size), "white")
    draw = ImageDraw.Draw(grid)
    mask_images = np.repeat(masks[..., None], 3, axis=3).astype(np.float32)
    columns = (("input", images), ("mask", mask_images), ("replaced", replaced), ("alone", alone),
               ("erased", erased))
    for column, (title, batch) in enumerate(columns):
        draw.text((column * size + 2, 0), title, fill="black")
        pixels = to_uint8(batch[:rows].transpose(0, 3, 1, 2))
        for row in range(rows):
            grid.paste(Image.fromarray(pixels[row]), (column * size, label + row * size))
    with atomic_file(out / "edit_samples.png") as tmp:
        grid.save(tmp, format="PNG")
