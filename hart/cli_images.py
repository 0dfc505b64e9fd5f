"""`hart generate` and `hart edit`: everything checked first, then images made a batch at a time.

Prompts, sampling settings, the image and mask of an edit, and the output paths are checked before the
model loads (seconds, instead of after it); the images are then made `--batch-size` at a time and
written as they come, so memory does not grow with `-n`.
"""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from hart.errors import ConfigError, HartError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # anything else: PNG


def output_paths(output: str, count: int) -> list[Path]:
    """The files to write, checked before any work: a folder or an unwritable place is refused now."""
    from hart.atomic import check_writable

    path = Path(output)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise HartError(f"output {output!r} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    paths = [path] if count == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]
    for candidate in (paths[0], paths[-1]):
        check_writable(candidate)
    return paths


def _runtime_config(args: argparse.Namespace):
    """The model config, read without loading weights (a preset, a model folder or an export's manifest)."""
    if args.backend == "torch":
        from hart.checkpoints import load_config

        return load_config(args.model)
    if args.backend == "onnx":
        import onnxruntime  # noqa: F401  a missing extra is said before anything about the folder
    from hart.runtime.manifest import read_manifest

    return read_manifest(args.model, verify=False).config


def approximations(args: argparse.Namespace):
    """--fast, --unguided-scales, --residual-steps and --prune-* as one Approximations (the flags override
    --fast's)."""
    from dataclasses import replace

    from hart.approximations import EXACT, fast_for

    chosen = fast_for(args.backend) if args.fast else EXACT
    if args.unguided_scales is not None:
        chosen = replace(chosen, unguided_scales=args.unguided_scales, name="custom")
    if args.residual_steps is not None:
        chosen = replace(chosen, residual_steps=args.residual_steps, name="custom")
    if args.prune_scales is not None:
        chosen = replace(chosen, pruned_scales=args.prune_scales, name="custom")
    if args.prune_ratio is not None:
        if not chosen.pruned_scales:
            raise ConfigError("--prune-ratio sets how much --prune-scales prunes; give --prune-scales K too")
        chosen = replace(chosen, prune_ratio=args.prune_ratio, name="custom")
    return chosen


def _prepare(args: argparse.Namespace, prompts: list[str]) -> tuple[list[tuple[str, int]], list[Path], dict, object]:
    """-> (prompt, seed) per image, their output paths, the sampling arguments and the model config."""
    from hart.portable.rng import resolve_seeds
    from hart.portable.spec import SamplingSettings
    from hart.portable.words import WordTokenizer, check_prompts

    if args.num_images < 1 or args.batch_size < 1:
        raise HartError(f"--num-images and --batch-size must be at least 1 (got {args.num_images}, {args.batch_size})")
    prompts = check_prompts(prompts)
    jobs = [(prompt, args.seed + i) for prompt in prompts for i in range(args.num_images)]
    resolve_seeds([seed for _, seed in jobs], len(jobs))
    paths = output_paths(args.output, len(jobs))
    if args.gumbel and args.backend != "torch":
        raise HartError(f"--gumbel is not supported by the {args.backend} runtime")
    config = _runtime_config(args)
    if config.text.kind == "words":
        WordTokenizer(config.text.vocab, config.text.max_tokens)(prompts)
    sampling = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                    residual_guidance=args.residual_guidance)
    SamplingSettings.resolve(config.sampling, config.num_scales, **sampling)
    approximate = approximations(args)
    approximate.check(config.num_scales, config.residual_head.train_steps)
    if not approximate.exact:
        sampling["approximate"] = approximate
    sampling["residual"] = not args.no_residual
    if args.one_pass:
        sampling["compose"] = False
    if args.gumbel:
        sampling["gumbel"] = True
    return jobs, paths, sampling, config


def open_loop(backend: str, model: str, device: str = "auto", dtype: str = "fp32",
              text_encoder: str | None = None):
    """-> the one loop over `backend` and a description of where it runs (torch is never imported for onnx
    or coreml)."""
    if backend == "onnx":
        from hart.runtime.onnx_pipeline import OnnxPipeline

        return OnnxPipeline(model), "onnx"
    if backend == "coreml":
        from hart.runtime.coreml_pipeline import CoreMLPipeline

        return CoreMLPipeline(model), "coreml"
    from hart.pipeline import HARTPipeline

    pipe = HARTPipeline.from_pretrained(model, device, dtype, text_encoder)
    from hart.device import DTYPES

    return pipe.loop, f"{pipe.device}, {next(k for k, v in DTYPES.items() if v == pipe.dtype)}"


def _open(args: argparse.Namespace):
    return open_loop(args.backend, args.model, args.device, args.dtype, args.text_encoder)


def _write_batches(make: Callable[[list[str], list[int], bool], object], jobs: list[tuple[str, int]],
                   paths: list[Path], batch_size: int) -> float:
    """Run `make(prompts, seeds, show_progress)` per batch and write its images; -> generation seconds."""
    from hart.atomic import atomic_file

    batches = [range(i, min(i + batch_size, len(jobs))) for i in range(0, len(jobs), batch_size)]
    bar = None
    if len(batches) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="hart", unit="image", leave=False)
    seconds = 0.0
    try:
        for batch in batches:
            result = make([jobs[i][0] for i in batch], [jobs[i][1] for i in batch], bar is None)
            seconds += sum(result.timings.values())
            for image, i in zip(result.pil_images(), batch):
                with atomic_file(paths[i]) as tmp:
                    image.save(tmp, format=FORMATS.get(paths[i].suffix.lower(), "PNG"))
                (bar.write if bar is not None else print)(f"wrote {paths[i]} ({image.width}x{image.height}, seed "
                                                          f"{jobs[i][1]}): {jobs[i][0]}")
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return seconds


