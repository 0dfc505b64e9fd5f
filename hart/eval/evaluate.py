"""`hart eval`: how well the embedded model follows held-out prompts, and HART's two ablations.

1. Prompt adherence: images for held-out prompts (one object whose (color, shape) pair never occurs in
   training, and two objects the first of which is such a pair), read back by the scene classifier:
   per attribute, the share that matches the prompt, and per whole prompt, the share for which every
   named attribute of every object, the object count and the background are all right (reported for
   one and two objects and per background color). The per-attribute numbers hide a swapped or missing
   object; the whole-prompt numbers do not. The classifier's own accuracy on clean renders of the same
   scenes is reported beside each.
2. Tokenizer reconstruction PSNR, discrete-only vs hybrid (HART: rFID 2.11 -> 0.30).
3. Fréchet distance in the classifier's feature space to real renders of the same prompts, with and
   without the residual head (HART: FID 7.85 -> 5.38), plus the distance between two sets of real
   renders as the floor.
Writes eval.json, eval.md and samples.png (labelled columns: prompt, real, with residual, discrete
only, the judge's reading of the image with residual).
"""

import json
import logging
import platform
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from hart.atomic import atomic_file
from hart.errors import HartError
from hart.data.scenes import BACKGROUNDS, canonical_caption, canonical_pair_caption, image_array, make_scene
from hart.eval.classifier import ATTRIBUTES, SHIPPED, SceneReading, load_classifier, scene_reading, scene_truth
from hart.eval.metrics import frechet_distance, ghost_share
from hart.pipeline import HARTPipeline
from hart.portable.metrics import psnr
from hart.portable.spec import to_uint8

log = logging.getLogger(__name__)

TARGETS = {"color": 0.95, "shape": 0.90, "position": 0.90}
WHOLE_PROMPT_TARGETS = {"one_object": 0.85, "two_objects": 0.55}
BACKGROUND_TARGET = 0.90  # every background color, read right in this share of its prompts
JUDGE_TARGET = 0.98


@dataclass(frozen=True)
class EvalSettings:
    num_prompts: int = 240
    num_pair_prompts: int = 240  # two-object prompts (0: none)
    seed: int = 0  # held-out scenes are make_scene(i, "heldout", seed); image i is generated with seed + i
    batch_size: int = 16
    cfg: float | None = None
    top_k: int | None = None
    temperature: float | None = None
    residual_guidance: float | None = None


def _accuracy(predicted: dict[str, list[str]], truth: list[dict[str, str]]) -> dict[str, float]:
    return {name: float(np.mean([p == t[name] for p, t in zip(predicted[name], truth)])) for name in ATTRIBUTES}


def _object_accuracy(read: list[SceneReading], truth: list[SceneReading]) -> dict[str, float]:
    """Per attribute over every named object: its position is read as occupied (position) and what is
    read there has its color / shape / size."""
    hits: dict[str, list[bool]] = {name: [] for name in ("color", "shape", "size", "position")}
    for reading, want in zip(read, truth):
        there = {obj[0]: obj for obj in reading.objects}
        for position, *attributes in want.objects:
            found = there.get(position)
            hits["position"].append(found is not None)
            for i, name in enumerate(("color", "shape", "size")):
                hits[name].append(found is not None and found[1 + i] == attributes[i])
    return {name: float(np.mean(values)) for name, values in hits.items()}


def _whole(read: list[SceneReading], truth: list[SceneReading]) -> list[bool]:
    """Every named attribute of every object, the object count and the background right."""
    return [r == t for r, t in zip(read, truth)]


def _one_pass(judge, images: torch.Tensor, truth: list[SceneReading], batch: int) -> dict[str, float]:
    """Whole-prompt and per-object accuracy of two-object images drawn in one pass (no composition)."""
    read = _batched(judge, images, batch)[2]
    return {"whole_prompt": float(np.mean(_whole(read, truth))), **_object_accuracy(read, truth)}


def _per_background(read: list[SceneReading], truth: list[SceneReading]) -> dict[str, dict]:
    rows = {}
    for background in BACKGROUNDS:
        pairs = [(r, t) for r, t in zip(read, truth) if t.background == background]
        rows[background] = {"prompts": len(pairs),
                            "background": float(np.mean([r.background == t.background for r, t in pairs])),
                            "whole_prompt": float(np.mean([r == t for r, t in pairs]))} if pairs else {"prompts": 0}
    return rows


