"""The export wrappers hold only the weights their graph reads (exporters convert every weight they hold)."""

import torch

from hart.export.graphs import graph_specs
from hart.export.wrappers import holding


def test_holding_keeps_the_named_children_and_leaves_the_original_whole(model):
    view = holding(model.transformer, "latent_in", "level_embed")
    assert set(dict(view.named_children())) == {"latent_in", "level_embed"}
    assert view.latent_in.weight is model.transformer.latent_in.weight
    assert "blocks" in dict(model.transformer.named_children())


def test_only_the_step_graph_holds_the_transformer_blocks(model):
    block_weights = {id(p) for p in model.transformer.blocks.parameters()}
    encoder_weights = {id(p) for p in model.tokenizer.encoder.parameters()}
    for spec in graph_specs(model):
        held = {id(p) for p in spec.module.parameters()}
        assert bool(held & block_weights) == (spec.name == "step"), spec.name
        assert bool(held & encoder_weights) == (spec.name == "encoder"), spec.name  # only editing encodes


def test_every_graph_runs_on_its_example_after_pruning(model):
    with torch.no_grad():
        for spec in graph_specs(model):
            outputs = spec.module(*spec.example)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            assert len(outputs) == len(spec.outputs), spec.name
            assert all(torch.isfinite(o.float()).all() for o in outputs), spec.name
