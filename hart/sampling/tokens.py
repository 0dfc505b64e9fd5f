"""Torch side of token sampling: classifier-free guidance, an on-device top-k pre-filter, and the
portable sampler (hart.portable.sampling) with the portable RNG, so every backend draws alike."""

from dataclasses import dataclass

import numpy as np
import torch

from hart.portable import rng
from hart.portable.sampling import filter_logits, gumbel_weights, sample_categorical


def guide(logits: torch.Tensor, guidance: float) -> torch.Tensor:
    """[2B, L, V] (conditional rows first) -> (1 + t) cond - t uncond, [B, L, V]."""
    half = logits.shape[0] // 2
    return (1 + guidance) * logits[:half] - guidance * logits[half:]


@dataclass
class SampledScale:
    ids: torch.Tensor  # [B, n] int64 vocabulary ids
    soft_weights: torch.Tensor | None = None  # [B, n, K] Gumbel-softmax weights over `candidates`
    candidates: torch.Tensor | None = None  # [B, n, K] vocabulary ids the weights refer to


def sample_scale(logits: torch.Tensor, seeds: list[int], scale_index: int, top_k: int, top_p: float,
                 temperature: float, gumbel_ratio: float | None = None) -> SampledScale:
    """Sample ids for one scale from guided float32 logits [B, n, V].

    With top-k on, only the k best candidates per token leave the device (the exact result of the
    full-row rule up to ties at the k-th value). `gumbel_ratio` (HART's progress si / (K-1)) turns
    on Gumbel-softmax weights for soft codes.
    """
    batch, tokens, vocab = logits.shape
    if 0 < top_k < vocab:
        values, candidates = logits.topk(top_k, dim=-1)
        candidates_np = candidates.cpu().numpy()
    else:
        values, candidates, candidates_np = logits, None, None
    values_np = values.float().cpu().numpy().reshape(batch * tokens, -1)
    ids_np = candidates_np.reshape(batch * tokens, -1) if candidates_np is not None else None
    uniforms = rng.token_uniforms(seeds, scale_index, tokens).reshape(-1)
    ids = sample_categorical(values_np, uniforms, top_k, top_p, temperature, ids_np, vocab)
    result = SampledScale(torch.from_numpy(ids).view(batch, tokens).to(logits.device))
    if gumbel_ratio is None:
        return result
    if ids_np is None:
        ids_np = np.broadcast_to(np.arange(vocab), values_np.shape)
    noise = rng.gumbel_uniforms(seeds, scale_index, ids_np.reshape(batch, tokens, -1), vocab)
    weights = gumbel_weights(filter_logits(values_np, top_k, top_p, temperature, vocab),
                             noise.reshape(batch * tokens, -1), gumbel_ratio)
    result.soft_weights = torch.from_numpy(weights.astype(np.float32)).view(batch, tokens, -1).to(logits.device)
    result.candidates = torch.from_numpy(np.ascontiguousarray(ids_np)).view(batch, tokens, -1).to(logits.device)
    return result
