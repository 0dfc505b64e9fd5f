"""A stand-in text encoder for random-weight runs of presets whose real encoder is not available.

It returns seeded normal features of the right shape (hart.portable.random_text), so timing and memory
runs of e.g. the 0.7B preset need no 1.5B-parameter Qwen2. Never used for real weights.
"""

import torch

from hart.config import TextEncoderConfig
from hart.portable.random_text import random_text_features
from hart.text.base import TextContext, positions_from_mask


class RandomTextEncoder:
    def __init__(self, config: TextEncoderConfig):
        self.config = config

    def encode(self, prompts: list[str]) -> TextContext:
        hidden, mask = random_text_features(prompts, self.config.max_tokens, self.config.dim)
        mask = torch.from_numpy(mask)
        return TextContext(torch.from_numpy(hidden), mask, positions_from_mask(mask))
