"""The torch modules Core ML converts, where they differ from the ONNX export wrappers: the KV cache as
Core ML state (one static function per scale), int32 in place of int64 and bool inputs, and resampling
by matrix products (coremltools has no bicubic or area resize)."""

import copy
import dataclasses

import torch
import torch.nn as nn

from hart.components import HARTModel
from hart.export.graphs import GraphSpec
from hart.export.wrappers import holding
from hart.models import Condition
from hart.tokenizer.quantizer import MatrixResampling


class StateCache:
    """KV cache living in the module's buffers, which Core ML turns into model state."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor):
        end = start + keys.shape[2]
        self.keys[layer, :, :, start:end] = keys
        self.values[layer, :, :, start:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class StatefulStep(nn.Module):
    """Scale si of the transformer: static length, writing the cache at its fixed position."""

    def __init__(self, transformer, scale_index: int, rows: int):
        super().__init__()
        self.transformer = transformer
        self.start = transformer.schedule.step_starts[scale_index]
        depth, heads = len(transformer.blocks), transformer.blocks[0].attn.heads
        shape = (depth, rows, heads, transformer.schedule.sequence_length, transformer.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape))
        self.register_buffer("v_cache", torch.zeros(shape))

    def forward(self, x, cond_blocks, cond_head, cos, sin):
        condition = Condition(cond_blocks, cond_head)
        hidden = self.transformer.forward_blocks(x, condition, (cos, sin), StateCache(self.k_cache, self.v_cache),
                                                 self.start)
        return self.transformer.logits(hidden, condition), hidden


class Int32Inputs(nn.Module):
    """Core ML has no int64 or bool inputs: take int32 and convert (ids -> int64, masks -> bool)."""

    def __init__(self, inner: nn.Module, ids: tuple[int, ...] = (), masks: tuple[int, ...] = (), scalars=()):
        super().__init__()
        self.inner, self.ids, self.masks, self.scalars = inner, ids, masks, scalars

    def forward(self, *args):
        args = [a.long() if i in self.ids else a.bool() if i in self.masks else a.reshape(()) if i in self.scalars
                else a for i, a in enumerate(args)]
        return self.inner(*args)


def int32_example(spec: GraphSpec) -> tuple[tuple, dict]:
    """The spec's example inputs with Core ML's int32 in place of int64 and bool, scalars as [1]."""
    ids = tuple(i for i, a in enumerate(spec.example) if a.dtype == torch.int64)
    masks = tuple(i for i, a in enumerate(spec.example) if a.dtype == torch.bool)
    scalars = tuple(i for i, a in enumerate(spec.example) if a.dim() == 0)
    example = tuple(a.to(torch.int32) if i in ids + masks else a.reshape(1) if i in scalars else a
                    for i, a in enumerate(spec.example))
    return example, {"ids": ids, "masks": masks, "scalars": scalars}


def with_matrix_resampling(model: HARTModel) -> HARTModel:
    """The model with its quantizer resampling by matrix products (coremltools has no bicubic or area
    resize), sharing every weight with `model`: a deep copy would hold a second 2.8 GB at 0.7B."""
    quantizer = copy.copy(model.tokenizer.quantizer)
    quantizer.resampling = MatrixResampling(model.config.patch_nums)
    tokenizer = holding(model.tokenizer, *dict(model.tokenizer.named_children()))
    tokenizer.quantizer = quantizer  # replaces it in the view only
    return dataclasses.replace(model, tokenizer=tokenizer)
