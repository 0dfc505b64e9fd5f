"""The KV-cached, scale-by-scale inference equals one block-causal pass over the whole sequence."""

import pytest
import torch

from hart.components import build_networks
from hart.models.kv_cache import StaticKVCache
from hart.text.base import positions_from_mask
from tests.conftest import randomize, small_config


def cached_pass(transformer, context, mask, positions, scale_inputs):
    """Run the scales one by one through a static cache; return every scale's logits and the last hidden."""
    schedule, patch_nums = transformer.schedule, transformer.patch_nums
    t = transformer.blocks[0].attn
    cache = StaticKVCache(len(transformer.blocks), context.shape[0], t.heads, schedule.sequence_length,
                          transformer.head_dim, torch.float32, "cpu")
    tokens, condition = transformer.embed_context(context, mask)
    offset, logits = 0, []
    for si in range(len(patch_nums)):
        if si == 0:
            x, rope = tokens, transformer.text_rope(positions)
        else:
            n = patch_nums[si] ** 2
            x = transformer.embed_scale(scale_inputs[:, offset:offset + n], si)
            rope = transformer.scale_rope([si], positions[:, -1])
            offset += n
        hidden = transformer.forward_blocks(x, condition, rope, cache, schedule.step_starts[si])
        logits.append(transformer.logits(hidden[:, -1:] if si == 0 else hidden, condition))
    return torch.cat(logits, 1), hidden


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_kv_cached_decoding_equals_block_causal_attention(pooling):
    config = small_config()
    config = config.replace(transformer=config.transformer.__class__(depth=2, width=128, heads=2, cond_pooling=pooling))
    transformer = randomize(build_networks(config)["transformer"]).eval()
    generator = torch.Generator().manual_seed(0)
    batch, t = 3, config.text.max_tokens
    context = torch.randn(batch, t, config.text.dim, generator=generator)
    mask = torch.arange(t)[None] < torch.tensor([[3], [8], [1]])  # right padding, as real prompts
    positions = positions_from_mask(mask)
    length = sum(p * p for p in config.patch_nums[1:])
    scale_inputs = torch.randn(batch, length, config.tokenizer.latent_channels, generator=generator)
    with torch.no_grad():
        full_logits, full_last = transformer.forward_train(context, mask, positions, scale_inputs)
        cached_logits, cached_last = cached_pass(transformer, context, mask, positions, scale_inputs)
    assert full_logits.shape == (batch, sum(p * p for p in config.patch_nums), config.tokenizer.vocab_size)
    assert (full_logits - cached_logits).abs().max() <= 1e-5
    assert (full_last - cached_last).abs().max() <= 1e-5


def test_block_causal_mask_levels():
    transformer = build_networks(small_config(), "meta")["transformer"]
    mask = transformer.block_causal_mask(torch.device("cpu"))
    t = 8
    assert mask.shape == (t + 4 + 9 + 16,) * 2
    assert mask[:t, :t].all() and not mask[:t, t:].any()  # text sees all text, nothing after
    assert mask[t + 4:t + 13, :t + 13].all() and not mask[t + 4:t + 13, t + 13:].any()


def test_padding_is_not_masked_in_the_transformer():
    """HART attends to pad tokens: changing a pad feature changes the image logits."""
    config = small_config()
    transformer = randomize(build_networks(config)["transformer"]).eval()
    generator = torch.Generator().manual_seed(1)
    context = torch.randn(1, 8, config.text.dim, generator=generator)
    mask = torch.arange(8)[None] < 3
    inputs = torch.randn(1, 29, config.tokenizer.latent_channels, generator=generator)
    with torch.no_grad():
        before, _ = transformer.forward_train(context, mask, positions_from_mask(mask), inputs)
        context[0, 6] += 1.0
        after, _ = transformer.forward_train(context, mask, positions_from_mask(mask), inputs)
    assert (before - after).abs().max() > 1e-4
