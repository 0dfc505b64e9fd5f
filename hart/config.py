"""Model configuration: frozen dataclasses, named presets and a strict JSON round-trip.

Presets are data and the model class is one: `hart-0.7b-1024px` and `tiny` differ only in numbers.
The 0.7B values are those of the released `mit-han-lab/hart-0.7b-1024px` checkpoint (see
research/hart.md §2.1: depth 16, width 1536, 24 heads, 300 Qwen2 context tokens, 14 scales; the
512 px and 256 px presets keep the same transformer and use VAR's 10-scale lists, §2.6).

This module imports no torch, so exported-model runtimes can read configs too. It is longer than
the project's ~300-line norm on purpose: every section's fields, their checks and the presets that
fill them are one table of architecture numbers, read together. The fields' ranges and upper
bounds are hart/config_bounds.py.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hart.config_bounds import UPPER_BOUNDS, fail, require_at_most, require_positive
from hart.errors import ConfigError
from hart.strict import from_plain, read_json_object, to_plain

CONFIG_FORMAT = "hart"
CONFIG_FORMAT_VERSION = 1

TEXT_ENCODER_KINDS = ("qwen2", "words", "random")
POOLING_MODES = ("max", "avg")


@dataclass(frozen=True)
class TextEncoderConfig:
    """The prompt encoder and the context it hands to the transformer.

    kind "qwen2": the official Qwen2-1.5B features (local folder `path`, HART's system prompt).
    kind "words": a small word-level encoder trained with the embedded model (`vocab`, `layers`, `heads`).
    kind "random": a stand-in giving seeded random features, only for random-weight timing runs.
    """

    section: ClassVar[str] = "text"

    kind: str = "qwen2"
    max_tokens: int = 300  # T: context tokens prepended to the image tokens, right-padded
    dim: int = 1536  # D_txt: feature width
    path: str = "text_encoder"  # qwen2: folder, relative to the model folder unless absolute
    system_prompt: bool = True  # qwen2: prepend HART's "Enhanced prompt" instruction
    vocab: tuple[str, ...] = ()  # words: the known words, in id order (ids 0, 1 are pad, unknown)
    layers: int = 0  # words: transformer encoder layers
    heads: int = 0  # words: attention heads

    def __post_init__(self) -> None:
        if self.kind not in TEXT_ENCODER_KINDS:
            fail(self.section, "kind", f"must be one of {', '.join(TEXT_ENCODER_KINDS)} (got {self.kind!r})")
        require_positive(self.section, max_tokens=self.max_tokens, dim=self.dim)
        if self.kind == "words":
            if not self.vocab:
                fail(self.section, "vocab", "must list the known words for kind 'words'")
            require_at_most(self.section, "vocab", len(self.vocab))
            if len(set(self.vocab)) != len(self.vocab):
                fail(self.section, "vocab", "must not repeat a word")
            require_positive(self.section, layers=self.layers, heads=self.heads)
            if self.dim % self.heads:
                fail(self.section, "dim", f"must be divisible by text.heads={self.heads} (got {self.dim})")


@dataclass(frozen=True)
class TransformerConfig:
    """The autoregressive next-scale transformer (Llama-style blocks with AdaLN)."""

    section: ClassVar[str] = "transformer"

    depth: int = 16
    width: int = 1536
    heads: int = 24
    mlp_ratio: float = 4.0  # SwiGLU hidden = round_up_256(width * mlp_ratio * 2/3), as HART
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # HART scales attention logits by attn_scale / sqrt(head_dim) = 0.25 / 8 = 1/32 (not 1/8).
    attn_scale: float = 0.25
    cond_pooling: str = "max"  # how the 300 context tokens are pooled into the blocks' AdaLN input
    context_norm: bool = False  # RMSNorm on the text features before the context projection

    def __post_init__(self) -> None:
        require_positive(self.section, depth=self.depth, width=self.width, heads=self.heads,
                         mlp_ratio=self.mlp_ratio, norm_eps=self.norm_eps, rope_theta=self.rope_theta,
                         attn_scale=self.attn_scale)
        if self.width % self.heads:
            fail(self.section, "width", f"must be divisible by transformer.heads={self.heads} (got {self.width})")
        if self.head_dim % 4:
            fail(self.section, "heads", f"must give a head size divisible by 4 for the 2D RoPE (got {self.head_dim})")
        if self.cond_pooling not in POOLING_MODES:
            fail(self.section, "cond_pooling", f"must be one of {', '.join(POOLING_MODES)} (got {self.cond_pooling!r})")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio * 2 / 3 + 255) // 256 * 256


@dataclass(frozen=True)
class ResidualHeadConfig:
    """The MLP diffusion head that predicts the continuous residual of the last scale."""

    section: ClassVar[str] = "residual_head"

    width: int = 1024
    depth: int = 6
    sampling_steps: int = 8  # respaced from train_steps, as IDDPM's space_timesteps(1000, "8")
    train_steps: int = 1000
    noise_schedule: str = "cosine"
    latent_scale: float = 0.6  # the head works on residual / latent_scale
    clip_denoised: bool = True  # clamp the predicted x0 to [-1, 1] at every step

    def __post_init__(self) -> None:
        require_positive(self.section, width=self.width, depth=self.depth, sampling_steps=self.sampling_steps,
                         train_steps=self.train_steps, latent_scale=self.latent_scale)
        if self.sampling_steps > self.train_steps:
            fail(self.section, "sampling_steps", f"must not exceed train_steps={self.train_steps}")
        if self.noise_schedule != "cosine":
            fail(self.section, "noise_schedule", f"must be 'cosine' (got {self.noise_schedule!r})")


@dataclass(frozen=True)
class TokenizerConfig:
    """The hybrid tokenizer: VQGAN encoder/decoder, multi-scale residual VQ, continuous residual."""

    section: ClassVar[str] = "tokenizer"

    vocab_size: int = 4096
    latent_channels: int = 32
    channels: int = 160
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    res_blocks: int = 2  # per encoder level; the decoder uses one more
    attention: bool = True  # self-attention blocks at the lowest resolution
    mid_attention: bool = True
    phi_count: int = 4  # shared Φ convolutions, picked per scale by ticks
    phi_ratio: float = 0.5  # Φ(h) = (1 - r)·h + r·conv(h)
    quant_conv_kernel: int = 3
    norm_groups: int = 32  # GroupNorm groups (32 in HART; small tokenizers need fewer)

    def __post_init__(self) -> None:
        require_positive(self.section, vocab_size=self.vocab_size, latent_channels=self.latent_channels,
                         channels=self.channels, res_blocks=self.res_blocks, phi_count=self.phi_count,
                         quant_conv_kernel=self.quant_conv_kernel, norm_groups=self.norm_groups)
        if not self.channel_mult or min(self.channel_mult) <= 0 or len(self.channel_mult) > 8:
            fail(self.section, "channel_mult",
                 f"must be a list of 1 to 8 positive ints (got {list(self.channel_mult)})")
        require_at_most(self.section, "channel_mult", max(self.channel_mult))
        if any((self.channels * m) % self.norm_groups for m in self.channel_mult):
            fail(self.section, "channels", f"times every channel_mult must be divisible by norm_groups="
                                           f"{self.norm_groups} (got {self.channels})")
        if not 0 < self.phi_ratio <= 1:  # NaN fails too
            fail(self.section, "phi_ratio", f"must be in (0, 1] (got {self.phi_ratio})")
        if self.quant_conv_kernel % 2 == 0:
            fail(self.section, "quant_conv_kernel", f"must be odd (got {self.quant_conv_kernel})")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class SamplingConfig:
    """Default sampling settings; every one can be overridden per call."""

    section: ClassVar[str] = "sampling"

    cfg: float = 4.5  # guidance at the last scales; scale si uses cfg * si / (num_scales - 1)
    top_k: tuple[int, ...] = ()  # per scale; 0 keeps the whole vocabulary
    top_p: float = 0.0  # 0 disables nucleus filtering
    temperature: float = 1.0
    gumbel: bool = False  # HART's "more_smooth": Gumbel-softmax soft codes (off for fidelity)
    # The residual head's guidance as a share of the last scale's token guidance. HART uses the same
    # value (1); a small model's head can overshoot under strong guidance, so its card may lower it.
    residual_guidance: float = 1.0

    def __post_init__(self) -> None:
        if not self.cfg >= 0:
            fail(self.section, "cfg", f"must be >= 0 (got {self.cfg})")
        require_at_most(self.section, "cfg", self.cfg)
        require_at_most(self.section, "residual_guidance", self.residual_guidance)
        if any(k < 0 for k in self.top_k):
            fail(self.section, "top_k", f"must be >= 0 at every scale (got {list(self.top_k)})")
        if not 0 <= self.top_p < 1:
            fail(self.section, "top_p", f"must be in [0, 1) (got {self.top_p})")
        require_positive(self.section, temperature=self.temperature)
        if not self.residual_guidance >= 0:
            fail(self.section, "residual_guidance", f"must be >= 0 (got {self.residual_guidance})")


@dataclass(frozen=True)
class HARTConfig:
    """Everything needed to build the models; saved as config.json beside the weights."""

    section: ClassVar[str] = "config"

    name: str
    image_size: int
    patch_nums: tuple[int, ...]
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    residual_head: ResidualHeadConfig = field(default_factory=ResidualHeadConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        pn = self.patch_nums
        if not 2 <= len(pn) <= UPPER_BOUNDS["config.scales"]:
            fail(self.section, "patch_nums", f"must list 2 to {UPPER_BOUNDS['config.scales']:g} scales (got {len(pn)})")
        require_positive(self.section, image_size=self.image_size)
        if pn[0] != 1:
            fail(self.section, "patch_nums", f"must start at 1: the first token comes from the last text position (got {list(pn)})")
        if any(b <= a for a, b in zip(pn, pn[1:])):
            fail(self.section, "patch_nums", f"must be strictly increasing (got {list(pn)})")
        if self.image_size != pn[-1] * self.tokenizer.downsample:
            fail(self.section, "image_size",
                 f"must equal the last scale {pn[-1]} x the tokenizer downsampling {self.tokenizer.downsample} "
                 f"= {pn[-1] * self.tokenizer.downsample} (got {self.image_size})")
        if len(self.sampling.top_k) != len(pn):
            fail("sampling", "top_k", f"must give one value per scale ({len(pn)}), got {len(self.sampling.top_k)}")

    # ----------------------------------------------------------------------------- derived sizes
    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    @property
    def sequence_length(self) -> int:
        """Text tokens plus every scale's tokens except the first (predicted from the last text token)."""
        return self.text.max_tokens + sum(p * p for p in self.patch_nums[1:])

    # ----------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, "format_version": CONFIG_FORMAT_VERSION, **to_plain(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "HARTConfig":
        data = dict(data)
        fmt, version = data.pop("format", CONFIG_FORMAT), data.pop("format_version", CONFIG_FORMAT_VERSION)
        if fmt != CONFIG_FORMAT or version != CONFIG_FORMAT_VERSION:
            raise ConfigError(f"{source} has format {fmt!r} version {version}; expected {CONFIG_FORMAT!r} "
                              f"version {CONFIG_FORMAT_VERSION}")
        try:
            return from_plain(cls, data, source)
        except ConfigError as err:  # a section's own check (e.g. "transformer.depth must be ...") gets the file
            raise ConfigError(str(err) if str(err).startswith(source) else f"{source}: {err}") from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> "HARTConfig":
        path = Path(path)
        return cls.from_dict(read_json_object(path, "a model config.json"), source=str(path))

    def replace(self, **changes: Any) -> "HARTConfig":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------- presets
def hart_top_k(num_scales: int) -> tuple[int, ...]:
    """HART samples with top-k 600 for the first 7 scales and 300 after (hard-coded in the official loop)."""
    return tuple(600 if si < 7 else 300 for si in range(num_scales))


def _hart_0p7b(image_size: int, patch_nums: tuple[int, ...]) -> HARTConfig:
    return HARTConfig(
        name=f"hart-0.7b-{image_size}px",
        image_size=image_size,
        patch_nums=patch_nums,
        sampling=SamplingConfig(cfg=4.5, top_k=hart_top_k(len(patch_nums))),
    )


# Scale lists: HART's 1024 px list (confirmed by the 9750-token mask), VAR's 512 and 256 px lists.
PATCH_NUMS_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

# The caption grammar's words (hart.data.scenes.caption_vocabulary(); a test keeps the two equal),
# written out so the config stays free of the data code.
TINY_VOCAB = tuple(
    "a against an and at background beige big black blue bottom box center circle corner cross diamond disc edge "
    "gray green huge in large left little lower middle near on orange over plus purple red rhombus right side "
    "small square star the tiny top triangle upper white with yellow".split()
)

PRESETS: dict[str, HARTConfig] = {
    "hart-0.7b-1024px": _hart_0p7b(1024, PATCH_NUMS_1024),
    "hart-0.7b-512px": _hart_0p7b(512, PATCH_NUMS_512),
    "hart-0.7b-256px": _hart_0p7b(256, PATCH_NUMS_256),
    # The embedded default: 64 px procedural scenes (f8 tokenizer, the same 8x8 token grid a 128 px f16
    # model has), sized to train on a 2-core CPU and to ship in < 30 MB. At 128 px the tokenizer learned
    # too slowly on that CPU (see hart/assets/tiny/MODEL_CARD.md).
    "tiny": HARTConfig(
        name="tiny",
        image_size=64,
        patch_nums=(1, 2, 3, 4, 6, 8),
        text=TextEncoderConfig(kind="words", max_tokens=24, dim=128, vocab=TINY_VOCAB, layers=2, heads=2),
        transformer=TransformerConfig(depth=6, width=192, heads=3),
        residual_head=ResidualHeadConfig(width=192, depth=3),
        tokenizer=TokenizerConfig(vocab_size=512, latent_channels=16, channels=16, channel_mult=(1, 2, 4, 4),
                                  res_blocks=1, norm_groups=8),
        # chosen on a validation split (MODEL_CARD.md)
        sampling=SamplingConfig(cfg=2.0, top_k=(0,) * 6, residual_guidance=0.15),
    ),
}


def preset(name: str) -> HARTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
