"""The hybrid tokenizer: image <-> (ids per scale, continuous residual) <-> image."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from hart.config import HARTConfig
from hart.tokenizer.quantizer import MultiScaleQuantizer
from hart.tokenizer.vqgan import Decoder, Encoder


@dataclass
class Tokens:
    ids: list[torch.Tensor]  # per scale [B, n*n] int64, row-major
    residual: torch.Tensor  # [B, N*N, C_vae]: what the last scale's codes miss


class HybridTokenizer(nn.Module):
    def __init__(self, config: HARTConfig):
        super().__init__()
        t = config.tokenizer
        self.encoder = Encoder(t)
        self.quant_conv = nn.Conv2d(t.latent_channels, t.latent_channels, t.quant_conv_kernel,
                                    padding=t.quant_conv_kernel // 2)
        self.quantizer = MultiScaleQuantizer(t, config.patch_nums)
        self.post_quant_conv = nn.Conv2d(t.latent_channels, t.latent_channels, t.quant_conv_kernel,
                                         padding=t.quant_conv_kernel // 2)
        self.decoder = Decoder(t)

    def latent(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] in [0, 1] -> latent f [B, C_vae, N, N]."""
        return self.quant_conv(self.encoder(image * 2 - 1))

    def encode(self, image: torch.Tensor) -> Tokens:
        ids, residual = self.quantizer.encode(self.latent(image))
        return Tokens(ids, residual)

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat [B, C_vae, N, N] -> image [B, 3, H, W] in [0, 1]."""
        image = self.decoder(self.post_quant_conv(f_hat.to(self.post_quant_conv.weight.dtype)))
        return (image.clamp(-1, 1) + 1) / 2

    def decode(self, tokens: Tokens, discrete_only: bool = False) -> torch.Tensor:
        """Hybrid decode (codes + residual), or discrete-only decode (codes alone)."""
        residual = None if discrete_only else tokens.residual
        return self.decode_latent(self.quantizer.decode(tokens.ids, residual))
