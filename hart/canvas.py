"""Canvases of any size through the one loop: each window is plain generation or an edit whose kept tokens
are the already-drawn latent, re-quantized (the rules live in hart.portable.canvas; numpy only, any backend).

    plan = canvas.plan(size, ...)                    windows of the trained size, overlapping, raster order
    for each window (all images of the batch at once):
        known = the window's drawn cells
        none known: result = loop.generate(prompts, seeds=window_seed(seed, row, col), decode=False)
        else:       latent = fill_unknown(canvas latent of the window, known)
                    ids, residual = backend.quantize(latent)
                    keep[si] = unknown share of the token's cell <= threshold
                    result = loop.generate(..., forced=ForcedTokens(ids, keep, residual), decode=False)
        canvas latent[unknown cells of the window] = result.latents[unknown cells]
    image = blend of backend.decode_latents(each window's latent), tent-weighted
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hart.loop import ForcedTokens, GenerationLoop
from hart.portable import canvas, edit, rng
from hart.portable.spec import to_uint8

log = logging.getLogger(__name__)

# Chosen by `hart eval --task canvas` on the embedded model (7 prompts at 2x, 4x and 8x the trained width,
# one per background; overlap in latent cells of 8, threshold as in hart.portable.edit), background judged
# kept per window / seam score: overlap 2: threshold 0 90.5 % / 0.88, 0.25 86.3 % / 1.29, 0.5 90.5 % / 0.72,
# 0.75 78.7 % / 0.73; overlap 4: 0 90.9 % / 1.32, 0.5 85.0 % / 0.90; overlap 6: 0 92.6 % / 1.61, 0.5
# 79.9 % / 1.21 (and twice the time of overlap 2). No setting reaches 95 % with a seam under 1.2; overlap 2
# with threshold 0.5 has the lowest seam, ties the best background share at 2x-8x and is the fastest.
# Forcing every token of the coarsest scales (n <= 1, 2, 3) from the filled latent made it worse (71-79 %).
OVERLAP = 2  # latent cells two neighbouring windows share
THRESHOLD = 0.5  # a token is resampled when more than half of its cell is not drawn yet


@dataclass
class CanvasImages:
    images: np.ndarray  # [B, 3, H, W] float32 in [0, 1]
    latents: np.ndarray | None  # [B, C_vae, H_c, W_c] float32: the stitched latent (None for the trained size)
    owners: np.ndarray  # [H_c, W_c] int: the index (in plan.windows) of the window that drew each latent cell
    seeds: list[int]
    plan: canvas.CanvasPlan
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, summed over the windows

    def pil_images(self) -> list:
        from PIL import Image

        return [Image.fromarray(p) for p in to_uint8(self.images)]


def available_memory() -> int | None:
    """Bytes of memory available now (Linux /proc/meminfo), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_canvas(loop: GenerationLoop, size: tuple[int, int], batch: int = 1,
                 overlap: int = OVERLAP) -> canvas.CanvasPlan:
    """The plan of a canvas, refused in one sentence when its size or its memory cannot work."""
    config = loop.config
    canvas.check_memory(size, batch, available_memory())
    return canvas.plan(size, config.image_size, config.latent_size, overlap)


def draw(loop: GenerationLoop, prompts: list[str], size: tuple[int, int], seed: int | Sequence[int] = 0,
         overlap: int = OVERLAP, threshold: float = THRESHOLD, show_progress: bool = False,
         **sampling) -> CanvasImages:
    """Images of `size` (W, H) pixels, one per prompt, window by window (see the module docstring).

    `sampling` takes generate()'s sampling arguments (cfg, top_k, ...). A canvas of the trained size is one
    window: exactly loop.generate's image."""
    backend, config = loop.backend, loop.config
    seeds = rng.resolve_seeds(seed, len(prompts))
    plan = check_canvas(loop, size, len(prompts), overlap)
    if len(plan.windows) == 1:  # the trained size: exactly today's generation
        result = loop.generate(prompts, seed=seeds, show_progress=show_progress, **sampling)
        return CanvasImages(np.asarray(result.images, dtype=np.float32), None,
                            np.zeros((plan.height, plan.width), dtype=np.int64), seeds, plan, result.timings)
    n, batch = plan.window, len(prompts)
    latent = np.zeros((batch, config.tokenizer.latent_channels, plan.height, plan.width), dtype=np.float32)
    known = np.zeros((plan.height, plan.width), dtype=bool)
    owners = np.zeros((plan.height, plan.width), dtype=np.int64)
    timings: dict[str, float] = {}
    bar = None
    if show_progress and len(plan.windows) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * len(plan.windows), desc="canvas", unit="window", leave=False)
    try:
        for index, window in enumerate(plan.windows):
            cells = (slice(None), slice(None), slice(window.y, window.y + n), slice(window.x, window.x + n))
            drawn = known[cells[2:]]
            window_seeds = [rng.window_seed(s, window.row, window.col) for s in seeds]
            forced = None
            if drawn.any():
                filled = np.stack([canvas.fill_unknown(image, drawn) for image in latent[cells]])
                ids, residual = backend.quantize(filled)
                keep = [np.repeat(~e[None], batch, axis=0) for e in
                        edit.edited_tokens(~drawn, config.patch_nums, threshold)]
                forced = ForcedTokens(ids, keep, residual)
            result = loop.generate(prompts, seed=window_seeds, forced=forced, decode=False, **sampling)
            new = ~drawn
            latent[cells][:, :, new] = result.latents[:, :, new]
            owners[cells[2:]][new] = index
            known[cells[2:]] = True
            for stage, seconds in result.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
            if bar is not None:
                bar.update(1)
        images = _decode_tiled(backend, latent, plan, bar, timings)
    finally:
        if bar is not None:
            bar.close()
    log.info("canvas %dx%d: %d windows", *plan.pixels, len(plan.windows))
    return CanvasImages(images, latent, owners, seeds, plan, timings)


def _decode_tiled(backend, latent: np.ndarray, plan: canvas.CanvasPlan, bar, timings: dict) -> np.ndarray:
    """Decode the canvas latent one window at a time and blend the tiles (memory: one tile)."""
    import time

    n, cell = plan.window, plan.cell
    side = n * cell
    width, height = plan.pixels
    weights = canvas.tile_weights(side)
    total = np.zeros((latent.shape[0], 3, height, width), dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    started = time.perf_counter()
    for window in plan.windows:
        tile = np.asarray(backend.decode_latents(latent[:, :, window.y:window.y + n, window.x:window.x + n]),
                          dtype=np.float32)
        y, x = window.y * cell, window.x * cell
        total[:, :, y:y + side, x:x + side] += tile * weights
        weight_sum[y:y + side, x:x + side] += weights
        if bar is not None:
            bar.update(1)
    timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - started
    return total / weight_sum
