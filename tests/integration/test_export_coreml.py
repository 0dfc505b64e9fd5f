"""Core ML export of the embedded model: converts on Linux in every compression mode; runs on macOS."""

import platform

import numpy as np
import pytest

from hart.checkpoints import load_pretrained
from hart.errors import DependencyError
from hart.export.coreml_export import COMPRESSIONS, export_coreml
from hart.runtime.manifest import read_manifest

pytestmark = pytest.mark.slow
ct = pytest.importorskip("coremltools")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return export_coreml(load_pretrained("tiny"), tmp_path_factory.mktemp("coreml") / "tiny", COMPRESSIONS)


def spec_of(folder, package, function=None):
    return ct.models.MLModel(str(folder / package), skip_model_load=True, function_name=function).get_spec()


def test_every_mode_has_the_packages_and_io_the_manifest_names(export):
    for mode in COMPRESSIONS:
        manifest = read_manifest(export / mode)
        graphs = manifest.graphs
        assert set(graphs) == {"text_encoder", "condition", "step", "update", "residual", "decoder", "encoder",
                               "quantize"}
        for name in ("text_encoder", "condition", "residual", "decoder", "encoder", "quantize"):
            description = spec_of(export / mode, graphs[name].file).description
            assert [i.name for i in description.input] == [i["name"] for i in graphs[name].inputs]
            assert [o.name for o in description.output] == graphs[name].outputs
        patch_nums = manifest.schedule.patch_nums
        assert [f["name"] for f in graphs["update"].functions] == [f"scale_{si}" for si in
                                                                     range(len(patch_nums) - 1)] + ["final"]


def test_step_functions_are_static_and_share_the_cache_state(export):
    manifest = read_manifest(export / "none")
    config, step = manifest.model.config, manifest.graphs["step"]
    t = config["transformer"]
    for si, function in enumerate(step.functions):
        functions = spec_of(export / "none", step.file, function["name"]).description.functions
        description = next(f for f in functions if f.name == function["name"])  # a multifunction package
        inputs = {i.name: i.type.multiArrayType for i in description.input}
        assert list(inputs) == ["x", "cond_blocks", "cond_head", "cos", "sin"]
        assert list(inputs["x"].shape) == [2, manifest.schedule.step_lengths[si], t["width"]]
        assert inputs["x"].dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
        states = {s.name: list(s.type.stateType.arrayType.shape) for s in description.state}
        assert states == {"k_cache": step.states[0]["shape"], "v_cache": step.states[1]["shape"]}
        assert step.states[0]["shape"] == [t["depth"], 2, t["heads"], manifest.schedule.context_tokens
                                              + sum(p * p for p in manifest.schedule.patch_nums[1:]),
                                              t["width"] // t["heads"]]


def test_each_mode_shrinks_the_weights_as_expected(export):
    sizes = {mode: read_manifest(export / mode).coreml["package_bytes"] for mode in COMPRESSIONS}
    weights = {mode: sizes[mode]["step.mlpackage"] + sizes[mode]["decoder.mlpackage"] for mode in COMPRESSIONS}
    assert weights["int8"] < 0.62 * weights["none"]  # 16 -> 8 bits
    assert weights["palette6"] < 0.9 * weights["int8"]  # 8 -> 6 bits
    assert weights["int4-block"] < 0.85 * weights["palette6"]  # 6 -> 4 bits + block scales
    for mode in COMPRESSIONS:
        errors = read_manifest(export / mode).coreml["simulated_relative_error"]
        assert set(errors) >= {"step", "residual", "decoder"} and all(0 <= e < 0.5 for e in errors.values())
    none, int4 = (read_manifest(export / m).coreml["simulated_relative_error"]["step"] for m in ("none", "int4-block"))
    assert none < int4


def test_the_encoder_is_float32_and_uncompressed_in_every_mode(export):
    """Editing keeps the encoder's ids: its package computes in float32 and is the same in every mode."""
    sizes = {mode: read_manifest(export / mode).coreml["package_bytes"]["encoder.mlpackage"] for mode in COMPRESSIONS}
    assert all(abs(size - sizes["none"]) < 0.01 * sizes["none"] for size in sizes.values()), sizes  # iOS 18 differs a bit
    for mode in COMPRESSIONS:
        spec = spec_of(export / mode, "encoder.mlpackage")
        assert "FLOAT16" not in str(spec.mlProgram) and "FLOAT16" in str(spec_of(export / mode, "decoder.mlpackage")
                                                                          .mlProgram)
        assert "FLOAT16" not in str(spec_of(export / mode, "quantize.mlpackage").mlProgram)
        assert {o.name: o.type.multiArrayType.dataType for o in spec.description.output}["ids"] == \
            ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32


def test_metadata_names_the_source(export):
    model = ct.models.MLModel(str(export / "int8" / "decoder.mlpackage"), skip_model_load=True)
    assert model.user_defined_metadata["hart.source_model"] == "tiny"
    assert model.user_defined_metadata["hart.compression"] == "int8"
    assert model.author == "hart" and model.version


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the refusal on systems without Core ML")
def test_the_runtime_refuses_clearly_off_macos(export):
    from hart.runtime.coreml_pipeline import CoreMLPipeline

    with pytest.raises(DependencyError, match="only on macOS"):
        CoreMLPipeline(export / "none")


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
def test_coreml_image_matches_pytorch_on_macos(export):
    from hart.pipeline import HARTPipeline
    from hart.runtime.coreml_pipeline import CoreMLPipeline

    prompt = ["a large red circle on the left on a gray background"]
    want = HARTPipeline(load_pretrained("tiny"), "cpu").generate(prompt, seed=3).images.numpy()
    got = CoreMLPipeline(export / "none").generate(prompt, seed=3).images
    assert 10 * np.log10(1 / np.mean((got - want) ** 2)) >= 35


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
def test_coreml_encoder_ids_match_pytorch_on_macos(export):
    """The float32 encoder package keeps (almost) exactly PyTorch's ids: the tokens an edit keeps."""
    import torch

    from hart.runtime.coreml_pipeline import CoreMLPipeline

    model = load_pretrained("tiny")
    images = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        want = model.tokenizer.encode(torch.from_numpy(images)).ids
    got, _ = CoreMLPipeline(export / "int8").backend.encode_image(images)
    agreement = sum(int((w.numpy() == g).sum()) for w, g in zip(want, got)) / sum(w.numel() for w in want)
    assert agreement >= 0.99
