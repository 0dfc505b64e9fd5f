"""FastVAR's cached token pruning (hart.approximations.pruned_scales), as pure tensor functions.

A large scale mostly refines what the previous scale already drew, so only its "pivotal" tokens run through
the transformer: those whose input is furthest from the scale's mean input (FastVAR's DC-based proxy for
high-frequency content). The pruned tokens' hidden states are restored from the previous scale's, upsampled
to this scale's grid (FastVAR's cached token restoration).
"""

import torch
import torch.nn.functional as F


def pivotal_tokens(x: torch.Tensor, kept: int) -> torch.Tensor:
    """x [R, L, C] a scale's input tokens -> [R, kept] int64: per row, the `kept` tokens furthest (L2) from
    the row's mean token, in ascending token order (so the kept tokens keep their raster order)."""
    score = (x.float() - x.float().mean(dim=1, keepdim=True)).square().sum(dim=-1)  # [R, L]
    return score.topk(kept, dim=1).indices.sort(dim=1).values


def take_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [R or 1, L, C], index [R, k] -> [R, k, C]: each row's chosen tokens (a table of one row serves all)."""
    x = x.expand(len(index), -1, -1)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def restore(previous: torch.Tensor, size: int, index: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """previous [R, m*m, C] the last scale's hidden states, kept [R, k, C] this scale's at `index` [R, k]
    -> [R, size*size, C]: the kept tokens' own states, the others the previous grid upsampled (bilinear)."""
    rows, tokens, channels = previous.shape
    side = int(round(tokens ** 0.5))
    grid = previous.transpose(1, 2).reshape(rows, channels, side, side)
    upsampled = F.interpolate(grid.float(), size=(size, size), mode="bilinear", align_corners=False)
    upsampled = upsampled.to(kept.dtype).flatten(2).transpose(1, 2)  # [R, size*size, C]
    return upsampled.scatter(1, index[..., None].expand(-1, -1, channels), kept)