def _batched(judge, images: torch.Tensor, batch: int):
    """-> the one-object predictions by attribute, the features [N, F], the whole readings."""
    predictions: dict[str, list[str]] = {name: [] for name in ATTRIBUTES}
    features, readings = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            for name, values in judge.predict(chunk).items():
                predictions[name] += values
            features.append(judge.features(chunk).cpu())
            readings += judge.read(chunk)
    return predictions, torch.cat(features).numpy(), readings


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

    def __call__(self, prompts, seed, settings, compose: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            result = self.loop.generate(prompts, seed=seed, cfg=settings.cfg, top_k=settings.top_k,
                                        temperature=settings.temperature, residual_guidance=settings.residual_guidance,
                                        discrete_too=True, show_progress=False,  # evaluate's bar is the one shown
                                        compose=compose)
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
    pair_scenes = [make_scene(i, "heldout_pairs", settings.seed) for i in range(settings.num_pair_prompts)]
    prompts = [canonical_caption(s) for s in scenes] + [canonical_pair_caption(s) for s in pair_scenes]
    count = len(scenes)  # images [:count] are the one-object prompts, [count:] the two-object ones
    truth = [scene_truth(s) for s in scenes]
    readings_truth = [scene_reading(s) for s in scenes + pair_scenes]
    real = _renders(scenes + pair_scenes, size)
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
    one_pass = None  # the two-object prompts drawn by the model alone, when the loop composes them
    if pair_scenes and images_for.loop.composes:
        one_pass = torch.cat([images_for(prompts[start:start + settings.batch_size], settings.seed + start, settings,
                                         compose=False)[0]
                              for start in range(count, len(prompts), settings.batch_size)])

    judged = {name: _batched(judge, images.to(images_for.device), settings.batch_size)
              for name, images in (("real", real), ("hybrid", hybrid), ("discrete", discrete), ("floor", floor_real))}
    one = {name: ({k: v[:count] for k, v in predicted.items()}, features[:count])
           for name, (predicted, features, _) in judged.items()}
    reconstructed = images_for.reconstructions(real[:count], settings.batch_size, show_progress)
    sampling = images_for.loop.settings(cfg=settings.cfg, top_k=settings.top_k,
                                        residual_guidance=settings.residual_guidance)
    whole = {name: _whole(judged[name][2], readings_truth) for name in ("real", "hybrid", "discrete")}
    results = {
        "model": model, "backend": backend, "config": images_for.config.name, "settings": asdict(settings),
        "sampling": {"cfg": sampling.cfg, "top_k": list(sampling.top_k),
                     "residual_guidance": sampling.residual_guidance},
        "judge_accuracy_on_clean_renders": _accuracy(one["real"][0], truth),
        "adherence": _accuracy(one["hybrid"][0], truth),
        "adherence_discrete_only": _accuracy(one["discrete"][0], truth),
        "whole_prompt": {name: {"one_object": float(np.mean(w[:count])),
                                "two_objects": float(np.mean(w[count:])) if pair_scenes else None}
                         for name, w in (("with_residual_head", whole["hybrid"]),
                                         ("discrete_only", whole["discrete"]), ("judge_on_clean_renders",
                                                                                whole["real"]))},
        "two_object_adherence": _object_accuracy(judged["hybrid"][2][count:], readings_truth[count:])
        if pair_scenes else None,
        "two_objects_one_pass": None if one_pass is None else _one_pass(judge, one_pass.to(images_for.device),
                                                                         readings_truth[count:], settings.batch_size),
        "per_background": _per_background(judged["hybrid"][2], readings_truth),
        "tokenizer_psnr_db": None if reconstructed is None else {
            mode: float(psnr(images, real[:count]).mean()) for mode, images in reconstructed.items()},
        "ghost_share": {"with_residual_head": ghost_share(hybrid[:count]), "discrete_only": ghost_share(discrete[:count]),
                        "real": ghost_share(real[:count]),
                        **({} if reconstructed is None else {f"tokenizer_{mode}": ghost_share(images)
                                                             for mode, images in reconstructed.items()})},
        "frechet_distance": {
            "with_residual_head": frechet_distance(one["hybrid"][1], one["real"][1]),
            "without_residual_head": frechet_distance(one["discrete"][1], one["real"][1]),
            "real_vs_real_floor": frechet_distance(one["floor"][1], one["real"][1]),
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "device": str(images_for.device), "torch_threads": torch.get_num_threads()},
        "wall_seconds": time.perf_counter() - started,
    }
    results["targets_met"] = _targets_met(results)
    readings = [r.describe() for r in judged["hybrid"][2]]
    _write(Path(out), results, (real, hybrid, discrete), prompts, readings, whole["hybrid"], count)
    return results


def _targets_met(results: dict) -> dict[str, bool]:
    met = {f"adherence_{k}": results["adherence"][k] >= v for k, v in TARGETS.items()}
    for name, target in WHOLE_PROMPT_TARGETS.items():
        if results["whole_prompt"]["with_residual_head"][name] is not None:
            met[f"whole_prompt_{name}"] = results["whole_prompt"]["with_residual_head"][name] >= target
    shown = [row for row in results["per_background"].values() if row["prompts"]]
    met["every_background"] = min(row["background"] for row in shown) >= BACKGROUND_TARGET
    met["judge_accuracy"] = min(results["judge_accuracy_on_clean_renders"].values()) >= JUDGE_TARGET
    met["judge_whole_prompt"] = min(v for v in results["whole_prompt"]["judge_on_clean_renders"].values()
                                    if v is not None) >= JUDGE_TARGET
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
        f"{results['settings']['num_prompts']} one-object and {results['settings']['num_pair_prompts']} two-object "
        "held-out prompts (each names a (color, shape) pair never seen in training), "
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
    whole = results["whole_prompt"]
    lines += ["", "## Whole prompts (every named attribute of every object, the object count, the background)", "",
              "| prompts | with residual head | discrete only | target | judge on clean renders |", "|---|---|---|---|---|"]
    for name, label in (("one_object", f"one object ({results['settings']['num_prompts']})"),
                        ("two_objects", f"two objects ({results['settings']['num_pair_prompts']})")):
        if whole["with_residual_head"][name] is not None:
            lines.append(f"| {label} | {pct(whole['with_residual_head'][name])} | {pct(whole['discrete_only'][name])} "
                         f"| ≥ {pct(WHOLE_PROMPT_TARGETS[name])} | {pct(whole['judge_on_clean_renders'][name])} |")
    if results["two_object_adherence"] is not None:
        two = results["two_object_adherence"]
        lines += ["", "Two-object prompts, per named object (with residual head): "
                  + ", ".join(f"{name} {pct(value)}" for name, value in two.items()) + "."]
    if results.get("two_objects_one_pass") is not None:
        alone = results["two_objects_one_pass"]
        lines += ["", "The loop draws each object of a two-object prompt alone and joins them (hart.portable.compose); "
                  f"drawn in one pass (`--one-pass`, the model alone) they are wholly right {pct(alone['whole_prompt'])}"
                  " (per named object: " + ", ".join(f"{k} {pct(v)}" for k, v in alone.items() if k != "whole_prompt")
                  + ")."]
    lines += ["", f"## Per background color (all prompts, with residual head; target: background ≥ "
              f"{pct(BACKGROUND_TARGET)} for every color)", "",
              "| background | prompts | background right | whole prompt right |", "|---|---|---|---|"]
    for background, row in results["per_background"].items():
        if row["prompts"]:
            lines.append(f"| {background} | {row['prompts']} | {pct(row['background'])} | {pct(row['whole_prompt'])} |")
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
        "Ghost share (faint marks on the flat background away from objects, hart.eval.metrics.ghost_share; "
        "one-object prompts): " + ", ".join(f"{name.replace('_', ' ')} {100 * value:.2f} %"
                                            for name, value in results["ghost_share"].items()) + ".", "",
        "## Targets", "", "| target | met |", "|---|---|",
    ]
    lines += [f"| {name} | {'yes' if ok else 'no'} |" for name, ok in results["targets_met"].items()]
    return "\n".join(lines) + "\n"


