"""Token sampling by inverse CDF on the filtered distribution (numpy, shared by every backend).

Given one row of (guided) logits z over the vocabulary and one uniform u from the portable RNG:

    1. temperature: z = z / temperature                                   (float32)
    2. top-k (0 < k < V): keep entries with z >= the k-th largest value   (HART keeps ties)
    3. top-p (p > 0), HART's rule: sort the kept entries ascending, take their softmax (float64) and
       its running sum, drop every entry whose running sum is <= 1 - p; the largest always stays
    4. weights w = exp(z - max z) in float64 over the kept entries, in ascending vocabulary order;
       c = running sum of w; the token is the first entry with c > u * c[-1]

A caller may pass only candidate columns (for example the device's top-k) together with their
vocabulary ids; the result is the same as on the full row whenever every dropped entry would have
been filtered anyway. Exact ties at the k-th value are the only case where a pre-filter that keeps
exactly k entries can differ, which is why the contract says "up to floating-point ties".

Also here: HART's optional Gumbel-softmax smoothing ("more_smooth"), as weights over the kept entries.
"""

import numpy as np


def _sorted_by_vocabulary(logits: np.ndarray, vocab_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if vocab_ids is None:
        return logits, np.broadcast_to(np.arange(logits.shape[-1]), logits.shape)
    order = np.argsort(vocab_ids, axis=-1, kind="stable")
    return np.take_along_axis(logits, order, -1), np.take_along_axis(vocab_ids, order, -1)


def filter_logits(logits: np.ndarray, top_k: int, top_p: float, temperature: float = 1.0,
                  vocab_size: int | None = None) -> np.ndarray:
    """Steps 1-3: a float64 copy of `logits` [N, K] with filtered entries set to -inf.

    `vocab_size` is the full vocabulary when `logits` holds only candidate columns (top-k off when
    k >= the vocabulary, as in HART's `topk` call)."""
    z = np.asarray(logits, dtype=np.float32)
    if temperature != 1.0:
        z = z / np.float32(temperature)
    z = z.astype(np.float64)
    vocab = vocab_size or z.shape[-1]
    if 0 < top_k < vocab:
        k = min(top_k, z.shape[-1])
        kth = np.partition(z, z.shape[-1] - k, axis=-1)[..., z.shape[-1] - k, None]
        z = np.where(z < kth, -np.inf, z)
    if top_p > 0:
        order = np.argsort(z, axis=-1, kind="stable")
        ascending = np.take_along_axis(z, order, -1)
        probs = np.exp(ascending - ascending[..., -1:])
        probs /= probs.sum(-1, keepdims=True)
        drop_sorted = np.cumsum(probs, -1) <= 1 - top_p
        drop_sorted[..., -1] = False
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        z = np.where(drop, -np.inf, z)
    return z


def sample_categorical(logits: np.ndarray, uniforms: np.ndarray, top_k: int = 0, top_p: float = 0.0,
                       temperature: float = 1.0, vocab_ids: np.ndarray | None = None,
                       vocab_size: int | None = None) -> np.ndarray:
    """Sample one token per row of `logits` [N, K] with `uniforms` [N] in [0, 1).

    `vocab_ids` [N, K] maps candidate columns to vocabulary ids (None: column j is id j).
    Returns int64 vocabulary ids [N].
    """
    logits, ids = _sorted_by_vocabulary(np.asarray(logits), vocab_ids)
    z = filter_logits(logits, top_k, top_p, temperature, vocab_size)
    weights = np.exp(z - z.max(-1, keepdims=True))
    cdf = np.cumsum(weights, -1)
    target = np.asarray(uniforms, dtype=np.float64)[:, None] * cdf[:, -1:]
    column = (cdf > target).argmax(-1)
    return np.take_along_axis(ids, column[:, None], -1)[:, 0].astype(np.int64)


def gumbel_weights(filtered: np.ndarray, uniforms_open: np.ndarray, ratio: float) -> np.ndarray:
    """HART's "more_smooth" soft one-hot: softmax((z (1 + ratio) + g) / tau), g = -log(-log u).

    `filtered` [N, K] are filter_logits() outputs (-inf where dropped), `uniforms_open` [N, K] the
    Gumbel stream at those (token, vocabulary id) draws; tau = max(0.27 (1 - 0.95 ratio), 0.005).
    """
    tau = max(0.27 * (1 - 0.95 * ratio), 0.005)
    gumbel = -np.log(-np.log(np.asarray(uniforms_open, dtype=np.float64)))
    scores = (filtered * (1 + ratio) + gumbel) / tau
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)
