"""Per-scale bookkeeping of HART's next-scale loop (numpy only; shared by every backend).

The sequence the transformer sees is [T text tokens] + [pn_1^2] + ... + [pn_{K-1}^2]: the first
scale (pn_0 = 1) has no input token of its own; its logits come from the last text position.
Step si feeds `step_lengths[si]` tokens starting at `step_starts[si]` into the KV cache.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def phi_ticks(count: int) -> np.ndarray:
    """VAR's tick positions for `count` shared Φ convolutions (1/3 margins when there are 4)."""
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    return np.linspace(margin, 1 - margin, count)


@dataclass(frozen=True)
class ScaleSchedule:
    patch_nums: tuple[int, ...]
    context_tokens: int

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @cached_property
    def step_lengths(self) -> tuple[int, ...]:
        return (self.context_tokens,) + tuple(p * p for p in self.patch_nums[1:])

    @cached_property
    def step_starts(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.cumsum((0,) + self.step_lengths[:-1]))

    @property
    def sequence_length(self) -> int:
        return sum(self.step_lengths)

    def progress(self, si: int) -> float:
        """HART's ratio si / (K - 1), frozen at the second-to-last scale for the last one."""
        return min(si, self.num_scales - 2) / (self.num_scales - 1)

    def guidance(self, si: int, cfg: float) -> float:
        """CFG weight t in (1 + t) cond - t uncond: zero at the first scale, linear in si."""
        return cfg * self.progress(si)

    def phi_index(self, si: int, phi_count: int) -> int | None:
        """Which shared Φ refines scale si (None: the last scale is added without Φ)."""
        if si == self.num_scales - 1:
            return None
        at = si / (self.num_scales - 1)
        return int(np.argmin(np.abs(phi_ticks(phi_count) - at)))

    def levels(self) -> np.ndarray:
        """Level id of every sequence position: 0 for text, si for the tokens of scale si."""
        return np.repeat(np.arange(self.num_scales), self.step_lengths)
