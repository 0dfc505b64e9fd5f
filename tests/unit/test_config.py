import json

import pytest

from hart.components import count_parameters
from hart.config import PRESETS, HARTConfig, TransformerConfig, preset
from hart.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = PRESETS[name]
    assert HARTConfig.from_dict(json.loads(config.to_json())) == config


def test_0p7b_parameter_counts_match_the_release():
    counts = count_parameters(preset("hart-0.7b-1024px"))
    assert counts["transformer"] == 693_176_320
    assert counts["residual_head"] == 36_585_536
    assert counts["transformer"] + counts["residual_head"] == 729_761_856


def test_lower_resolution_presets_share_the_transformer_shape():
    for name in ("hart-0.7b-512px", "hart-0.7b-256px"):
        config = preset(name)
        assert config.transformer == preset("hart-0.7b-1024px").transformer
        assert config.num_scales == 10 and config.image_size == config.patch_nums[-1] * 16


def test_derived_sizes_of_the_1024px_preset():
    config = preset("hart-0.7b-1024px")
    assert config.sequence_length == 9750  # the official mask is 9750 x 9750
    assert config.transformer.mlp_hidden == 4096 and config.transformer.head_dim == 64


@pytest.mark.parametrize("change, field", [
    ({"transformer": {"width": 100, "heads": 3}}, "transformer.width"),
    ({"transformer": {"width": 96, "heads": 16}}, "transformer.heads"),
    ({"image_size": 100}, "config.image_size"),
    ({"patch_nums": [2, 4]}, "config.patch_nums"),
    ({"patch_nums": [1, 3, 2]}, "config.patch_nums"),
    ({"sampling": {"top_k": [1]}}, "sampling.top_k"),
    ({"text": {"kind": "clip"}}, "text.kind"),
    ({"residual_head": {"latent_scale": 0}}, "residual_head.latent_scale"),
    ({"sampling": {"residual_guidance": -0.5}}, "sampling.residual_guidance"),
])
def test_invalid_values_name_the_field(change, field):
    data = preset("hart-0.7b-1024px").to_dict()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        HARTConfig.from_dict(data)


def test_unknown_and_mistyped_fields_are_named():
    data = preset("tiny").to_dict()
    with pytest.raises(ConfigError, match="unknown field.*colour"):
        HARTConfig.from_dict({**data, "colour": 1})
    with pytest.raises(ConfigError, match=r"config\.transformer\.depth must be an integer"):
        HARTConfig.from_dict({**data, "transformer": {**data["transformer"], "depth": "six"}})
    with pytest.raises(ConfigError, match=r"config\.tokenizer\.attention must be true or false"):
        HARTConfig.from_dict({**data, "tokenizer": {**data["tokenizer"], "attention": 1}})


def test_config_files_report_their_path(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        HARTConfig.from_json_file(bad)
    with pytest.raises(ConfigError, match="is missing; expected a model config.json"):
        HARTConfig.from_json_file(tmp_path / "missing.json")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        preset("huge")


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        TransformerConfig().depth = 3