def generate(args: argparse.Namespace) -> None:
    jobs, paths, sampling, config = _prepare(args, args.prompts)
    size = None
    if args.size is not None:  # checked before the model loads, like everything else
        from hart.canvas import OVERLAP, available_memory
        from hart.portable import canvas

        size = canvas.parse_size(args.size)
        canvas.check_memory(size, min(args.batch_size, len(jobs)), available_memory())
        canvas.plan(size, config.image_size, config.latent_size, OVERLAP)
    started = time.perf_counter()
    loop, where = _open(args)
    def make(prompts: list[str], seeds: list[int], bar: bool):
        if size is None:
            return loop.generate(prompts, seed=seeds, show_progress=bar, **sampling)
        from hart.canvas import draw

        return draw(loop, prompts, size, seeds, show_progress=bar, **sampling)

    seconds = _write_batches(make, jobs, paths, args.batch_size)
    print(f"{len(paths)} image(s) in {time.perf_counter() - started:.2f} s "
          f"(generation {seconds:.2f} s on {where}, {args.batch_size} at a time)")


def edit(args: argparse.Namespace) -> None:
    """`hart edit` and `hart outpaint`: one prompt (the words after IMAGE) redraws the mask's white region
    (outpaint: the margins around the placed image); -n gives seeds seed, seed + 1, ..."""
    import numpy as np

    from hart.images import fit_box, fit_image, fit_mask, parse_box, place_on_canvas, read_image
    from hart.portable.edit import edited_tokens

    if args.command == "outpaint" and args.to is not None:
        return _outpaint_canvas(args)
    box = parse_box(args.box) if getattr(args, "box", None) else None
    jobs, paths, sampling, config = _prepare(args, [" ".join(args.prompt)])
    args.threshold = 0.0 if args.threshold is None else args.threshold
    image = read_image(args.image)
    size = config.image_size
    if args.command == "outpaint":
        pixels, region = place_on_canvas(image, size, args.left, args.right, args.top, args.bottom)
    else:
        region = fit_box(box, image.size, size) if box else fit_mask(read_image(args.mask, "mask"), image.size, size)
        pixels = fit_image(image, size)
    if not region.any():
        raise HartError("the mask marks nothing to edit (no white pixels after the 0.5 threshold and the fit to the "
                        f"{size}x{size} canvas); paint the region to redraw in white")
    edited_tokens(region, config.patch_nums, args.threshold)  # a bad threshold is refused before the model loads
    started = time.perf_counter()
    loop, where = _open(args)

    def make(prompts: list[str], seeds: list[int], bar: bool):
        return loop.edit(np.stack([pixels] * len(seeds)), np.stack([region] * len(seeds)), prompts, seed=seeds,
                         threshold=args.threshold, fill=not args.no_fill, paste=not args.no_paste,
                         show_progress=bar, **sampling)

    seconds = _write_batches(make, jobs, paths, args.batch_size)
    print(f"{len(paths)} {args.command}(s) of {args.image} ({int(region.sum())} of {size * size} canvas pixels "
          f"redrawn) in {time.perf_counter() - started:.2f} s (generation {seconds:.2f} s on {where})")


def _outpaint_canvas(args: argparse.Namespace) -> None:
    """`hart outpaint IMAGE --to WxH`: the image, at its own size, extended to a larger canvas window by window
    (hart.canvas.outpaint); its pixels are kept exactly (unless --no-paste)."""
    import numpy as np

    from hart.canvas import OVERLAP, THRESHOLD, available_memory, outpaint
    from hart.images import read_image
    from hart.portable import canvas
    from hart.portable.edit import edited_tokens

    margins = [f"--{side}" for side in ("left", "right", "top", "bottom") if getattr(args, side)]
    if margins:
        raise HartError(f"--to and {', '.join(margins)} are two ways to outpaint; give one (--to: past the trained "
                        "size, the margins: within it)")
    if args.no_fill:
        raise HartError("--no-fill applies to outpainting within the canvas; with --to the cells around the image "
                        "are always filled from it before they are drawn")
    jobs, paths, sampling, config = _prepare(args, [" ".join(args.prompt)])
    threshold = THRESHOLD if args.threshold is None else args.threshold
    edited_tokens(np.zeros((1, 1), dtype=bool), config.patch_nums, threshold)  # a bad threshold is refused now
    size = canvas.parse_size(args.to, "--to")
    canvas.check_memory(size, min(args.batch_size, len(jobs)), available_memory())
    canvas.plan(size, config.image_size, config.latent_size, OVERLAP)
    image = read_image(args.image)
    canvas.anchor_offset(args.anchor, image.size, size)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
    started = time.perf_counter()
    loop, where = _open(args)

    def make(prompts: list[str], seeds: list[int], bar: bool):
        return outpaint(loop, pixels, prompts, size, args.anchor, seeds, threshold=threshold,
                        paste=not args.no_paste, show_progress=bar, **sampling)

    seconds = _write_batches(make, jobs, paths, args.batch_size)
    print(f"{len(paths)} outpaint(s) of {args.image} ({image.width}x{image.height}, {args.anchor}) to {size[0]}x"
          f"{size[1]} in {time.perf_counter() - started:.2f} s (generation {seconds:.2f} s on {where})")
