"""The set of networks one HART model consists of, built from a config (no I/O here)."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from hart.config import HARTConfig
from hart.models import HARTTransformer, ResidualHead
from hart.text import RandomTextEncoder, TextEncoder, WordTextEncoder
from hart.tokenizer import HybridTokenizer

# Components with weights of their own, in the order they run; each is saved as <name>.safetensors.
WEIGHTED_COMPONENTS = ("text_encoder", "transformer", "residual_head", "tokenizer")


@dataclass
class HARTModel:
    config: HARTConfig
    text_encoder: TextEncoder
    transformer: HARTTransformer
    residual_head: ResidualHead
    tokenizer: HybridTokenizer
    random_weights: bool = False  # built from a preset without trained weights

    def networks(self) -> dict[str, nn.Module]:
        """The components that are torch modules (the Qwen2 encoder lives in transformers)."""
        found = {name: getattr(self, name) for name in WEIGHTED_COMPONENTS}
        return {name: module for name, module in found.items() if isinstance(module, nn.Module)}

    def parameter_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in module.parameters()) for name, module in self.networks().items()}

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "HARTModel":
        """Move every network; the quantizer's codebook and Φ stay float32 (the latent bookkeeping)."""
        for module in self.networks().values():
            module.to(device=device, dtype=dtype)
        self.tokenizer.quantizer.to(dtype=torch.float32)
        return self

    def eval(self) -> "HARTModel":
        for module in self.networks().values():
            module.eval().requires_grad_(False)
        return self


def build_networks(config: HARTConfig, device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """Freshly initialised networks (device "meta" builds shapes only, for counting and loading)."""
    with torch.device(device):
        networks: dict[str, nn.Module] = {
            "transformer": HARTTransformer(config),
            "residual_head": ResidualHead(config),
            "tokenizer": HybridTokenizer(config),
        }
        if config.text.kind == "words":
            networks["text_encoder"] = WordTextEncoder(config.text)
    return networks


def assemble(config: HARTConfig, networks: dict[str, nn.Module], text_encoder: TextEncoder | None = None,
             random_weights: bool = False) -> HARTModel:
    if text_encoder is None:
        text_encoder = networks.get("text_encoder") or RandomTextEncoder(config.text)
    return HARTModel(config, text_encoder, networks["transformer"], networks["residual_head"],
                     networks["tokenizer"], random_weights)


def count_parameters(config: HARTConfig) -> dict[str, int]:
    """Parameters per component, without allocating weights (built on the meta device)."""
    return {name: sum(p.numel() for p in module.parameters())
            for name, module in build_networks(config, "meta").items()}
