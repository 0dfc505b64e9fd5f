"""Canvases larger than the trained size, window by window (NUWA-Infinity's idea on HART), numpy only.

    canvas     a latent grid of H_c x W_c cells (one cell = image_size / latent_size pixels a side); the
               trained size is one window of N x N cells (N = latent_size)
    windows    N x N, overlapping by `overlap` cells, on a raster: starts 0, N - overlap, ... and the last
               one flush with the far edge; generated in raster order (rows top to bottom, each left to
               right). Window (row, col) draws with seed rng.window_seed(seed, row, col); window (0, 0)
               with the seed itself, so a canvas starts with the image `hart generate` draws
    each       a window whose cells are all unknown is plain generation; otherwise it is an edit of the
               window's latent: the unknown cells are filled from the known ones (fill_unknown), the
               window's latent is re-quantized at every scale (no pixel round trip), a token is resampled
               when more than `threshold` of its cell is unknown (hart.portable.edit.edited_tokens on
               the latent mask) and kept otherwise; only the unknown cells of the result are written
               back, so what is drawn never changes
    decode     the finished latent is decoded window by window with the model's fixed-size decoder and
               the tiles are blended with tent weights (tile_weights), so memory is one tile however
               large the canvas
"""

from dataclasses import dataclass

import numpy as np

from hart.errors import ConfigError
from hart.portable.rng import MAX_WINDOWS_PER_SIDE


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


def _starts(length: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)  # the last window flush with the edge (a larger overlap there)
    return starts


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' (pixels) -> (W, H); one sentence for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--size takes WIDTHxHEIGHT in pixels, e.g. 256x64 (got {text!r})")
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
    rows, cols = _starts(height // cell, latent_size, stride), _starts(width // cell, latent_size, stride)
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
