"""The official key table: complete for the 0.7B release layout, strict, and loud about every mismatch."""

import json
from pathlib import Path

import pytest
import torch

from hart.checkpoints.official import load_official, load_official_weights, map_official_keys, official_config
from hart.components import build_networks
from hart.config import preset
from hart.errors import CheckpointError
from hart.text import RandomTextEncoder
from tests.conftest import small_config
from tests.golden.official_layout import (llm_layout, official_llm_config, official_tokenizer_config,
                                          tokenizer_layout)

KEYS_FILE = Path(__file__).parent / "data" / "official_keys_hart_0.7b_1024px.json"


def release_keys() -> dict[str, dict[str, list[int]]]:
    data = json.loads(KEYS_FILE.read_text())
    return {part: {key: shape for key, shape, _dtype in data[part]} for part in ("llm", "tokenizer")}


def test_layout_generator_reproduces_the_release_key_list():
    config, keys = preset("hart-0.7b-1024px"), release_keys()
    assert llm_layout(config) == keys["llm"]
    assert tokenizer_layout(config) == keys["tokenizer"]


def test_0p7b_preset_has_exactly_the_official_keys_and_shapes():
    networks = build_networks(preset("hart-0.7b-1024px"), device="meta")
    for part, components in (("llm", ("transformer", "residual_head")), ("tokenizer", ("tokenizer",))):
        state = {k: torch.empty(shape, device="meta") for k, shape in release_keys()[part].items()}
        mapped = map_official_keys(state, part)
        load_official_weights(networks, mapped, part, components)  # raises on any missing key or shape
        for component in components:
            assert len(mapped[component]) == len(networks[component].state_dict())


def write_release(folder: Path, config, seed: int = 0, ema_offset: float = 0.0) -> dict[str, torch.Tensor]:
    """A synthetic official release folder; returns the llm state written as ema_model.bin."""
    generator = torch.Generator().manual_seed(seed)

    def tensors(layout):
        return {k: (torch.randn(s, generator=generator) if k not in ("lvl_1L",) else torch.zeros(s, dtype=torch.long))
                for k, s in layout.items()}

    (folder / "llm").mkdir(parents=True)
    (folder / "tokenizer").mkdir()
    llm = tensors(llm_layout(config))
    (folder / "llm" / "config.json").write_text(json.dumps(official_llm_config(config)))
    torch.save(llm, folder / "llm" / "pytorch_model.bin")
    ema = {k: v + ema_offset if v.is_floating_point() else v for k, v in llm.items()}
    torch.save(ema, folder / "llm" / "ema_model.bin")
    (folder / "tokenizer" / "config.json").write_text(json.dumps(official_tokenizer_config(config)))
    torch.save(tensors(tokenizer_layout(config)), folder / "tokenizer" / "pytorch_model.bin")
    return ema


def test_a_reduced_official_release_loads_strictly_and_prefers_ema(tmp_path):
    config = small_config()
    ema = write_release(tmp_path, config, ema_offset=1.0)
    model = load_official(tmp_path, RandomTextEncoder(config.text))
    assert model.config.transformer == config.transformer and model.config.patch_nums == config.patch_nums
    t = model.transformer
    assert torch.equal(t.blocks[1].attn.qkv.weight, ema["blocks.1.attn.qkv_proj.weight"])
    assert torch.equal(t.blocks[0].adaln.bias, ema["blocks.0.ada_lin.1.bias"])
    assert torch.equal(t.residual_norm.weight, ema["decoder_norm.weight"])
    assert torch.equal(model.residual_head.blocks[1].adaln.weight,
                       ema["diffloss.net.res_blocks.1.adaLN_modulation.1.weight"])


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("blocks.1.ffn.up_proj.weight"), r"missing key\(s\) blocks\.1\.ffn\.up_proj\.weight"),
    (lambda s: s.update({"blocks.0.attn.rotary.inv_freq": torch.zeros(4)}),
     r"unexpected key\(s\) blocks\.0\.attn\.rotary\.inv_freq"),
    (lambda s: s.update({"head.weight": torch.zeros(3, 3)}), r"head\.weight has shape \[3, 3\], expected \[64, 128\]"),
    # keys the key table can map but this config has no place for: a block past the depth, an extra head block
    (lambda s: s.update({"blocks.9.ffn.up_proj.weight": s["blocks.1.ffn.up_proj.weight"]}),
     r"unexpected key\(s\) blocks\.9\.ffn\.up_proj\.weight \(no place for them in this config\)"),
    (lambda s: s.update({k.replace("res_blocks.1.", "res_blocks.7."): v for k, v in s.items() if "res_blocks.1." in k}),
     r"unexpected key\(s\) diffloss\.net\.res_blocks\.7\."),
])
def test_release_mismatches_name_the_official_key(tmp_path, damage, message):
    config = small_config()
    ema = write_release(tmp_path, config)
    damage(ema)
    torch.save(ema, tmp_path / "llm" / "ema_model.bin")
    with pytest.raises(CheckpointError, match=message):
        load_official(tmp_path, RandomTextEncoder(config.text))


def test_unsupported_official_variants_are_named(tmp_path):
    write_release(tmp_path, small_config())
    llm = json.loads((tmp_path / "llm" / "config.json").read_text())
    (tmp_path / "llm" / "config.json").write_text(json.dumps({**llm, "attn_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="attn_type='gpt2' is not supported"):
        official_config(tmp_path)


def test_official_config_of_the_release_is_the_1024px_preset(tmp_path):
    config = preset("hart-0.7b-1024px")
    (tmp_path / "llm").mkdir()
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "llm" / "config.json").write_text(json.dumps(official_llm_config(config)))
    (tmp_path / "tokenizer" / "config.json").write_text(json.dumps(official_tokenizer_config(config)))
    assert official_config(tmp_path) == config
