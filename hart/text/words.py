"""A small word-level text encoder, trained together with the embedded model.

The vocabulary is the caption grammar's words (stored in config.json), so a prompt with a word the
model never saw is refused with a message that names the word, instead of silently becoming noise.
Ids 0 and 1 are reserved for padding and (never produced) unknown words.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from hart.config import TextEncoderConfig
from hart.portable.words import WordTokenizer
from hart.text.base import TextContext, positions_from_mask


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer; padding keys are masked inside the text encoder."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], key_mask [B, 1, 1, T] bool -> [B, T, D]."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class WordTextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.words = WordTokenizer(config.vocab, config.max_tokens)
        self.embed = nn.Embedding(self.words.size, config.dim)
        self.position = nn.Parameter(torch.zeros(config.max_tokens, config.dim))
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer(config.dim, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [B, T], mask [B, T] bool -> features [B, T, D] (pads get features too, as with Qwen)."""
        x = self.embed(ids) + self.position
        key_mask = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.norm(x)

    def encode(self, prompts: list[str]) -> TextContext:
        ids, mask = self.words(prompts)
        device = self.embed.weight.device
        ids, mask = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
        return TextContext(self.forward(ids, mask).float(), mask, positions_from_mask(mask))