SAMPLE_ROWS = 6  # of each kind: one-object and two-object prompts
TEXT_WIDTH = 46  # characters per line in the grid's text columns


def _write(out: Path, results: dict, columns, prompts: list[str], readings: list[str], right: list[bool],
           count: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "eval.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_file(out / "eval.md") as tmp:
        tmp.write_text(_markdown(results))
    with atomic_file(out / "samples.png") as tmp:
        _grid(columns, prompts, readings, right, count).save(tmp, format="PNG")


def _grid(columns, prompts: list[str], readings: list[str], right: list[bool], count: int) -> Image.Image:
    """Rows of: the prompt | real render | with residual | discrete only | the judge's reading (of the
    image with residual, marked right or wrong); the first one-object and the first two-object prompts."""
    rows = list(range(min(SAMPLE_ROWS, count))) + list(range(count, min(count + SAMPLE_ROWS, len(prompts))))
    size, text, label = columns[0].shape[-1], 6 * TEXT_WIDTH + 8, 14
    grid = Image.new("RGB", (2 * text + 3 * size, label + len(rows) * size), "white")
    pen = ImageDraw.Draw(grid)
    for x, title in ((2, "prompt"), (text + 2, "real"), (text + size + 2, "residual"), (text + 2 * size + 2, "discrete"),
                     (text + 3 * size + 2, "judge's reading of 'residual'")):
        pen.text((x, 1), title, fill="black")
    for row, index in enumerate(rows):
        top = label + row * size
        pen.text((2, top + 2), textwrap.fill(prompts[index], TEXT_WIDTH), fill="black")
        for column, images in enumerate(columns):
            grid.paste(Image.fromarray(to_uint8(images[index:index + 1])[0]), (text + column * size, top))
        verdict = "RIGHT" if right[index] else "WRONG"
        pen.text((text + 3 * size + 2, top + 2), textwrap.fill(f"{verdict}: {readings[index]}", TEXT_WIDTH),
                 fill="darkgreen" if right[index] else "darkred")
        pen.line((0, top, grid.width, top), fill=(220, 220, 220))
    return grid
