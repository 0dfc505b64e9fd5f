"""HART's hybrid quantizer: VAR's multi-scale residual VQ plus one continuous residual.

Encoding a latent f [B, C, N, N], with f_rest = f and f_hat = 0, for every scale si with size n:
    si < K-1: z = area_down(f_rest, n); ids = nearest codebook rows (squared distance);
              h = Φ_si(bicubic_up(codebook[ids], N)); f_hat += h; f_rest -= h
    si = K-1: ids = nearest rows of f_rest itself; h = codebook[ids] added WITHOUT Φ;
              the continuous residual is r = f_rest - codebook[ids]
so f = Σ_{si<K-1} Φ_si(up(e_si)) + e_last + r exactly; dropping r gives the discrete-only latent.
Φ_si(h) = (1 - ratio) h + ratio conv3x3(h), picked among `phi_count` shared convs by ticks.
Tokens are row-major: token t of an n x n scale is (t // n, t % n).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hart.config import TokenizerConfig
from hart.portable.scales import ScaleSchedule


class Phi(nn.Module):
    """The residual refinement Φ(h) = (1 - r) h + r conv3x3(h) (VAR's quant_resi)."""

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + self.conv(h).mul_(self.ratio)


class InterpolateResampling:
    """Bicubic upsampling and area downsampling with F.interpolate (what HART uses)."""

    def up(self, x: torch.Tensor, size: int) -> torch.Tensor:
        return F.interpolate(x, size=(size, size), mode="bicubic")

    def down(self, x: torch.Tensor, size: int) -> torch.Tensor:
        return F.interpolate(x, size=(size, size), mode="area")


class MatrixResampling:
    """The same two linear maps written as matrix products (out = A x A^T per channel).

    For exporters without bicubic or area resize ops (coremltools 9): each 1-D matrix is obtained by
    resampling the identity with F.interpolate itself, so only the summation order differs."""

    def __init__(self, patch_nums: tuple[int, ...]):
        size = patch_nums[-1]

        def matrix(n: int, m: int, mode: str) -> torch.Tensor:  # maps length n to length m: [m, n]
            eye = torch.eye(n).reshape(n, 1, 1, n)
            return F.interpolate(eye, size=(1, m), mode=mode).reshape(n, m).T.contiguous()

        self.ups = {n: matrix(n, size, "bicubic") for n in patch_nums}
        self.downs = {n: matrix(size, n, "area") for n in patch_nums}

    def up(self, x: torch.Tensor, size: int) -> torch.Tensor:
        matrix = self.ups[x.shape[-1]].to(x)
        return torch.einsum("ih,bchw,jw->bcij", matrix, x, matrix)

    def down(self, x: torch.Tensor, size: int) -> torch.Tensor:
        matrix = self.downs[size].to(x)
        return torch.einsum("ih,bchw,jw->bcij", matrix, x, matrix)


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """[B, n*n, C] row-major tokens -> [B, C, n, n]."""
    n = round(tokens.shape[1] ** 0.5)
    return rearrange(tokens, "b (h w) c -> b c h w", h=n, w=n)


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    return rearrange(grid, "b c h w -> b (h w) c")


class MultiScaleQuantizer(nn.Module):
    def __init__(self, config: TokenizerConfig, patch_nums: tuple[int, ...]):
        super().__init__()
        self.patch_nums = patch_nums
        self.schedule = ScaleSchedule(patch_nums, context_tokens=0)
        self.codebook = nn.Embedding(config.vocab_size, config.latent_channels)
        self.phis = nn.ModuleList(Phi(config.latent_channels, config.phi_ratio) for _ in range(config.phi_count))
        self.resampling: InterpolateResampling | MatrixResampling = InterpolateResampling()

    @property
    def size(self) -> int:
        return self.patch_nums[-1]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z [M, C] -> ids [M] of the nearest codebook rows (squared Euclidean, ties to the lower id)."""
        weight = self.codebook.weight.to(z.dtype)  # encode() keeps the running rest in float32 for any dtype
        distances = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(weight.square(), dim=1)
        distances.addmm_(z, weight.T, alpha=-2.0, beta=1.0)  # float scalars: Core ML types them as the tensor
        return distances.argmin(dim=1)

    def unused_phis(self) -> list[nn.Module]:
        """Φ convs that no scale picks (e.g. with few scales); training freezes them, as DDP requires
        every trainable parameter to receive a gradient. They stay in the state dict for key parity."""
        used = {self.schedule.phi_index(si, len(self.phis)) for si in range(len(self.patch_nums))}
        return [phi for index, phi in enumerate(self.phis) if index not in used]

    def scale_contribution(self, scale_index: int, codes: torch.Tensor) -> torch.Tensor:
        """What scale si adds to f_hat: codes [B, C, n, n] -> [B, C, N, N] (bicubic up + Φ; last: as is)."""
        phi = self.schedule.phi_index(scale_index, len(self.phis))
        if phi is None:
            return codes
        return self.phis[phi](self.resampling.up(codes, self.size))

    def next_input(self, f_hat: torch.Tensor, scale_index: int) -> torch.Tensor:
        """The transformer's input for scale si: f_hat area-downsampled, as tokens [B, n*n, C]."""
        return grid_to_tokens(self.resampling.down(f_hat, self.patch_nums[scale_index]))

    def encode(self, f: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """f [B, C, N, N] -> ids per scale [B, n*n] and the continuous residual [B, N*N, C]."""
        batch = f.shape[0]
        rest = f.detach().float().clone()
        ids_per_scale: list[torch.Tensor] = []
        for si, n in enumerate(self.patch_nums):
            last = si == len(self.patch_nums) - 1
            z = rest if last else self.resampling.down(rest, n)
            ids = self.nearest(grid_to_tokens(z).reshape(-1, z.shape[1])).view(batch, n * n)
            ids_per_scale.append(ids)
            contribution = self.scale_contribution(si, tokens_to_grid(self.codebook(ids)))
            if last:
                residual = grid_to_tokens(rest - contribution)
            rest -= contribution
        return ids_per_scale, residual

    def decode(self, ids_per_scale: list[torch.Tensor], residual: torch.Tensor | None = None) -> torch.Tensor:
        """Compose f_hat [B, C, N, N] from ids per scale (+ the residual [B, N*N, C] if given)."""
        f_hat = torch.zeros(ids_per_scale[0].shape[0], self.codebook.embedding_dim, self.size, self.size,
                            device=self.codebook.weight.device)
        for si, ids in enumerate(ids_per_scale):
            f_hat += self.scale_contribution(si, tokens_to_grid(self.codebook(ids)))
        if residual is not None:
            f_hat += tokens_to_grid(residual)
        return f_hat

    def teacher_forcing_inputs(self, ids_per_scale: list[torch.Tensor]) -> torch.Tensor:
        """The transformer's training inputs for scales 1..K-1, concatenated: [B, L - 1, C]."""
        f_hat = torch.zeros(ids_per_scale[0].shape[0], self.codebook.embedding_dim, self.size, self.size,
                            device=self.codebook.weight.device)
        inputs = []
        for si, ids in enumerate(ids_per_scale[:-1]):
            f_hat = f_hat + self.scale_contribution(si, tokens_to_grid(self.codebook(ids)))
            inputs.append(self.next_input(f_hat, si + 1))
        return torch.cat(inputs, dim=1)

    # ------------------------------------------------------------------------------------ training
    def quantize_for_training(self, f: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """VAR's training pass over every scale, in the inference convention (no Φ on the last scale).

        Returns the straight-through discrete latent (value f_hat, gradient of f), the VQ loss
        mean_si(beta |sg(f_hat_si) - f|^2 + |f_hat_si - sg(f)|^2) (commitment + codebook and Φ) and
        the ids per scale.
        """
        target = f.detach()
        rest, f_hat = target.clone(), torch.zeros_like(target)
        loss = f.new_zeros(())
        ids_per_scale = []
        for si, n in enumerate(self.patch_nums):
            last = si == len(self.patch_nums) - 1
            z = rest if last else self.resampling.down(rest, n)
            ids = self.nearest(grid_to_tokens(z).reshape(-1, z.shape[1])).view(f.shape[0], n * n)
            ids_per_scale.append(ids)
            contribution = self.scale_contribution(si, tokens_to_grid(self.codebook(ids)))
            f_hat = f_hat + contribution
            rest = rest - contribution.detach()
            loss = loss + beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, target)
        straight_through = f_hat.detach() - target + f
        return straight_through, loss / len(self.patch_nums), ids_per_scale

    @torch.no_grad()
    def restart_codes(self, dead: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator) -> int:
        """Move unused codebook rows (`dead` [V] bool) onto random latent vectors `candidates` [M, C]."""
        rows = dead.nonzero().squeeze(1)
        if len(rows) == 0 or len(candidates) == 0:
            return 0
        pick = torch.randint(len(candidates), (len(rows),), generator=generator, device=candidates.device)
        self.codebook.weight[rows] = candidates[pick].to(self.codebook.weight.dtype)
        return len(rows)
