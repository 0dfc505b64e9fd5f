"""What every text encoder returns (the unconditional rows are defined once, in hart.portable.spec)."""

from dataclasses import dataclass
from typing import Protocol

import torch

from hart.portable.words import check_prompts  # noqa: F401 (re-exported)


@dataclass
class TextContext:
    """Text features handed to the transformer: T tokens per prompt, right-padded, never masked there."""

    hidden: torch.Tensor  # [B, T, D_txt] float32
    mask: torch.Tensor  # [B, T] bool, True for real tokens (used only for "avg" pooling)
    positions: torch.Tensor  # [B, T] int64: cumsum(mask) - 1, so pads repeat the last position

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    def to(self, device: torch.device | str) -> "TextContext":
        return TextContext(self.hidden.to(device), self.mask.to(device), self.positions.to(device))


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(mask.long(), dim=1) - 1


class TextEncoder(Protocol):
    def encode(self, prompts: list[str]) -> TextContext:
        """Encode a batch of prompts; raise PromptError naming the problem for bad prompts."""
        ...
