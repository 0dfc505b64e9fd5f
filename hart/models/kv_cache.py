"""Key/value caches for scale-by-scale decoding.

`StaticKVCache` preallocates every layer's buffers for the whole sequence and writes each step's
keys and values at their positions, so shapes never change (friendly to CUDA graphs and export).
An exporter can pass any object with the same `write` method, e.g. one that concatenates an
explicit past with the new entries and records the result as the graph's "present" output.
"""

from typing import Protocol

import torch


class KVCache(Protocol):
    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys/values [B, H, L, D] at positions start..start+L; return everything up to there."""
        ...


class StaticKVCache:
    def __init__(self, layers: int, batch: int, heads: int, max_length: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (batch, heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[2]

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; step needs {end}")
        self.keys[layer][:, :, start:end] = keys
        self.values[layer][:, :, start:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
