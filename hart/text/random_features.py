"""A stand-in text encoder for random-weight runs of presets whose real encoder is not available.

It returns seeded normal features of the right shape (seed from the prompt's SHA-256), so timing
and memory runs of e.g. the 0.7B preset need no 1.5B-parameter Qwen2. Never used for real weights.
"""

import hashlib

import torch

from hart.config import TextEncoderConfig
from hart.portable import rng
from hart.text.base import TextContext, check_prompts, positions_from_mask


class RandomTextEncoder:
    def __init__(self, config: TextEncoderConfig):
        self.config = config

    def encode(self, prompts: list[str]) -> TextContext:
        t, d = self.config.max_tokens, self.config.dim
        hidden, masks = [], []
        for prompt in check_prompts(prompts):
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
            hidden.append(torch.from_numpy(rng.normal(seed, 0, t * d)).view(t, d))
            real = min(len(prompt.split()) + 1, t)
            masks.append(torch.arange(t) < real)
        mask = torch.stack(masks)
        return TextContext(torch.stack(hidden), mask, positions_from_mask(mask))
