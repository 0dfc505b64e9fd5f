"""The list of graphs one model exports to, with example inputs and symbolic dimensions.

Shared by the ONNX and Core ML exporters: both export the same wrappers with the same I/O names.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from hart.components import HARTModel
from hart.export.wrappers import (ConditionGraph, DecoderGraph, EncoderGraph, FinalUpdateGraph, QuantizeGraph,
                                  ResidualGraph, StepGraph, TextEncoderGraph, UpdateGraph)
from hart.sampling import ResidualSampler

Dim = torch.export.Dim


@dataclass
class GraphSpec:
    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, object] | None] = field(default_factory=dict)
    description: str = ""


def graph_specs(model: HARTModel, batch: int = 2) -> list[GraphSpec]:
    """Every graph of `model`, traced with `batch` prompts (2 * batch guided rows; 2, not 1, so that
    the exporter keeps the batch symbolic).

    Dynamic: the batch ("batch", "rows" = 2 x batch), the step's new and cached token counts
    ("length", "past") and the residual head's token rows ("tokens"); everything else is static.
    """
    config, t = model.config, model.config.transformer
    rows, T, n_last = 2 * batch, config.text.max_tokens, config.latent_size ** 2
    latent, size = config.tokenizer.latent_channels, config.latent_size
    b_dim, r_dim = Dim("batch", min=1, max=256), Dim("rows", min=2, max=512)
    length, past = Dim("length", min=1, max=config.sequence_length), Dim("past", min=1, max=config.sequence_length)
    ids = lambda n: torch.zeros(batch, n, dtype=torch.int64)  # noqa: E731
    f_hat = torch.zeros(batch, latent, size, size)
    specs = []
    if config.text.kind == "words":
        specs.append(GraphSpec(
            "text_encoder", TextEncoderGraph(model.text_encoder),
            (ids(T), torch.ones(batch, T, dtype=torch.bool)), ["ids", "mask"], ["hidden"],
            {"ids": {0: b_dim}, "mask": {0: b_dim}}, "word ids and mask -> text features"))
    specs.append(GraphSpec(
        "condition", ConditionGraph(model.transformer),
        (torch.zeros(rows, T, config.text.dim), torch.ones(rows, T, dtype=torch.bool)),
        ["hidden", "mask"], ["tokens", "cond_blocks", "cond_head"], {"hidden": {0: r_dim}, "mask": {0: r_dim}},
        "text features [cond; uncond] -> prefix tokens and pooled conditions"))
    example_length, example_past = 4, T
    kv = torch.zeros(t.depth, rows, t.heads, example_past, t.head_dim)
    specs.append(GraphSpec(
        "step", StepGraph(model.transformer),
        (torch.zeros(rows, example_length, t.width), torch.zeros(rows, t.width), torch.zeros(rows, t.width),
         torch.zeros(rows, example_length, t.head_dim), torch.zeros(rows, example_length, t.head_dim), kv, kv.clone()),
        ["x", "cond_blocks", "cond_head", "cos", "sin", "past_k", "past_v"],
        ["logits", "hidden", "present_k", "present_v"],
        {"x": {0: r_dim, 1: length}, "cond_blocks": {0: r_dim}, "cond_head": {0: r_dim},
         "cos": {0: r_dim, 1: length}, "sin": {0: r_dim, 1: length},
         "past_k": {1: r_dim, 3: past}, "past_v": {1: r_dim, 3: past}},
        "one scale through every block with an explicit KV cache (past may be empty)"))
    for si, pn in enumerate(config.patch_nums[:-1]):
        specs.append(GraphSpec(
            f"update_{si}", UpdateGraph(model.tokenizer, model.transformer, si), (f_hat, ids(pn * pn)),
            ["f_hat", "ids"], ["f_hat_out", "next_x"], {"f_hat": {0: b_dim}, "ids": {0: b_dim}},
            f"scale {si} ({pn}x{pn}): codebook lookup, bicubic up, Φ into f_hat; next scale's embedded input"))
    specs.append(GraphSpec(
        "update_final", FinalUpdateGraph(model.tokenizer), (f_hat, ids(n_last), torch.zeros(batch, n_last, latent)),
        ["f_hat", "ids", "residual"], ["f_hat_out"],
        {"f_hat": {0: b_dim}, "ids": {0: b_dim}, "residual": {0: b_dim}},
        "last scale: codebook rows plus the continuous residual, without Φ"))
    sampler = ResidualSampler(config.residual_head)
    specs.append(GraphSpec(
        "residual", ResidualGraph(model.tokenizer, model.transformer, model.residual_head, sampler),
        (torch.zeros(rows, n_last, t.width), ids(n_last), torch.zeros(sampler.num_steps, batch * n_last, latent),
         torch.tensor(1.5)),
        ["hidden", "ids", "noise", "guidance"], ["residual"],
        {"hidden": {0: r_dim}, "ids": {0: b_dim}, "noise": {1: Dim("tokens", min=1, max=1 << 24)}, "guidance": None},
        f"residual head: {sampler.num_steps} DDPM steps unrolled, noise as input"))
    specs.append(GraphSpec(
        "decoder", DecoderGraph(model.tokenizer), (f_hat,), ["f_hat"], ["image"], {"f_hat": {0: b_dim}},
        "post-quant conv + VQGAN decoder -> image in [0, 1]"))
    specs.append(GraphSpec(
        "encoder", EncoderGraph(model.tokenizer), (torch.rand(batch, 3, config.image_size, config.image_size),),
        ["image"], ["ids", "residual"], {"image": {0: b_dim}},
        "VQGAN encoder + multi-scale quantizer: image in [0, 1] -> ids of every scale, continuous residual "
        "(editing keeps them outside the mask)"))
    specs.append(GraphSpec(
        "quantize", QuantizeGraph(model.tokenizer), (f_hat,), ["f_hat"], ["ids", "residual"], {"f_hat": {0: b_dim}},
        "multi-scale quantizer alone: latent f_hat -> ids of every scale, continuous residual (a canvas window "
        "keeps what is already drawn)"))
    return specs
