"""Canvases of any size through the one loop: each window is plain generation or an edit whose kept tokens
are the already-drawn latent, re-quantized (the rules live in hart.portable.canvas; numpy only, any backend).

    plan = canvas.plan(size, ...)                    windows of the trained size, overlapping
    drawn = the start canvas's cells (draw(start=...)) or an image's (outpaint), else none
    for each window in order (raster, or outward from the image; all images of the batch at once):
        known = the window's drawn cells; all known: skip
        none known: result = loop.generate(prompts, seeds=window_seed(seed, row, col), decode=False)
        else:       latent = fill_unknown(canvas latent of the window, known)
                    ids, residual = backend.quantize(latent)
                    keep[si] = unknown share of the token's cell <= threshold
                    result = loop.generate(..., forced=ForcedTokens(ids, keep, residual), decode=False)
        canvas latent[unknown cells of the window] = result.latents[unknown cells]
    image = blend of backend.decode_latents(each window's latent), tent-weighted
    outpaint: the image's pixels pasted back where it was placed, the step at its border faded outward
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hart.backend import ForcedTokens
from hart.errors import ConfigError
from hart.loop import GenerationLoop
from hart.portable import canvas, edit, rng
from hart.portable.canvas import OVERLAP, THRESHOLD  # noqa: F401 (the defaults, chosen by hart eval)
from hart.portable.spec import to_uint8

log = logging.getLogger(__name__)



@dataclass
class CanvasImages:
    images: np.ndarray  # [B, 3, H, W] float32 in [0, 1]
    latents: np.ndarray  # [B, C_vae, H_c, W_c] float32: the stitched latent (a later draw can grow it)
    owners: np.ndarray  # [H_c, W_c] int: the index (in plan.windows) of the window that drew each cell, -1: given
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
         overlap: int = OVERLAP, threshold: float = THRESHOLD, order: str = "raster",
         start: CanvasImages | None = None, show_progress: bool = False, **sampling) -> CanvasImages:
    """Images of `size` (W, H) pixels, one per prompt, window by window (see the module docstring).

    start: a canvas drawn before (its latents at the top-left count as drawn and are never changed), so a
    canvas grows right or down by drawing only its new windows. `sampling` takes generate()'s sampling
    arguments (cfg, top_k, ...). A canvas of the trained size is one window: exactly loop.generate's image."""
    seeds = rng.resolve_seeds(seed, len(prompts))
    plan = check_canvas(loop, size, len(prompts), overlap)
    canvas.order_windows(plan, order)  # a bad order is refused before any work
    if len(plan.windows) == 1 and start is None:  # the trained size: exactly today's generation
        result = loop.generate(prompts, seed=seeds, show_progress=show_progress, **sampling)
        return CanvasImages(np.asarray(result.images, dtype=np.float32), result.latents,
                            np.zeros((plan.height, plan.width), dtype=np.int64), seeds, plan, result.timings)
    latent, known = _blank(loop, plan, len(prompts))
    if start is not None:
        _place_start(start, latent, known, seeds)
    return _paint(loop, prompts, seeds, plan, latent, known, canvas.order_windows(plan, order), threshold,
                  show_progress, sampling)


def outpaint(loop: GenerationLoop, image: np.ndarray, prompts: list[str], size: tuple[int, int],
             anchor: str = "center", seed: int | Sequence[int] = 0, overlap: int = OVERLAP,
             threshold: float = THRESHOLD, order: str = "outward", paste: bool = True, show_progress: bool = False,
             **sampling) -> CanvasImages:
    """Extend `image` [H, W, 3] float32 in [0, 1] (any size up to `size`) to a canvas of `size` (W, H)
    pixels, placed at `anchor` (hart.portable.canvas.ANCHORS): the cells it covers whole keep its
    latent (the tokenizer's), the rest is drawn window by window outward from it (or `order`), and
    with `paste` its pixels are put back exactly as they were, the step at its border faded into the
    drawn pixels (canvas.blend_border). Arguments otherwise as draw()."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"outpaint takes an image [H, W, 3] (got {list(image.shape)})")
    seeds = rng.resolve_seeds(seed, len(prompts))
    plan = check_canvas(loop, size, len(prompts), overlap)
    x, y = canvas.anchor_offset(anchor, (image.shape[1], image.shape[0]), size)
    cell = plan.cell
    box = (-(-y // cell), -(-x // cell), (y + image.shape[0]) // cell, (x + image.shape[1]) // cell)  # cells
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ConfigError(f"the image ({image.shape[1]}x{image.shape[0]}) covers no whole latent cell ({cell} pixels "
                          f"a side) where anchor {anchor!r} places it; give a larger image")
    latent, known = _blank(loop, plan, len(prompts))
    given = _image_latent(loop, image, (y, x), box, plan)  # [C, cells, cells]
    latent[:, :, box[0]:box[2], box[1]:box[3]] = given
    known[box[0]:box[2], box[1]:box[3]] = True
    result = _paint(loop, prompts, seeds, plan, latent, known, canvas.order_windows(plan, order, box), threshold,
                    show_progress, sampling)
    if paste:
        result.images = np.stack([canvas.blend_border(d, image, x, y, canvas.BORDER_CELLS * cell)
                                  for d in result.images])
    return result


def _blank(loop: GenerationLoop, plan: canvas.CanvasPlan, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """-> an empty canvas latent [B, C_vae, H_c, W_c] float32 and its drawn cells [H_c, W_c] bool (none)."""
    channels = loop.config.tokenizer.latent_channels
    return (np.zeros((batch, channels, plan.height, plan.width), dtype=np.float32),
            np.zeros((plan.height, plan.width), dtype=bool))


def _place_start(start: CanvasImages, latent: np.ndarray, known: np.ndarray, seeds: list[int]) -> None:
    """Put an earlier canvas's latent at the top-left of a larger one and mark its cells drawn."""
    old = np.asarray(start.latents, dtype=np.float32)
    if old.shape[0] != latent.shape[0] or old.shape[1] != latent.shape[1] or \
            old.shape[2] > latent.shape[2] or old.shape[3] > latent.shape[3]:
        raise ConfigError(f"a canvas grows from one of the same batch and at most its size (start latents "
                          f"{list(old.shape)}, canvas {list(latent.shape)})")
    if list(start.seeds) != seeds:
        raise ConfigError(f"a canvas grows with the seeds it was started with ({start.seeds}, got {seeds})")
    latent[:, :, :old.shape[2], :old.shape[3]] = old
    known[:old.shape[2], :old.shape[3]] = True


