"""ONNX export of the embedded model: parity with PyTorch, quantized variants, manifest, runtime."""

import json
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import onnx
import pytest

from hart.checkpoints import load_pretrained
from hart.errors import CheckpointError, DependencyError
from hart.export.parity import THRESHOLDS, ParityError
from hart.pipeline import HARTPipeline
from hart.runtime.manifest import read_manifest
from hart.runtime.onnx_pipeline import OnnxPipeline

pytestmark = pytest.mark.slow
PRECISIONS = ("fp32", "fp16", "int8", "qdq", "int4")


@pytest.fixture
def export(onnx_export):
    return onnx_export


def test_fp32_reproduces_pytorch_tokens_and_images(export):
    parity = read_manifest(export / "fp32").parity
    assert parity["seeds"] >= 20 and parity["met"]
    assert parity["token_agreement"] >= 0.999
    assert parity["image_psnr_db"]["min"] >= 40
    assert max(parity["component_relative_error"].values()) < 1e-4


def test_an_independent_run_matches_pytorch(export):
    reference = HARTPipeline(load_pretrained("tiny"), "cpu")
    runtime = OnnxPipeline(export / "fp32")
    prompts = ["a small red circle on the left", "large blue star in the top right corner on a gray background"]
    want = reference.generate(prompts, seed=[11, 12])
    got = runtime.generate(prompts, seed=[11, 12])
    assert all(np.array_equal(g, w.numpy()) for g, w in zip(got.ids, want.ids))
    assert 10 * np.log10(1 / np.mean((got.images - want.images.numpy()) ** 2)) >= 40


def test_quantized_variants_are_smaller_and_met_their_thresholds(export):
    sizes = {p: sum(f.bytes for name, f in read_manifest(export / p).files.items() if name.startswith("step"))
             for p in PRECISIONS}
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert sizes["qdq"] < 0.5 * sizes["fp32"]
    for precision in PRECISIONS:
        parity = read_manifest(export / precision).parity
        assert parity["met"] and "missed" not in parity, precision
        assert parity["thresholds"] == {k: v for k, v in asdict(THRESHOLDS[precision]).items() if v is not None}
        assert set(parity["component_relative_error"]) >= {"step", "residual", "decoder"}
    int8 = read_manifest(export / "int8").parity  # the floors for the int8 a mobile developer ships
    assert int8["teacher_forced_token_agreement"] >= 0.95 and int8["image_psnr_db"]["mean"] >= 30


def test_int8_is_the_model_on_rounded_weights_so_any_cpu_gives_its_tokens(export):
    """Weight-only int8 runs float32 arithmetic on rounded weights: against PyTorch on those weights
    every graph agrees as closely as fp32 agrees with the model (no integer kernel, no CPU-specific
    path), and the decoder's weights are int8 too."""
    manifest = read_manifest(export / "int8")
    rounded = manifest.parity["rounded_weights"]
    assert max(rounded["component_relative_error"].values()) < 1e-4
    assert rounded["teacher_forced_token_agreement"] >= 0.999
    for name in manifest.graphs:
        ops = {n.op_type for n in onnx.load(str(export / "int8" / f"{name}.onnx")).graph.node}
        assert not ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "ConvInteger", "MatMulNBits"}, name
    decoder = onnx.load(str(export / "int8" / "decoder.onnx"))
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in decoder.graph.initializer) >= 10
    assert (export / "int8" / "decoder.onnx").stat().st_size < 0.4 * (export / "fp32" / "decoder.onnx").stat().st_size


