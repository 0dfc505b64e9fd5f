"""Every config field's range: positive and finite, and at most a generous upper bound.

The bounds are far above every preset (the 0.7B model uses depth 16, width 1536, vocabulary 4096) but
finite, so an absurd config.json or manifest is refused by name before anything is allocated, instead
of hanging or exhausting memory while building modules. Imports no torch.
"""

import math

from hart.errors import ConfigError

# "section.field" -> the largest value accepted
UPPER_BOUNDS: dict[str, float] = {
    "text.max_tokens": 4096, "text.dim": 16384, "text.layers": 64, "text.heads": 256,
    "transformer.depth": 256, "transformer.width": 16384, "transformer.heads": 256, "transformer.mlp_ratio": 16,
    "transformer.rope_theta": 1e9, "transformer.attn_scale": 16, "transformer.norm_eps": 1,
    "residual_head.width": 16384, "residual_head.depth": 256, "residual_head.sampling_steps": 1000,
    "residual_head.train_steps": 100000, "residual_head.latent_scale": 100,
    "tokenizer.vocab_size": 2**20, "tokenizer.latent_channels": 1024, "tokenizer.channels": 4096,
    "tokenizer.res_blocks": 16, "tokenizer.phi_count": 64, "tokenizer.quant_conv_kernel": 15,
    "tokenizer.norm_groups": 1024, "tokenizer.channel_mult": 64,
    "sampling.cfg": 100, "sampling.temperature": 100, "sampling.residual_guidance": 100,
    "config.scales": 64, "config.image_size": 16384, "text.vocab": 10**6,
}


def fail(section: str, name: str, message: str) -> None:
    raise ConfigError(f"{section}.{name} {message}")


def require_positive(section: str, **values: float) -> None:
    """Each value must be > 0, finite and at most its UPPER_BOUNDS entry (if it has one)."""
    for name, value in values.items():
        if not value > 0 or not math.isfinite(value):  # also NaN, which compares false to everything
            fail(section, name, f"must be a positive finite number (got {value})")
        require_at_most(section, name, value)


def require_at_most(section: str, name: str, value: float) -> None:
    bound = UPPER_BOUNDS.get(f"{section}.{name}")
    if bound is not None and not value <= bound:
        fail(section, name, f"must be at most {bound:g} (got {value:g}); larger values are not a model this "
                            "project can build")
