"""The loop's definitions, written once (numpy only). Every backend's loop calls these, the export
manifest serialises their texts (`spec_texts`), and the web and Swift ports follow those texts.

    rows         R = 2B guided rows: [conditional; unconditional]. The unconditional row of a prompt
                 has zero features, a mask with only its first token real and positions all 0.
    positions    cumsum(mask) - 1 per row (int64), so pads repeat the last real position; the image
                 tokens' 2D RoPE is offset by positions[:, -1] (the row's last real text position).
    guidance     t = cfg * progress[si] in float64; guided = (1 + t) * cond - t * uncond in float32
                 (t and 1 + t rounded to float32 first, then one float32 product each and a difference).
    residual     the residual head's guidance: cfg * progress[K-1] * residual_guidance in float64,
                 rounded to float32 for the graph; exactly 1.0 means unguided (HART's quirk).
    image        8-bit pixels = round_half_even(clip(x, 0, 1) * 255) in float32, channels last.
"""

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from hart.config_bounds import UPPER_BOUNDS
from hart.errors import ConfigError

GUIDANCE = ("t = cfg * progress[si] (float64); guided = (1 + t) * logits[cond rows] - t * logits[uncond rows] in "
            "float32: t and 1 + t are rounded to float32, each product rounded to float32, then the difference")
RESIDUAL_GUIDANCE = "cfg * progress[K-1] * residual_guidance"
RESIDUAL_GUIDANCE_TEXT = (f"{RESIDUAL_GUIDANCE}, evaluated in float64 left to right, then rounded to float32 for the "
                          "residual graph's `guidance` input (exactly 1.0 means unguided, as in HART)")
ROWS = ("R = 2B rows, conditional rows first: row b is prompt b, row B + b its unconditional twin with features all "
        "zero, mask [1, 0, ..., 0] (only the first token real) and positions all 0")
POSITIONS = ("positions = cumsum(mask) - 1 per row (int64; pads repeat the last real position); image RoPE offset of "
             "a row = positions[row, -1]")
IMAGE_8BIT = ("pixels = round_half_to_even(clip(image, 0, 1) * 255) computed in float32, as uint8, channels last "
              "(note: JavaScript's Math.round rounds halves up; use a half-to-even rule)")


class ArrayOps(Protocol):
    """The array primitives the loop needs on a backend's own arrays (numpy, torch on a device)."""

    def concat(self, arrays: Sequence[Any], axis: int = 0) -> Any: ...

    def zeros_like(self, array: Any) -> Any: ...

    def where(self, mask: np.ndarray, a: Any, b: Any) -> Any:
        """a where the numpy bool `mask` (broadcast) is True, else b."""

    def take(self, array: Any, index: np.ndarray) -> Any:
        """Rows `index` (numpy int) of the array, along axis 0."""


class NumpyOps:
    @staticmethod
    def concat(arrays, axis: int = 0):
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def zeros_like(array):
        return np.zeros_like(array)

    @staticmethod
    def where(mask, a, b):
        return np.where(mask, a, b).astype(np.asarray(b).dtype)

    @staticmethod
    def take(array, index):
        return np.take(array, index, axis=0)


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """mask [R, T] bool -> positions [R, T] int64 (cumsum - 1: pads repeat the last real position)."""
    return np.cumsum(np.asarray(mask).astype(np.int64), axis=1) - 1


def unconditional_mask(mask: np.ndarray) -> np.ndarray:
    """[B, T] -> the unconditional rows' mask: only the first token real."""
    null = np.zeros_like(np.asarray(mask, dtype=bool))
    null[:, 0] = True
    return null