def test_a_precision_that_misses_its_thresholds_writes_nothing_and_says_what(export, tmp_path, monkeypatch):
    """A broken int8 (weights saturating at a quarter of their range, as an int16 pair sum would) makes
    the export fail with the numbers it missed and leave no folder behind. Graph capture is replaced
    by the session export's fp32 graphs to keep this fast."""
    from hart.export import onnx_export, onnx_quantize

    blocks = onnx_quantize.int8_blocks

    def saturating(weight, block):
        values, scale = blocks(weight, block)
        return np.clip(values, -32, 32).astype(np.int8), scale

    monkeypatch.setattr(onnx_quantize, "int8_blocks", saturating)

    def copy_graphs(model, specs, folder, done, processes=1):
        for spec in specs:
            shutil.copy(export / "fp32" / f"{spec.name}.onnx", folder)
            done(spec.name)

    monkeypatch.setattr(onnx_export, "capture_graphs", copy_graphs)
    out = tmp_path / "broken"
    with pytest.raises(ParityError) as refused:
        onnx_export.export_onnx(load_pretrained("tiny"), out, ("fp32", "int8"), parity_seeds=4)
    message = str(refused.value)
    assert message.startswith("the int8 export missed its parity thresholds (") and "nothing was written" in message
    assert "teacher-forced tokens" in message and "graph 'step' relative error" in message, message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_manifest_describes_every_graph(export):
    manifest = read_manifest(export / "int8")
    graphs = manifest.graphs
    assert set(graphs) == {"text_encoder", "condition", "step", "update_final", "residual", "decoder", "encoder",
                           "quantize"} | {
        f"update_{si}" for si in range(len(manifest.schedule.patch_nums) - 1)}
    step = graphs["step"]
    assert [i["name"] for i in step.inputs] == ["x", "cond_blocks", "cond_head", "cos", "sin", "past_k", "past_v"]
    assert step.outputs[2]["shape"][3] == "past + length"
    assert manifest.rng["name"] == "hart-splitmix64-v1"
    assert all(len(entry.sha256) == 64 for entry in manifest.files.values())
    assert json.loads((export / "int8" / "manifest.json").read_text())["precision"] == "int8"


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "step.onnx").write_bytes((folder / "step.onnx").read_bytes()[:1000]), "truncated"),
    (lambda folder: (folder / "decoder.onnx").unlink(), "decoder.onnx is missing"),
    (lambda folder: _swap(folder / "update_0.onnx", folder / "update_1.onnx"), "truncated or was replaced"),
    (lambda folder: _flip_last_byte(folder / "decoder.onnx"), "does not match its sha256"),
])
def test_damaged_folders_are_refused_before_onnxruntime(export, tmp_path, monkeypatch, damage, message):
    folder = tmp_path / "copy"
    shutil.copytree(export / "fp32", folder)
    damage(folder)
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: pytest.fail("a session was opened"))
    with pytest.raises(CheckpointError, match=message):
        OnnxPipeline(folder)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["model"]["config"]["tokenizer"].update(latent_channels=8), "update_0.onnx refused the inputs"),
    (lambda m: m["graphs"]["decoder"]["inputs"][0].update(name="z"), "decoder.onnx takes inputs f_hat, but the"),
    (lambda m: m["graphs"]["decoder"]["inputs"][0]["shape"].__setitem__(1, 99), "has size 16 on axis 1"),
    (lambda m: m["graphs"]["decoder"].update(inputs=[{"name": 1}]), "must be a list of {name, dtype, shape}"),
    (lambda m: m["graphs"].pop("update_0"), "lists no graph update_0; the loop needs"),
])
def test_a_manifest_that_disagrees_with_its_graphs_is_one_sentence(export, tmp_path, change, message):
    """Graphs and hashes intact, the manifest edited: onnxruntime's refusal becomes one sentence of ours."""
    folder = shutil.copytree(export / "fp32", tmp_path / "copy")
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message) as refused:
        OnnxPipeline(folder).generate(["a red circle"], seed=0)
    assert "\n" not in str(refused.value)


def test_onnx_fp32_edits_keep_and_sample_the_ids_torch_does(export):
    """The encoder graph gives PyTorch's ids, so an fp32 export edits exactly like PyTorch."""
    pipe = HARTPipeline.from_pretrained("tiny", "cpu")
    picture = np.asarray(pipe.generate(["a red circle on a blue background"], seed=[3]).images).transpose(0, 2, 3, 1)
    pictures, region = np.concatenate([picture] * 2), np.zeros((2, 64, 64), bool)
    region[:, 20:50, 10:40] = True
    want = pipe.loop.edit(pictures, region, ["a small green square"] * 2, seed=[4, 5])
    got = OnnxPipeline(export / "fp32").edit(pictures, region, ["a small green square"] * 2, seed=[4, 5])
    assert all(np.array_equal(w, g) for w, g in zip(want.image_ids, got.image_ids))
    assert np.abs(want.images - got.images).max() < 1e-4
    for precision in ("fp32", "int8"):
        agreement = read_manifest(export / precision, verify=False).parity["encoder_token_agreement"]
        assert agreement == 1.0 if precision == "fp32" else agreement > 0.8, (precision, agreement)


