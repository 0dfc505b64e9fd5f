"""Export-only modules that fix each graph's inputs and outputs; they reuse the models' code.

Graphs of one export (B prompts, R = 2B guided rows, T text tokens, L new tokens, P cached tokens):
    text_encoder  ids [B, T] int64, mask [B, T] bool            -> hidden [B, T, D_txt]
    condition     hidden [R, T, D_txt], mask [R, T] bool         -> tokens [R, T, C], cond_blocks, cond_head [R, C]
    step          x [R, L, C], cond_blocks, cond_head, cos, sin [R, L, hd],
                  past_k, past_v [depth, R, H, P, hd]            -> logits [R, L, V], hidden [R, L, C],
                                                                    present_k, present_v [depth, R, H, P+L, hd]
    update_<si>   f_hat [B, C_vae, N, N], ids [B, n*n]            -> f_hat, next_x [R, n'*n', C]   (si < K-1)
    update_<K-1>  f_hat, ids [B, N*N], residual [B, N*N, C_vae]   -> f_hat                         (no Φ)
    residual      hidden [R, N*N, C], ids [B, N*N], noise [S, B*N*N, C_vae], guidance []
                                                                  -> residual [B, N*N, C_vae]      (S steps unrolled)
    decoder       f_hat [B, C_vae, N, N]                          -> image [B, 3, H, W] in [0, 1]
    encoder       image [B, 3, H, W] in [0, 1]                    -> ids [B, sum n*n] (scales in order),
                                                                    residual [B, N*N, C_vae]   (for editing)
"""

import copy

import torch
import torch.nn as nn

from hart.models import Condition, HARTTransformer, ResidualHead
from hart.sampling import ResidualSampler
from hart.text.words import WordTextEncoder
from hart.tokenizer import HybridTokenizer
from hart.tokenizer.quantizer import tokens_to_grid


def holding(module: nn.Module, *children: str) -> nn.Module:
    """A shallow copy of `module` that holds only the named child modules (same weights, same names).

    torch.export lifts every parameter of the module it is given into the graph, and coremltools turns
    each one into a constant before dropping the unused ones: a small graph holding the whole 0.7B
    transformer converted 2.8 GB of weights it never reads, and ran out of memory on a 24 GB machine.
    """
    view = copy.copy(module)
    view._modules = {name: module._modules[name] for name in children if name in module._modules}  # a new dict
    return view


TRANSFORMER_EMBEDDINGS = ("latent_in", "context_norm", "context_in", "level_embed", "residual_norm")


class ConcatCache:
    """A KV cache as explicit graph I/O: the new keys/values are appended to the past ones."""

    def __init__(self, past_keys: torch.Tensor, past_values: torch.Tensor):
        self.past_keys, self.past_values = past_keys, past_values
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor):
        self.keys.append(torch.cat((self.past_keys[layer], keys), dim=2))
        self.values.append(torch.cat((self.past_values[layer], values), dim=2))
        return self.keys[-1], self.values[-1]


class TextEncoderGraph(nn.Module):
    def __init__(self, encoder: WordTextEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids, mask)


class ConditionGraph(nn.Module):
    def __init__(self, transformer: HARTTransformer):
        super().__init__()
        self.transformer = holding(transformer, *TRANSFORMER_EMBEDDINGS)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor):
        tokens, condition = self.transformer.embed_context(hidden, mask)
        return tokens, condition.blocks, condition.head


class StepGraph(nn.Module):
    def __init__(self, transformer: HARTTransformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, x, cond_blocks, cond_head, cos, sin, past_k, past_v):
        condition = Condition(cond_blocks, cond_head)
        cache = ConcatCache(past_k, past_v)
        hidden = self.transformer.forward_blocks(x, condition, (cos, sin), cache)
        logits = self.transformer.logits(hidden, condition)
        return logits, hidden, torch.stack(cache.keys), torch.stack(cache.values)


class UpdateGraph(nn.Module):
    """Codebook lookup + Φ + bicubic up into f_hat, then the next scale's embedded input."""

    def __init__(self, tokenizer: HybridTokenizer, transformer: HARTTransformer, scale_index: int):
        super().__init__()
        self.quantizer, self.scale_index = tokenizer.quantizer, scale_index
        self.transformer = holding(transformer, *TRANSFORMER_EMBEDDINGS)

    def forward(self, f_hat: torch.Tensor, ids: torch.Tensor):
        codes = tokens_to_grid(self.quantizer.codebook(ids))
        f_hat = f_hat + self.quantizer.scale_contribution(self.scale_index, codes)
        next_input = self.quantizer.next_input(f_hat, self.scale_index + 1)
        next_x = self.transformer.embed_scale(next_input, self.scale_index + 1)
        return f_hat, torch.cat((next_x, next_x))


class FinalUpdateGraph(nn.Module):
    """The last scale: codes plus the continuous residual, added without Φ."""

    def __init__(self, tokenizer: HybridTokenizer):
        super().__init__()
        self.quantizer = tokenizer.quantizer

    def forward(self, f_hat: torch.Tensor, ids: torch.Tensor, residual: torch.Tensor):
        return f_hat + tokens_to_grid(self.quantizer.codebook(ids) + residual)


class ResidualGraph(nn.Module):
    """The residual head's whole sampling loop, its steps unrolled; the noise is an input."""

    def __init__(self, tokenizer: HybridTokenizer, transformer: HARTTransformer, head: ResidualHead,
                 sampler: ResidualSampler):
        super().__init__()
        self.quantizer, self.head, self.sampler = tokenizer.quantizer, head, sampler
        self.transformer = holding(transformer, *TRANSFORMER_EMBEDDINGS)

    def forward(self, hidden, ids, noise, guidance):
        codes = self.quantizer.codebook(ids)
        cond = self.transformer.residual_condition(hidden, torch.cat((codes, codes)))
        residual = self.sampler.sample(self.head, cond.flatten(0, 1), guidance, noise)
        return residual.view(ids.shape[0], ids.shape[1], -1)


class DecoderGraph(nn.Module):
    def __init__(self, tokenizer: HybridTokenizer):
        super().__init__()
        self.tokenizer = holding(tokenizer, "post_quant_conv", "decoder")

    def forward(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode_latent(f_hat)


class EncoderGraph(nn.Module):
    """The tokenizer's encoder and multi-scale quantizer (editing keeps these ids outside the mask)."""

    def __init__(self, tokenizer: HybridTokenizer):
        super().__init__()
        self.tokenizer = holding(tokenizer, "encoder", "quant_conv", "quantizer")

    def forward(self, image: torch.Tensor):
        tokens = self.tokenizer.encode(image)
        return torch.cat(tokens.ids, dim=1), tokens.residual


class QuantizeGraph(nn.Module):
    """The multi-scale quantizer alone: a latent -> ids of every scale and the residual (a canvas window
    re-quantizes the part of its latent that is already drawn, with no pixel round trip)."""

    def __init__(self, tokenizer: HybridTokenizer):
        super().__init__()
        self.tokenizer = holding(tokenizer, "quantizer")

    def forward(self, f_hat: torch.Tensor):
        ids, residual = self.tokenizer.quantizer.encode(f_hat)
        return torch.cat(ids, dim=1), residual