def _image_latent(loop: GenerationLoop, image: np.ndarray, corner: tuple[int, int], box: tuple[int, int, int, int],
                  plan: canvas.CanvasPlan) -> np.ndarray:
    """The tokenizer's latent [C_vae, h, w] of the cells `box` (y0, x0, y1, x1) that an image placed with its
    top-left pixel at `corner` (y, x) covers whole: windows of the trained size over those cells (a side
    shorter than a window gets one window), each encoded with the pixels outside the image filled as an
    edit fills them, the windows' latents blended with tent weights."""
    n, cell = plan.window, plan.cell
    side = n * cell
    height, width = box[2] - box[0], box[3] - box[1]
    weights = canvas.tile_weights(n)
    total = np.zeros((loop.config.tokenizer.latent_channels, height, width), dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    stride = n - plan.overlap
    starts = [(top, left) for top in canvas.window_starts(max(height, n), n, stride)
              for left in canvas.window_starts(max(width, n), n, stride)]
    for top, left in starts:
        y, x = (box[0] + top) * cell - corner[0], (box[1] + left) * cell - corner[1]  # in the image's pixels
        pixels = np.zeros((side, side, 3), dtype=np.float32)
        inside = np.zeros((side, side), dtype=bool)
        rows = slice(max(y, 0), min(y + side, image.shape[0]))
        cols = slice(max(x, 0), min(x + side, image.shape[1]))
        pixels[rows.start - y:rows.stop - y, cols.start - x:cols.stop - x] = image[rows, cols]
        inside[rows.start - y:rows.stop - y, cols.start - x:cols.stop - x] = True
        filled = edit.fill_masked(pixels, ~inside) if not inside.all() else pixels
        window = loop.encode_latents(filled.transpose(2, 0, 1)[None])[0]  # [C, n, n]
        h, w = min(n, height - top), min(n, width - left)
        if len(starts) == 1:  # one window: its latent as it is (no blend to round)
            return window[:, :h, :w]
        total[:, top:top + h, left:left + w] += window[:, :h, :w] * weights[:h, :w]
        weight_sum[top:top + h, left:left + w] += weights[:h, :w]
    return total / weight_sum


def _paint(loop: GenerationLoop, prompts: list[str], seeds: list[int], plan: canvas.CanvasPlan, latent: np.ndarray,
           known: np.ndarray, order: list[int], threshold: float, show_progress: bool, sampling: dict) -> CanvasImages:
    """Draw the windows of `plan` in `order` onto `latent` (cells `known` already drawn), then decode."""
    backend, config = loop.backend, loop.config
    n, batch = plan.window, len(prompts)
    owners = np.full((plan.height, plan.width), -1, dtype=np.int64)  # -1: given (a start canvas or an image)
    todo = [i for i in order if not known[plan.windows[i].y:plan.windows[i].y + n,
                                           plan.windows[i].x:plan.windows[i].x + n].all()]
    if not todo:
        raise ConfigError("every cell of the canvas is already drawn: nothing to paint; ask for a larger size")
    timings: dict[str, float] = {}
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) + len(plan.windows), desc="canvas", unit="window", leave=False)
    try:
        for index in todo:
            window = plan.windows[index]
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
    log.info("canvas %dx%d: %d of %d windows drawn", *plan.pixels, len(todo), len(plan.windows))
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
