"""Canvases larger than the trained size, window by window (NUWA-Infinity's idea on HART), numpy only.

    canvas     a latent grid of H_c x W_c cells (one cell = image_size / latent_size pixels a side); the
               trained size is one window of N x N cells (N = latent_size)
    windows    N x N, overlapping by `overlap` cells, on a raster: starts 0, N - overlap, ... and the last
               one flush with the far edge; generated in raster order (rows top to bottom, each left to
               right) or outward from a focus (order_windows). Window (row, col) draws with seed
               rng.window_seed(seed, row, col); window (0, 0) with the seed itself, so a raster canvas
               starts with the image `hart generate` draws. A window whose cells are all drawn is skipped
    each       a window whose cells are all unknown is plain generation; otherwise it is an edit of the
               window's latent: the unknown cells are filled from the known ones (fill_unknown), the
               window's latent is re-quantized at every scale (no pixel round trip), a token is resampled
               when more than `threshold` of its cell is unknown (hart.portable.edit.edited_tokens on
               the latent mask) and kept otherwise; only the unknown cells of the result are written
               back, so what is drawn never changes
    outpaint   an image placed at an anchor (anchor_offset) gives the cells it covers whole: their latent is
               the tokenizer's, encoded window by window over the image (the rest of a window filled as an
               edit fills), blended with tent weights; its pixels are pasted back unchanged at the end
    decode     the finished latent is decoded window by window with the model's fixed-size decoder and
               the tiles are blended with tent weights (tile_weights), so memory is one tile however
               large the canvas
"""

from dataclasses import dataclass

import numpy as np

from hart.errors import ConfigError
from hart.portable.rng import MAX_WINDOWS_PER_SIDE

