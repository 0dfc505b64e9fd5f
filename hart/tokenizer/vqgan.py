"""The VQGAN-style convolutional encoder and decoder of HART's tokenizer (downsampling f = 2^(levels-1)).

The layout follows the latent-diffusion / VAR autoencoder the released weights were trained with:
levels of ResNet blocks (GroupNorm 32, SiLU, 3x3 conv), self-attention only at the lowest
resolution, a middle Res/Attn/Res stack, and stride-2 / nearest-x2 resampling convolutions.
Module names match the released checkpoint after its "vae." prefix is removed.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from hart.config import TokenizerConfig


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention over all H*W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2)  # [B, 3, 1 head, HW, C]
        out = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # softmax(q k^T / sqrt(C)) v
        return x + self.proj_out(out.squeeze(1).transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as the released weights expect


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """One resolution: `blocks` ResNet blocks, optional attention after each, optional resampling."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, attention: bool,
                 resample: type[nn.Module] | None, resample_attr: str, groups: int):
        super().__init__()
        channels = [in_channels] + [out_channels] * blocks
        self.block = nn.ModuleList(ResnetBlock(a, b, groups) for a, b in zip(channels, channels[1:]))
        self.attn = nn.ModuleList(
            AttentionBlock(out_channels, groups) for _ in range(blocks)) if attention else nn.ModuleList()
        self.resample_attr = resample_attr
        if resample is not None:
            setattr(self, resample_attr, resample(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        resample = getattr(self, self.resample_attr, None)
        return resample(x) if resample is not None else x


class Middle(nn.Module):
    def __init__(self, channels: int, attention: bool, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttentionBlock(channels, groups) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """image [B, 3, H, W] in [-1, 1] -> latent [B, C_vae, H/f, W/f]."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        ch, mult, last = config.channels, config.channel_mult, len(config.channel_mult) - 1
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        ins = (ch,) + tuple(ch * m for m in mult[:-1])
        self.down = nn.ModuleList(
            Level(ins[i], ch * m, config.res_blocks, config.attention and i == last,
                  Downsample if i != last else None, "downsample", config.norm_groups) for i, m in enumerate(mult))
        top = ch * mult[-1]
        self.mid = Middle(top, config.mid_attention, config.norm_groups)
        self.norm_out = group_norm(top, config.norm_groups)
        self.conv_out = nn.Conv2d(top, config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """latent [B, C_vae, h, w] -> image [B, 3, h*f, w*f] (unclamped, nominally [-1, 1])."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        ch, mult, last = config.channels, config.channel_mult, len(config.channel_mult) - 1
        top = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.latent_channels, top, 3, padding=1)
        self.mid = Middle(top, config.mid_attention, config.norm_groups)
        # up[i] works at resolution level i; it runs from the last level down to 0
        outs = [ch * m for m in mult]
        ins = [outs[i + 1] if i < last else top for i in range(len(mult))]
        self.up = nn.ModuleList(
            Level(ins[i], outs[i], config.res_blocks + 1, config.attention and i == last,
                  Upsample if i != 0 else None, "upsample", config.norm_groups) for i in range(len(mult)))
        self.norm_out = group_norm(outs[0], config.norm_groups)
        self.conv_out = nn.Conv2d(outs[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))