def test_onnx_fp32_draws_torchs_panorama(export):
    """A canvas re-quantizes its drawn latent with the quantize graph: one seed, the same panorama on both; an
    outpainting encodes its image with the encoder and update graphs: the same canvas on both."""
    from hart.canvas import draw, outpaint

    prompts = ["a red circle on a blue background", "a white star on a black background"]
    torch_loop, onnx_loop = HARTPipeline.from_pretrained("tiny", "cpu").loop, OnnxPipeline(export / "fp32")
    want = draw(torch_loop, prompts, (160, 64), seed=[0, 9])
    got = draw(onnx_loop, prompts, (160, 64), seed=[0, 9])
    assert np.abs(want.latents - got.latents).max() < 1e-3 and np.abs(want.images - got.images).max() < 1e-3
    image = np.random.default_rng(3).uniform(0, 1, (48, 72, 3)).astype(np.float32)  # off the cell grid
    want, got = (outpaint(loop, image, prompts, (128, 96), "left", seed=[0, 9]) for loop in (torch_loop, onnx_loop))
    assert np.abs(want.latents - got.latents).max() < 1e-3 and np.abs(want.images - got.images).max() < 1e-3
    old = OnnxPipeline(export / "fp32")
    old.backend.can_run = lambda name: name != "quantize"  # an export made before canvases existed
    with pytest.raises(DependencyError, match="no quantize graph, which canvases larger than the trained size"):
        draw(old, prompts[:1], (128, 64))


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _swap(a, b):
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def test_the_runtime_imports_no_torch(export, tmp_path):
    code = (f"import sys; from hart.runtime.onnx_pipeline import OnnxPipeline; "
            f"r = OnnxPipeline({str(export / 'int4')!r}).generate(['a red circle on the left'], seed=1); "
            f"assert r.images.shape[1:] == (3, 64, 64); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_cli_generates_with_the_onnx_backend(export, tmp_path):
    out = tmp_path / "onnx.png"
    result = subprocess.run([sys.executable, "-m", "hart", "generate", "a red circle on the left", "--backend", "onnx",
                             "--model", str(export / "fp32"), "-o", str(out), "--seed", "5"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    # The CLI must write what the runtime computes; agreement with PyTorch is the two parity tests' job
    # (fp32 ONNX and PyTorch may split a near-tie token once in ~1,000: token_agreement >= 0.999).
    cli_pixels = np.asarray(Image.open(out), dtype=np.float64)
    api_image = OnnxPipeline(export / "fp32").generate(["a red circle on the left"], seed=5).pil_images()[0]
    api_pixels = np.asarray(api_image, dtype=np.float64)
    assert np.array_equal(cli_pixels, api_pixels)


def test_int8_and_int4_keep_prompt_adherence_within_two_and_four_points(export, tmp_path):
    from hart.eval.evaluate import EvalSettings, evaluate

    settings = EvalSettings(num_prompts=240, num_pair_prompts=0, batch_size=48)
    scores = {p: evaluate(str(export / p), tmp_path / p, settings, backend="onnx", progress=False)["adherence"]
              for p in ("fp32", "int8", "int4")}
    for attribute in ("color", "shape", "position"):
        assert scores["int8"][attribute] >= scores["fp32"][attribute] - 0.02, (attribute, scores)
        assert scores["int4"][attribute] >= scores["fp32"][attribute] - 0.04, (attribute, scores)


def test_onnx_shares_the_text_prefix_bit_for_bit(export):
    """The unconditional row computed once per loop and one conditional row per distinct prompt give the
    unshared loop's images exactly (onnxruntime's row arithmetic does not depend on the batch)."""
    prompts = ["a red circle on a blue background", "a small green square", "a red circle on a blue background"]
    loop = OnnxPipeline(export / "fp32")
    loop.backend.shares_prefix = False
    want = loop.generate(prompts, seed=[1, 2, 3])
    loop.backend.shares_prefix = True
    for batch, seeds, rows in ((prompts, [1, 2, 3], slice(None)), (prompts, [1, 2, 3], slice(None)),
                               (prompts[1:2], [2], slice(1, 2))):  # computes uncond, then keeps it
        got = loop.generate(batch, seed=seeds)
        assert np.array_equal(want.images[rows], got.images)
        assert all(np.array_equal(a[rows], b) for a, b in zip(want.ids, got.ids))
    assert loop._unconditional is not None


def test_onnx_fp32_drops_guidance_as_torch_does_and_refuses_other_residual_steps_and_pruning(export):
    """Without guidance on the last scales the step graphs run the conditional rows alone (and the residual
    graph both halves at guidance 0): torch's tokens and image. Its unrolled residual steps cannot change,
    nor its per-scale token counts."""
    from hart.approximations import Approximations
    from hart.errors import ConfigError

    prompts, unguided = ["a red circle on a blue background", "a small green square"], Approximations(unguided_scales=2)
    want = HARTPipeline.from_pretrained("tiny", "cpu").loop.generate(prompts, seed=[5, 6], approximate=unguided)
    loop = OnnxPipeline(export / "fp32")
    got = loop.generate(prompts, seed=[5, 6], approximate=unguided)
    assert all(np.array_equal(w, g) for w, g in zip(want.ids, got.ids))
    assert np.abs(want.images - got.images).max() < 1e-4
    with pytest.raises(ConfigError, match="unrolls 8 DDPM steps; other residual step counts need the PyTorch"):
        loop.generate(prompts, approximate=Approximations(residual_steps=4))
    with pytest.raises(ConfigError, match="take every token of a scale; token pruning needs the PyTorch backend"):
        loop.generate(prompts, approximate=Approximations(pruned_scales=1))
