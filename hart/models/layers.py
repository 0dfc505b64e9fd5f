"""Building blocks of the HART transformer: RMSNorm, attention with RoPE, SwiGLU, AdaLN block/head.

Shapes: B batch, L tokens, C width, H heads, D head size, S cached positions.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from hart.models.kv_cache import KVCache
from hart.models.rope import apply_rope


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, then scaled by a learned weight in the input dtype.

    This is the arithmetic of HART's fused CUDA kernel. Note HART's checkpoints carry trained weights
    here even where its code says `elementwise_affine=False` (the fused class ignores that flag).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight.to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with q/v biases (no k bias), RoPE on q and k, and a KV cache."""

    def __init__(self, width: int, heads: int, scale: float, layer_index: int):
        super().__init__()
        self.heads, self.scale, self.layer_index = heads, scale, layer_index
        self.qkv = nn.Linear(width, 3 * width, bias=False)  # rows: q, k, v; heads contiguous
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: KVCache | None = None,
                start: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D]
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.write(self.layer_index, start, k, v)  # [B, H, S, D]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.out(out.transpose(1, 2).reshape(batch, length, width))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm attention + SwiGLU, both modulated by a pooled text condition (VAR-style AdaLN).

    One RMSNorm weight is shared by the two sub-layers. The modulation comes out of `adaln` in the
    order gamma1, gamma2, scale1, scale2, shift1, shift2 (the released weights depend on it).
    """

    def __init__(self, width: int, heads: int, mlp_hidden: int, attn_scale: float, norm_eps: float,
                 layer_index: int):
        super().__init__()
        self.norm = RMSNorm(width, norm_eps)
        self.attn = Attention(width, heads, attn_scale, layer_index)
        self.mlp = SwiGLU(width, mlp_hidden)
        self.adaln = nn.Linear(width, 6 * width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                cache: KVCache | None = None, start: int = 0, mask: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, C], cond [B, C] (pooled text condition) -> [B, L, C]; with rows [B'], x holds only those
        rows of cond's batch (the modulation is computed for all of cond: small-M matmuls are not batch
        invariant on CPU, so a subset would change the last bits)."""
        modulation = self.adaln(F.silu(cond))
        if rows is not None:
            modulation = modulation[rows]
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (
            modulation.view(-1, 1, 6, x.shape[-1]).unbind(2))  # each [B, 1, C]
        attn_in = self.norm(x).mul(scale1.add(1)).add_(shift1)
        x = x + self.attn(attn_in, rope, cache, start, mask).mul_(gamma1)
        mlp_in = self.norm(x).mul(scale2.add(1)).add_(shift2)
        return x + self.mlp(mlp_in).mul(gamma2)


class AdaLNHeadNorm(nn.Module):
    """RMSNorm modulated by the (always max-pooled) text condition, before the logits head."""

    def __init__(self, width: int, norm_eps: float):
        super().__init__()
        self.norm = RMSNorm(width, norm_eps)
        self.adaln = nn.Linear(width, 2 * width)  # order: scale, shift

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.adaln(F.silu(cond)).view(-1, 1, 2, x.shape[-1]).unbind(2)
        return self.norm(x).mul(scale.add(1)).add_(shift)
