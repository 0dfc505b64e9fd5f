"""Shared fixtures: a small config that exercises every code path in seconds on a CPU."""

import pytest
import torch

from hart.checkpoints import random_model
from hart.config import (HARTConfig, ResidualHeadConfig, SamplingConfig, TextEncoderConfig, TokenizerConfig,
                         TransformerConfig)

SMALL_VOCAB = tuple("a red green blue circle square star on background large small left right top".split())


def small_config(**changes) -> HARTConfig:
    config = HARTConfig(
        name="test-small",
        image_size=64,
        patch_nums=(1, 2, 3, 4),
        text=TextEncoderConfig(kind="words", max_tokens=8, dim=32, vocab=SMALL_VOCAB, layers=1, heads=2),
        transformer=TransformerConfig(depth=2, width=128, heads=2),
        residual_head=ResidualHeadConfig(width=64, depth=2),
        tokenizer=TokenizerConfig(vocab_size=64, latent_channels=8, channels=32, channel_mult=(1, 1, 2, 2, 4)),
        sampling=SamplingConfig(cfg=2.5, top_k=(0, 32, 16, 16)),
    )
    return config.replace(**changes) if changes else config


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Overwrite every parameter with seeded noise, so no path is trivially zero (zero-init heads etc.).

    Norm-like weights (1-D parameters named *weight inside norms) stay near 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(scale * noise)
    return module


@pytest.fixture
def config() -> HARTConfig:
    return small_config()


@pytest.fixture
def model(config):
    """The small model with every parameter randomised (fresh for each test)."""
    built = random_model(config, seed=0)
    for i, module in enumerate(built.networks().values()):
        randomize(module, seed=i)
    return built.eval()


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory):
    """The embedded model exported once per test session in every ONNX precision."""
    from hart.checkpoints import load_pretrained
    from hart.export.capture import auto_processes
    from hart.export.onnx_export import PRECISIONS, export_onnx

    model = load_pretrained("tiny")
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny", PRECISIONS, parity_seeds=20,
                       capture_processes=auto_processes(model))
