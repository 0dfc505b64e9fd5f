import pytest
import torch
from safetensors.torch import load_file, save_file

import hart.checkpoints.io as checkpoint_io
from hart.checkpoints import load_model, load_pretrained, save_model
from hart.errors import CheckpointError, HartError
from hart.pipeline import HARTPipeline


def test_save_then_load_gives_identical_output(model, tmp_path):
    folder = save_model(model, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "residual_head.safetensors", "text_encoder.safetensors", "tokenizer.safetensors",
        "transformer.safetensors"]
    loaded = load_model(folder)
    assert loaded.config == model.config
    before = HARTPipeline(model, "cpu").generate(["a red circle"], seed=5)
    after = HARTPipeline(loaded, "cpu").generate(["a red circle"], seed=5)
    assert torch.equal(before.images, after.images)
    assert torch.equal(HARTPipeline(load_pretrained(str(folder)), "cpu").generate(["a red circle"], seed=5).images,
                       before.images)


def test_a_failed_save_leaves_nothing_behind(model, tmp_path, monkeypatch):
    calls = []

    def failing_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        save_file(tensors, path, metadata)

    monkeypatch.setattr(checkpoint_io, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_existing_folders_are_not_overwritten_silently(model, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("mine")
    with pytest.raises(HartError, match="already exists"):
        save_model(model, tmp_path / "model")
    save_model(model, tmp_path / "model", overwrite=True)
    assert not (tmp_path / "model" / "keep.txt").exists()


def test_damaged_checkpoints_are_refused_by_name(model, tmp_path):
    folder = save_model(model, tmp_path / "model")
    weights = folder / "transformer.safetensors"
    state = load_file(weights)

    state["head.weight"] = state["head.weight"][:, :5].contiguous()
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"head\.weight has shape \[64, 5\], expected \[64, 128\]"):
        load_model(folder)

    del state["head.weight"]
    state["head.extra"] = torch.zeros(1)
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"missing key\(s\) head\.weight; unexpected key\(s\) head\.extra"):
        load_model(folder)

    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="transformer.safetensors is not a readable safetensors file"):
        load_model(folder)

    weights.unlink()
    with pytest.raises(CheckpointError, match="transformer.safetensors is missing"):
        load_model(folder)


def test_unknown_model_names_are_explained(tmp_path):
    with pytest.raises(CheckpointError, match="neither a model folder nor a preset"):
        load_pretrained(str(tmp_path / "nothing-here"))
