"""The typed manifest is read strictly: fields, derived numbers and paths are all checked by name."""

import json

import pytest

from hart.errors import CheckpointError
from hart.export.manifest import describe_model
from hart.runtime.manifest import MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, file_entries, read_manifest


@pytest.fixture
def folder(model, tmp_path):
    (tmp_path / "step.onnx").write_bytes(b"graph bytes")
    data = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "precision": "fp32", "created": "now",
            "exporter": {}, **describe_model(model),
            "graphs": {"step": {"file": "step.onnx", "description": "", "inputs": [], "outputs": []}},
            "files": file_entries(tmp_path, ["step.onnx"])}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return tmp_path


def rewrite(folder, change) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def test_a_written_manifest_reads_back_with_its_config(folder, model):
    manifest = read_manifest(folder)
    assert isinstance(manifest, Manifest) and manifest.config == model.config
    assert manifest.schedule.patch_nums == model.config.patch_nums
    assert "residual_guidance" in manifest.loop[-3] and manifest.spec["residual_guidance"].startswith("cfg *")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), "unknown field.*extra"),
    (lambda d: d["sampling"].pop("cfg"), "missing the required field cfg"),
    (lambda d: d["schedule"].update(progress=[0.5] * len(d["schedule"]["progress"])),
     "schedule.progress is .* implies"),
    (lambda d: d["sampling"].update(cfg=float("nan")), "NaN is not a JSON number"),
    (lambda d: d.update(format_version=1), "version 1.*re-export"),
])
def test_bad_fields_are_named(folder, change, message):
    rewrite(folder, change)
    with pytest.raises(CheckpointError, match=message):
        read_manifest(folder)


@pytest.mark.parametrize("path", ["../step.onnx", "/etc/passwd", "other.onnx", "sub/../../x.onnx"])
def test_graphs_must_be_listed_files_inside_the_folder(folder, path):
    rewrite(folder, lambda d: d["graphs"]["step"].update(file=path))
    with pytest.raises(CheckpointError, match="graphs.step.file"):
        read_manifest(folder)


def test_a_listed_file_outside_the_folder_is_refused(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.onnx"
    outside.write_bytes(b"secret")
    (folder / "link.onnx").symlink_to(outside)
    rewrite(folder, lambda d: d["files"].update(file_entries(folder, ["link.onnx"])))
    with pytest.raises(CheckpointError, match="resolves outside the export folder"):
        read_manifest(folder)
    rewrite(folder, lambda d: d["files"].update({"../secret.onnx": {"sha256": "0" * 64, "bytes": 6}}))
    with pytest.raises(CheckpointError, match="inside the export folder"):
        read_manifest(folder)


def test_the_edit_section_states_the_loops_own_defaults_and_widths(model):
    """A port edits from the manifest alone: its defaults are GenerationLoop.edit's, its widths edit.py's."""
    import inspect

    from hart.loop import GenerationLoop
    from hart.portable import edit

    section = describe_model(model)["edit"]
    signature = inspect.signature(GenerationLoop.edit).parameters
    assert section["defaults"] == {k: signature[k].default for k in ("threshold", "fill", "paste", "feather")}
    assert (section["fill_band"], section["feather"]) == (edit.FILL_BAND, edit.FEATHER)
    assert Manifest.from_dict({**json.loads(json.dumps(describe_model(model))), "format": MANIFEST_FORMAT,
                               "format_version": MANIFEST_VERSION, "precision": "fp32", "created": "now",
                               "exporter": {}, "graphs": {}, "files": {}}).edit == section
