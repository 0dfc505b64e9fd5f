"""The text prefix of a generation (scale 0: the prompt's text tokens through every block, for the
conditional and the unconditional rows of classifier-free guidance), computed once per distinct row.

The loop (hart/loop.py) asks a Prefix which prompts to encode and which rows to condition, and lets it
run the text step; everything else about the order of stages stays in the loop.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PrefixRows:
    """Which rows a shared text prefix computes (see Prefix). k = rows computed now, R = 2B."""

    rows: np.ndarray  # [k] int: the batch row whose condition each computed row has
    index: np.ndarray  # [R] int: batch row r is row index[r] of (the computed rows, then the kept ones)
    keep: np.ndarray  # [j] int: computed rows to hand back for later calls (the unconditional one, once)


class Prefix:
    """The text prefix (scale 0) computed once per distinct row: the images of one prompt share its
    conditional row, and the unconditional row, the same for every prompt, is computed once per loop and
    kept (backend state: its KV rows and last hidden state). The rows computed are [cond of each distinct
    prompt; uncond], the unconditional one left out once kept; the backend's text_step expands them to
    the R = 2B rows of the batch and runs everything that mixes rows (the condition's modulation, the
    logits head) on all R, so the numbers are those of computing every row.
    A backend that does not share prefixes (shares_prefix False) computes all R rows with step()."""

    def __init__(self, prompts: list[str], shared: bool, kept: Any | None):
        self.shared, self.kept = shared, kept if shared else None
        self.prompts = list(dict.fromkeys(prompts)) if shared else prompts
        if not shared:
            return
        distinct, batch = len(self.prompts), len(prompts)
        index = np.concatenate([[self.prompts.index(p) for p in prompts], np.full(batch, distinct)]).astype(np.int64)
        computed = distinct + (self.kept is None)
        self.plan = PrefixRows(np.array([np.flatnonzero(index == j)[0] for j in range(computed)], dtype=np.int64),
                               index, np.array([distinct] if self.kept is None else [], dtype=np.int64))

    def rows(self, ops, features: Any, mask: np.ndarray, positions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """The 2U guided rows of the distinct prompts -> the U + 1 rows to condition (all, unshared)."""
        if not self.shared:
            return features, mask, positions
        keep = np.arange(len(self.prompts) + 1)  # [cond_0 .. cond_U-1, the first uncond row]
        return ops.take(features, keep), mask[keep], positions[keep]

    def step(self, backend, x: Any, condition: Any, positions: np.ndarray) -> tuple[Any, Any, Any, np.ndarray]:
        """The text step -> logits [R, 1, V], hidden (None when shared: scale 0's is never used), and the
        condition and positions of the batch's R rows."""
        if not self.shared:
            logits, hidden = backend.step(0, x, condition, backend.rope(0, positions))
            return logits[:, -1:], hidden, condition, positions  # the first token: the last text position
        computed, index = np.arange(len(self.plan.rows)), self.plan.index
        condition = backend.take_condition(condition, index)
        logits, kept = backend.text_step(backend.ops.take(x, computed), condition,
                                         backend.rope(0, positions[computed]), self.plan, self.kept)
        self.kept = self.kept if self.kept is not None else kept
        return logits, None, condition, positions[index]