# Chosen by `hart eval --task canvas` on the embedded model (7 prompts at 2x, 4x and 8x the trained width,
# one per background; overlap in latent cells of 8, threshold as in hart.portable.edit), background judged
# kept per window / seam score: overlap 2: threshold 0 90.5 % / 0.88, 0.25 86.3 % / 1.29, 0.5 90.5 % / 0.72,
# 0.75 78.7 % / 0.73; overlap 4: 0 90.9 % / 1.32, 0.5 85.0 % / 0.90; overlap 6: 0 92.6 % / 1.61, 0.5
# 79.9 % / 1.21 (and twice the time of overlap 2). No setting reaches 95 % with a seam under 1.2; overlap 2
# with threshold 0.5 has the lowest seam, ties the best background share at 2x-8x and is the fastest.
# Forcing every token of the coarsest scales (n <= 1, 2, 3) from the filled latent made it worse (71-79 %).
OVERLAP = 2  # latent cells two neighbouring windows share
THRESHOLD = 0.5  # a token is resampled when more than half of its cell is not drawn yet
# The step between an outpainted image's own pixels and the decode beside them is carried into the drawn
# pixels, fading over this many cells (blend_border). Seam score over 21 outpaintings of the embedded model
# (7 prompts x 2x wide from the left, 4x from the centre, 2x tall from the top): raw decode 0.66, the pixels
# pasted with no blend 7.64, faded over 2, 4, 8, 16 px: 2.56, 1.75, 1.24, 0.96.
BORDER_CELLS = 2
ORDERS = ("raster", "outward")
ANCHORS = ("center", "left", "right", "top", "bottom", "top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class Window:
    row: int
    col: int
    y: int  # top-left latent cell
    x: int


@dataclass(frozen=True)
class CanvasPlan:
    """Where the windows of a canvas go. Sizes in latent cells; `cell` pixels per cell."""

    height: int
    width: int
    window: int
    overlap: int
    cell: int
    windows: tuple[Window, ...]

    @property
    def pixels(self) -> tuple[int, int]:
        """(width, height) of the canvas in pixels."""
        return self.width * self.cell, self.height * self.cell


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along a side of `length` cells: every `stride`, the last one flush with the far edge."""
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)  # the last window flush with the edge (a larger overlap there)
    return starts


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'WxH' (pixels) -> (W, H); one sentence for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"{option} takes WIDTHxHEIGHT in pixels, e.g. 256x64 (got {text!r})")
    return int(parts[0]), int(parts[1])


def plan(size: tuple[int, int], image_size: int, latent_size: int, overlap: int) -> CanvasPlan:
    """The windows covering a canvas of `size` (W, H) pixels; every side a multiple of the cell and at
    least the trained size."""
    width, height = size
    cell = image_size // latent_size
    if width < image_size or height < image_size:
        raise ConfigError(f"a canvas must be at least the trained size {image_size}x{image_size} (got {width}x"
                          f"{height}); smaller images are not this model's")
    if width % cell or height % cell:
        raise ConfigError(f"canvas sides must be multiples of the model's latent cell, {cell} pixels (got "
                          f"{width}x{height}; e.g. {width // cell * cell}x{height // cell * cell})")
    if not 0 <= overlap < latent_size:
        raise ConfigError(f"the window overlap must be 0 to {latent_size - 1} latent cells (got {overlap})")
    stride = latent_size - overlap
    longest = (MAX_WINDOWS_PER_SIDE - 1) * stride + latent_size  # cells a side the RNG's window seeds number
    if max(width, height) > longest * cell:
        raise ConfigError(f"a canvas side can be at most {longest * cell} pixels ({MAX_WINDOWS_PER_SIDE} windows; "
                          f"got {width}x{height})")
    rows, cols = window_starts(height // cell, latent_size, stride), window_starts(width // cell, latent_size, stride)
    windows = tuple(Window(r, c, y, x) for r, y in enumerate(rows) for c, x in enumerate(cols))
    return CanvasPlan(height // cell, width // cell, latent_size, overlap, cell, windows)


def fill_unknown(latent: np.ndarray, known: np.ndarray) -> np.ndarray:
    """latent [C, n, n] float32, known [n, n] bool -> the same with each unknown cell set, ring by ring
    outward from the known ones, to the mean of its already-set 4-neighbours: the known content extended,
    so the coarse tokens of a window see a continuation of the canvas rather than zeros."""
    filled, done = latent.astype(np.float32).copy(), known.copy()
    if not done.any():
        return filled
    while not done.all():
        values = np.pad(filled * done, ((0, 0), (1, 1), (1, 1)))
        seen = np.pad(done, 1).astype(np.float32)
        total = values[:, :-2, 1:-1] + values[:, 2:, 1:-1] + values[:, 1:-1, :-2] + values[:, 1:-1, 2:]
        count = seen[:-2, 1:-1] + seen[2:, 1:-1] + seen[1:-1, :-2] + seen[1:-1, 2:]
        ring = ~done & (count > 0)
        filled[:, ring] = total[:, ring] / count[ring]
        done |= ring
    return filled


def tile_weights(size: int) -> np.ndarray:
    """[size, size] float32 tent weights for blending decoded tiles: highest in the middle, small but
    positive at the border (a tile's border pixels are the least reliable: the decoder padded there)."""
    ramp = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5).astype(np.float32)
    return np.outer(ramp, ramp)


def check_memory(size: tuple[int, int], batch: int, available: int | None) -> None:
    """Refuse a canvas (W, H pixels) whose images would not fit in half the memory available (bytes);
    checked before anything is planned or allocated."""
    width, height = size
    need = batch * (3 * width * height * (4 + 4 + 1) + width * height * 4)  # float image, sum, 8-bit, weights
    if available is not None and need > available // 2:
        raise ConfigError(f"a {width}x{height} canvas needs about {need / 2**30:.1f} GiB for {batch} image(s); "
                          f"{available / 2**30:.1f} GiB of memory is available, so at most half of that is used; "
                          "ask for a smaller canvas or fewer images at a time (--batch-size)")


def anchor_offset(anchor: str, image: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """(x, y) pixels of the top-left corner of an image (W, H) placed on a canvas (W, H) at `anchor`:
    flush with the named sides, centred (rounded down) along the others."""
    if anchor not in ANCHORS:
        raise ConfigError(f"--anchor takes one of {', '.join(ANCHORS)} (got {anchor!r})")
    if image[0] > canvas[0] or image[1] > canvas[1]:
        raise ConfigError(f"the image ({image[0]}x{image[1]}) does not fit on a {canvas[0]}x{canvas[1]} canvas; ask "
                          f"for --to at least {max(image[0], canvas[0])}x{max(image[1], canvas[1])}")
    if image == canvas:
        raise ConfigError(f"the canvas is the image's own size ({image[0]}x{image[1]}): nothing to outpaint; "
                          "ask for a larger --to")
    sides = anchor.split("-")

    def along(length: int, low: str, high: str) -> int:
        return 0 if low in sides else length if high in sides else length // 2

    return along(canvas[0] - image[0], "left", "right"), along(canvas[1] - image[1], "top", "bottom")


def order_windows(plan: CanvasPlan, order: str, focus: tuple[int, int, int, int] | None = None) -> list[int]:
    """Indices into plan.windows in drawing order. raster: as planned. outward: by the squared distance
    from a window's centre to the centre of `focus` (y0, x0, y1, x1 cells; default the whole canvas),
    measured in half cells so it is an integer, ties in raster order."""
    if order not in ORDERS:
        raise ConfigError(f"the window order must be one of {', '.join(ORDERS)} (got {order!r})")
    if order == "raster":
        return list(range(len(plan.windows)))
    y0, x0, y1, x1 = focus if focus is not None else (0, 0, plan.height, plan.width)
    n = plan.window

    def distance(index: int) -> int:
        w = plan.windows[index]
        return (2 * w.y + n - y0 - y1) ** 2 + (2 * w.x + n - x0 - x1) ** 2

    return sorted(range(len(plan.windows)), key=distance)


def describe() -> dict:
    """The manifest's `canvas` section: every rule a port needs to draw a canvas larger than the trained size."""
    return {
        "overlap": OVERLAP, "threshold": THRESHOLD, "border_cells": BORDER_CELLS, "orders": list(ORDERS),
        "anchors": list(ANCHORS),
        "plan": "cells = pixels / cell (cell = image_size / latent_size); window N = latent_size cells a side; starts "
                "0, N - overlap, 2 (N - overlap), ... while start + N <= cells, plus cells - N when the last start "
                "is not flush; windows row-major over (row starts) x (col starts), (row, col) their indices",
        "order": "raster: row-major; outward: by (2y + N - y0 - y1)^2 + (2x + N - x0 - x1)^2 for the focus box "
                 "[y0, y1) x [x0, x1) of cells (the given image's, or the whole canvas), ties row-major",
        "window": "skip a window whose cells are all drawn; none drawn: generate with seed "
                  "window_seed(seed, row, col), no decode; else latent = fill_unknown(window latent, drawn); "
                  "ids, residual = quantize(latent); "
                  "keep[si] = not edited_tokens(not drawn, patch_nums, threshold) (the edit section's token rule "
                  "on the N x N cell mask); generate with those forced tokens; write the result's final f_hat into "
                  "the undrawn cells only",
        "fill_unknown": "ring by ring: every undrawn cell with at least one set 4-neighbour takes their mean "
                        "(float32), then counts as set; repeat until all are set",
        "decode": "each window's latent decoded alone; tiles blended with weights w[y][x] = r(y) r(x), r(i) = "
                  "min(i + 0.5, side - i - 0.5); image = sum(tile * w) / sum(w) in float32",
        "outpaint": "the image (W, H) at anchor_offset: flush with the named sides, centred (floor) otherwise; cells "
                    "wholly inside it are given: their latent is encode_latents of windows over the image's cells "
                    "(starts as the plan's over max(N, cells)), pixels outside the image filled as the edit "
                    "section's fill, blended with the decode's weights at cell resolution (one window: its latent "
                    "as it is); order outward from its cells; after the decode, out = blend_border(decoded, image, "
                    "x, y, border_cells * cell): the image's pixels exactly, and at Chebyshev distance d = 1..band "
                    "from it the decode plus (image - decoded at the nearest image pixel) * (1 - d / (band + 1)), "
                    "clipped to [0, 1]",
    }


def blend_border(decoded: np.ndarray, image: np.ndarray, x: int, y: int, band: int) -> np.ndarray:
    """decoded [3, H, W] float32, image [h, w, 3] float32 placed with its top-left pixel at (x, y) -> the
    canvas with the image's pixels exactly and, around it, the decode shifted by the step at the image's
    border: a pixel at Chebyshev distance d (1..band) from the image gains (image - decoded) at its nearest
    image pixel times 1 - d / (band + 1), so no step shows where the image ends; clipped to [0, 1]."""
    _, height, width = decoded.shape
    h, w = image.shape[:2]
    rows, cols = np.arange(height), np.arange(width)
    near_y, near_x = np.clip(rows, y, y + h - 1), np.clip(cols, x, x + w - 1)  # the nearest image pixel
    distance = np.maximum(np.abs(rows - near_y)[:, None], np.abs(cols - near_x)[None])  # [H, W]
    fade = np.clip(1 - distance / np.float32(band + 1), 0, None).astype(np.float32)
    step = image.transpose(2, 0, 1) - decoded[:, y:y + h, x:x + w]  # [3, h, w]
    out = decoded + step[:, (near_y - y)[:, None], (near_x - x)[None]] * fade
    out[:, y:y + h, x:x + w] = image.transpose(2, 0, 1)
    return np.clip(out, 0, 1).astype(np.float32)
