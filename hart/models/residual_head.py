"""The residual diffusion head: MAR's MLP with AdaLN, applied to every last-scale token on its own.

It denoises the continuous residual (the part of the latent the discrete codes miss) conditioned on
the transformer's hidden state of that token. It predicts noise eps and a variance interpolation
v in [-1, 1] (IDDPM's learned range). The loop over diffusion steps lives in sampling/residual.py.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hart.config import HARTConfig

TIME_FREQUENCIES = 256


def timestep_embedding(timesteps: torch.Tensor, dim: int = TIME_FREQUENCIES, max_period: float = 10000.0
                       ) -> torch.Tensor:
    """Sinusoidal embedding [N, dim] of (original, 0..999) timesteps, cosines first then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    angles = timesteps[:, None].float() * freqs[None]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaln = nn.Linear(width, 3 * width)  # order: shift, scale, gate

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaln(F.silu(y)).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class ResidualHead(nn.Module):
    def __init__(self, config: HARTConfig):
        super().__init__()
        width, latent = config.residual_head.width, config.tokenizer.latent_channels
        self.latent_channels = latent
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FREQUENCIES, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_proj = nn.Linear(config.transformer.width, width)
        self.input_proj = nn.Linear(latent, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(config.residual_head.depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_adaln = nn.Linear(width, 2 * width)  # order: shift, scale
        self.final_proj = nn.Linear(width, 2 * latent)  # [eps, variance interpolation]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MAR's initialisation: xavier linears, small time MLP, zero modulation and output layers."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.time_mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_mlp[2].weight, std=0.02)
        for layer in [block.adaln for block in self.blocks] + [self.final_adaln, self.final_proj]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x [N, C_vae] noisy residual, timesteps [N] original step numbers, cond [N, C] -> [N, 2 C_vae]."""
        y = self.time_mlp(timestep_embedding(timesteps).to(x.dtype)) + self.cond_proj(cond)
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_adaln(F.silu(y)).chunk(2, dim=-1)
        return self.final_proj(modulate(self.final_norm(h), shift, scale))