def guided_rows(ops: ArrayOps, hidden: Any, mask: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """Conditional features [B, T, D] and mask [B, T] -> the R = 2B rows: features, mask, positions."""
    mask = np.asarray(mask, dtype=bool)
    rows_mask = np.concatenate([mask, unconditional_mask(mask)])
    positions = np.concatenate([positions_from_mask(mask), np.zeros(mask.shape, dtype=np.int64)])
    return ops.concat([hidden, ops.zeros_like(hidden)]), rows_mask, positions


def rope_offsets(positions: np.ndarray) -> np.ndarray:
    """[R, T] -> [R]: each row's image RoPE starts after its last real text token."""
    return positions[:, -1]


def guidance_weight(cfg: float, progress: float) -> float:
    return cfg * progress


def guide(logits: Any, weight: float) -> Any:
    """[R, L, V] logits (conditional rows first) -> (1 + t) cond - t uncond [B, L, V].

    Works on numpy arrays and torch tensors alike: a Python float scalar takes the array's float32."""
    half = logits.shape[0] // 2
    return (1 + weight) * logits[:half] - weight * logits[half:]


def residual_guidance_weight(cfg: float, progress_last: float, share: float) -> float:
    return cfg * progress_last * share


def to_uint8(images: Any) -> np.ndarray:
    """[B, 3, H, W] floats in [0, 1] (any array numpy can read) -> uint8 [B, H, W, 3]."""
    pixels = np.round(np.clip(np.asarray(images, dtype=np.float32), 0, 1) * np.float32(255))
    return np.ascontiguousarray(pixels.astype(np.uint8).transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------------------- sampling settings
@dataclass(frozen=True)
class SamplingSettings:
    """One generation's sampling numbers, resolved against the model's defaults and checked."""

    cfg: float
    top_k: tuple[int, ...]  # one per scale; 0 keeps the whole vocabulary
    top_p: float
    temperature: float
    residual_guidance: float
    gumbel: bool = False

    @classmethod
    def resolve(cls, defaults: Any, num_scales: int, cfg: float | None = None,
                top_k: int | Sequence[int] | None = None, top_p: float | None = None,
                temperature: float | None = None, residual_guidance: float | None = None,
                gumbel: bool | None = None) -> "SamplingSettings":
        """Overrides left None take `defaults` (a SamplingConfig, or a manifest's sampling section as a
        dict); top_k may be one value or one per scale. Defaults written before residual_guidance
        existed mean HART's 1."""
        get = defaults.get if isinstance(defaults, dict) else (lambda name, fallback=None: getattr(defaults, name,
                                                                                                   fallback))
        if top_k is None:
            top_ks = [int(k) for k in get("top_k")]
        elif isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool):
            top_ks = [int(top_k)] * num_scales
        else:
            top_ks = [int(k) for k in top_k]
        settings = cls(cfg=float(get("cfg") if cfg is None else cfg), top_k=tuple(top_ks),
                       top_p=float(get("top_p") if top_p is None else top_p),
                       temperature=float(get("temperature") if temperature is None else temperature),
                       residual_guidance=float(get("residual_guidance", 1.0) if residual_guidance is None
                                               else residual_guidance),
                       gumbel=bool(get("gumbel", False) if gumbel is None else gumbel))
        settings.check(num_scales)
        return settings

    def check(self, num_scales: int) -> None:
        numbers = {"cfg": self.cfg, "top_p": self.top_p, "temperature": self.temperature,
                   "residual_guidance": self.residual_guidance}
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise ConfigError(f"sampling setting {name} must be a finite number (got {value})")
        # the lower ends are the loop's; the upper ends are the sampling config's bounds
        least = {"cfg": 0.0, "temperature": 1e-3, "residual_guidance": 0.0}
        rules = [(name, low <= getattr(self, name) <= UPPER_BOUNDS[f"sampling.{name}"],
                  f"in [{low:g}, {UPPER_BOUNDS[f'sampling.{name}']:g}]") for name, low in least.items()]
        rules.insert(1, ("top_p", 0 <= self.top_p < 1, "in [0, 1), 0 = off"))
        for name, ok, expected in rules:
            if not ok:
                raise ConfigError(f"sampling setting {name} must be {expected} (got {getattr(self, name):g})")
        if len(self.top_k) != num_scales or min(self.top_k) < 0:
            raise ConfigError(f"sampling setting top_k must be >= 0, one value or one per scale of {num_scales} "
                              f"(got {list(self.top_k)})")


def spec_texts() -> dict[str, str]:
    """The definitions above as the manifest states them."""
    return {"rows": ROWS, "positions": POSITIONS, "guidance": GUIDANCE, "residual_guidance": RESIDUAL_GUIDANCE_TEXT,
            "image_8bit": IMAGE_8BIT}
