"""`hart` as a user runs it: a subprocess, real files, one-line errors."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from hart.checkpoints import save_model
from hart.cli import main


def run_hart(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hart", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def model_dir(model, tmp_path):
    return save_model(model, tmp_path / "model")


def test_generate_writes_valid_pngs(model_dir, tmp_path):
    out = tmp_path / "images" / "red.png"
    result = run_hart("generate", "a red circle on a blue background", "--model", str(model_dir), "-o", str(out),
                      "--seed", "3", "-n", "2", "--top-k", "8")
    assert result.returncode == 0, result.stderr
    for i in range(2):
        with Image.open(tmp_path / "images" / f"red-{i}.png") as image:
            image.verify()
        with Image.open(tmp_path / "images" / f"red-{i}.png") as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    assert "seed 4" in result.stdout
    assert not list((tmp_path / "images").glob(".*"))  # no temporary files left


@pytest.mark.parametrize("args, message", [
    (["generate", "a red circle", "--top-p", "1.5"], "top_p"),
    (["generate", "a red circle", "-o", "out.gif"], "must end in one of"),
    (["generate", "a purple circle"], "unknown word(s) 'purple'"),
    (["generate", ""], "prompt 1 is empty"),
    (["generate", "a red circle", "--model", "no-such-model"], "neither a model folder nor a preset"),
    (["generate", "a red circle", "--device", "cuda"], "no CUDA GPU"),
    (["generate", "a red circle", "--seed", "-1"], "seed must be an integer"),
    (["generate", "a red circle", "--dtype", "fp8"], "invalid choice"),
    (["info", "huge"], "neither a model folder nor a preset"),
    (["generate"], "required: PROMPT"),
])
def test_bad_arguments_give_one_line_not_a_traceback(model_dir, tmp_path, args, message):
    if args[0] == "generate" and "--model" not in args:
        args = args + ["--model", str(model_dir)]
    result = run_hart(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module, args, extra", [
    ("onnx", ["export", "onnx", "--model", "tiny", "--out", "x"], "onnx"),
    ("onnxruntime", ["generate", "a red circle", "--backend", "onnx", "--model", "x"], "onnx"),
    ("coremltools", ["export", "coreml", "--model", "tiny", "--out", "x"], "coreml"),
    ("matplotlib", ["bench", "--mode", "quick", "--models", "tiny", "--backends", "torch-cpu-fp32"], "bench"),
])
def test_a_missing_optional_package_names_its_extra(module, args, extra, tmp_path):
    """In a fresh process whose import of `module` fails, as it does without the extra."""
    blocked = f"import sys; sys.modules[{module!r}] = None; from hart.cli import main; sys.exit(main({args!r}))"
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert module in lines[0] and f"[{extra}]" in lines[0], lines
    assert not any(tmp_path.iterdir())


def test_info_counts_the_0p7b_preset():
    result = run_hart("info", "hart-0.7b-1024px", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["parameters"]["transformer"] == 693_176_320
    assert info["parameters"]["residual_head"] == 36_585_536
    assert info["generator_parameters"] == 729_761_856
    table = run_hart("info", "hart-0.7b-1024px").stdout
    assert "729,761,856" in table and "693,176,320" in table


def test_convert_turns_an_official_release_into_a_loadable_folder(tmp_path):
    from tests.conftest import small_config
    from tests.golden.test_official_keys import write_release

    write_release(tmp_path / "release", small_config())
    result = run_hart("convert", str(tmp_path / "release"), str(tmp_path / "converted"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "converted" / "transformer.safetensors").is_file()
    again = run_hart("convert", str(tmp_path / "release"), str(tmp_path / "converted"))
    assert again.returncode == 2 and "already exists" in again.stderr
    info = run_hart("info", str(tmp_path / "converted"), "--json")
    assert json.loads(info.stdout)["config"]["text"]["kind"] == "qwen2"


def test_train_draws_the_scenes_of_the_data_seed_it_is_given(monkeypatch, tmp_path):
    import hart.train.tokenizer as tokenizer_training
    seen = {}

    def record(config, settings, *args, **kwargs):
        seen["settings"] = settings
        return tmp_path

    monkeypatch.setattr(tokenizer_training, "train_tokenizer", record)
    assert main(["train", "tokenizer", "--out", str(tmp_path / "run"), "--steps", "1", "--data-seed", "7"]) == 0
    assert seen["settings"].data_seed == 7 and seen["settings"].seed == 0


def test_convert_checks_every_argument_before_it_writes(tmp_path):
    from tests.conftest import small_config
    from tests.golden.test_official_keys import write_release

    write_release(tmp_path / "release", small_config())
    refused = run_hart("convert", str(tmp_path / "release"), str(tmp_path / "converted"), "--text-encoder", "/nope")
    assert refused.returncode == 2 and "/nope is not a Qwen2 model folder" in refused.stderr
    assert not (tmp_path / "converted").exists() and not list(tmp_path.glob(".converted*"))
    qwen2 = tmp_path / "qwen2"
    qwen2.mkdir()
    (qwen2 / "config.json").write_text("{}")
    result = run_hart("convert", str(tmp_path / "release"), str(tmp_path / "converted"), "--text-encoder", str(qwen2))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "converted" / "text_encoder").resolve() == qwen2.resolve()


def test_prompts_and_settings_are_checked_before_the_weights_load(tmp_path):
    import shutil

    from hart.checkpoints import shipped_weights

    folder = shutil.copytree(shipped_weights("tiny"), tmp_path / "model")
    (folder / "transformer.safetensors").write_bytes(b"broken")  # loading it would fail
    for args, message in ((["a zorp circle"], "unknown word(s) 'zorp'"), (["a red circle", "--cfg", "nan"], "cfg"),
                          (["a red circle", "-o", str(tmp_path / "model")], "must end in one of"),
                          (["a red circle", "-o", str(tmp_path / "model" / "config.json" / "x.png")],
                           "is a file, not a folder")):
        result = run_hart("generate", *args, "--model", str(folder), cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "safetensors" not in result.stderr, result.stderr


def test_images_made_a_few_at_a_time_equal_one_batch(tmp_path):
    """-n is generated --batch-size images at a time (bounded memory for any -n), with the same images."""
    from PIL import Image

    import numpy as np

    for batch in (2, 8):
        result = run_hart("generate", "a red circle", "-n", "3", "--batch-size", str(batch), "-o",
                          str(tmp_path / f"b{batch}" / "x.png"), "-v")
        assert result.returncode == 0, result.stderr
    for i in range(3):
        a, b = (np.asarray(Image.open(tmp_path / f"b{n}" / f"x-{i}.png")) for n in (2, 8))
        assert np.array_equal(a, b)


@pytest.mark.parametrize("args, message", [
    (["demo", "web", "--port", "99999"], "'99999' is not a port number"),
    (["generate", "a red circle", "--text-encoder", "/nope"], "--text-encoder is for models that use Qwen2"),
    (["info", "-v", "--json", "nope"], "'nope' is neither a model folder nor a preset"),
    (["generate", "a red circle", "--size", "250x64"], "multiples of the model's latent cell, 8 pixels"),
    (["generate", "a red circle", "--size", "1000000x1000000"], "GiB of memory is available"),
    (["generate", "a red circle", "--size", "wide"], "--size takes WIDTHxHEIGHT"),
    (["generate", "a red circle", "--unguided-scales", "6"], "unguided scales must be 0 to 5 for a model of 6 scales"),
    (["generate", "a red circle", "--residual-steps", "0"], "residual steps must be 1 to 1000"),
    (["generate", "a red circle", "--prune-scales", "5"], "pruned scales must be 0 to 4 for a model of 6 scales"),
    (["generate", "a red circle", "--prune-ratio", "0.5"], "--prune-ratio sets how much --prune-scales prunes"),
    (["generate", "a red circle", "--prune-scales", "2", "--prune-ratio", "1"], "must be between 0 and 1 (got 1.0)"),
    (["eval", "--task", "fast", "--runs", "0"], "--runs must be at least 1"),
    (["eval", "--task", "fast", "--variants", "fast,nope"], "unknown approximation(s) 'nope'; known: exact,"),
])
def test_more_one_line_errors(args, message, tmp_path):
    result = run_hart(*args, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_edit_with_a_box_over_everything_is_generate_and_a_mask_keeps_the_rest(tmp_path):
    import numpy as np

    source = tmp_path / "source.png"
    assert run_hart("generate", "a red circle on a blue background", "--seed", "3", "-o", str(source)).returncode == 0
    full = run_hart("edit", str(source), "--box", "0,0,64,64", "a", "red", "circle", "on", "a", "blue", "background",
                    "--seed", "3", "-o", str(tmp_path / "full.png"))
    assert full.returncode == 0, full.stderr
    assert (tmp_path / "full.png").read_bytes() == source.read_bytes()
    mask = np.zeros((64, 64), np.uint8)
    mask[30:60, 20:56] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    edited = run_hart("edit", str(source), "--mask", str(tmp_path / "mask.png"), "a green square on a blue background",
                      "-n", "2", "-o", str(tmp_path / "edit.png"))
    assert edited.returncode == 0, edited.stderr
    before = np.asarray(Image.open(source))
    for i in range(2):
        after = np.asarray(Image.open(tmp_path / f"edit-{i}.png"))
        assert np.array_equal(after[:20], before[:20])  # far from the mask: the original pixels


@pytest.mark.parametrize("make, args, message", [
    (lambda p: Image.new("L", (64, 64), 0).save(p / "m.png"), ["--mask", "{p}/m.png"], "the mask marks nothing to edit"),
    (lambda p: Image.new("L", (32, 32), 255).save(p / "m.png"), ["--mask", "{p}/m.png"], "the mask is 32x32 pixels"),
    (lambda p: None, ["--box", "0,0,99,10"], "is not inside the 64x64 image"),
    (lambda p: None, ["--box", "1,2,x"], "must be four whole numbers"),
    (lambda p: (p / "m.png").write_bytes(b"not a png"), ["--mask", "{p}/m.png"], "not an image Pillow can read"),
    (lambda p: None, ["--box", "0,0,8,8", "--threshold", "2"], "threshold must be in [0, 1)"),
])
def test_bad_edits_are_one_line_and_write_nothing(tmp_path, make, args, message):
    Image.new("RGB", (64, 64), (0, 0, 255)).save(tmp_path / "in.png")
    make(tmp_path)
    result = run_hart("edit", str(tmp_path / "in.png"), *[a.format(p=tmp_path) for a in args], "a red circle",
                      "-o", str(tmp_path / "out.png"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out.png").exists()


def test_outpaint_places_the_image_and_draws_the_margins(tmp_path):
    import numpy as np

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "in.png")
    result = run_hart("outpaint", str(tmp_path / "in.png"), "--left", "24", "--top", "8", "a", "red", "square",
                      "-o", str(tmp_path / "out.png"), "--seed", "2")
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    # inside the placed image, away from the feathered edge: the input's pixels (resized, so within rounding)
    assert np.abs(out[16:, 32:] - (200, 30, 30)).max() <= 2
    for args, message in ((["--left", "40", "--right", "30"], "the margins leave no room"),
                          ([], "needs at least one of --left"), (["--top", "-3"], "--top must be 0 or more")):
        refused = run_hart("outpaint", str(tmp_path / "in.png"), *args, "a red square", "-o", str(tmp_path / "x.png"))
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert not (tmp_path / "x.png").exists()


def test_generate_draws_a_canvas_of_the_asked_size(tmp_path):
    result = run_hart("generate", "a red circle on a blue background", "--size", "128x64", "-n", "2", "-o",
                      str(tmp_path / "wide.png"))
    assert result.returncode == 0, result.stderr
    assert [Image.open(tmp_path / f"wide-{i}.png").size for i in range(2)] == [(128, 64)] * 2


def test_outpaint_to_a_larger_canvas_keeps_the_image_exactly(tmp_path):
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    result = run_hart("outpaint", str(tmp_path / "in.png"), "--to", "128x64", "--anchor", "right", "a red circle on a",
                      "blue background", "-o", str(tmp_path / "out.png"))
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (64, 128, 3) and np.array_equal(out[8:56, 64:], pixels)
    Image.new("RGB", (200, 64)).save(tmp_path / "wide.png")
    for image, args, message in (("in", ["--to", "96x64", "--left", "8"], "--to and --left are two ways to outpaint"),
                                 ("in", ["--to", "32x32"], "at least the trained size 64x64"),
                                 ("in", ["--to", "100x64"], "multiples of the model's latent cell"),
                                 ("in", ["--to", "128x64", "--anchor", "middle"], "--anchor takes one of center"),
                                 ("in", ["--to", "128x64", "--no-fill"], "--no-fill applies to outpainting within"),
                                 ("in", ["--to", "2x"], "--to takes WIDTHxHEIGHT"),
                                 ("wide", ["--to", "128x64"], "(200x64) does not fit on a 128x64 canvas")):
        refused = run_hart("outpaint", str(tmp_path / f"{image}.png"), *args, "a red square", "-o",
                           str(tmp_path / "x.png"))
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 2 and len(lines) == 1 and message in lines[0], (args, refused.stderr)
        assert not (tmp_path / "x.png").exists()


def test_fast_changes_the_image_and_its_evaluation_reports_every_variant(tmp_path):
    """--fast is an approximation (another image than exact, same size); `hart eval --task fast` measures it
    beside exact, which it calls exact (PSNR at the cap against itself) and within the budget."""
    import numpy as np

    from hart.approximations import FAST

    both = ["--unguided-scales", str(FAST.unguided_scales), "--residual-steps", str(FAST.residual_steps),
            "--prune-scales", str(FAST.pruned_scales), "--prune-ratio", str(FAST.prune_ratio)]
    for name, flags in (("exact", []), ("fast", ["--fast"]), ("flags", both)):
        result = run_hart("generate", "a red circle on a blue background", "-o", str(tmp_path / f"{name}.png"), *flags)
        assert result.returncode == 0, result.stderr
    exact, fast, flags = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("exact", "fast", "flags"))
    assert fast.shape == exact.shape and not np.array_equal(fast, exact)
    assert np.array_equal(fast, flags)  # --fast is those three approximations
    result = run_hart("eval", "--task", "fast", "--num-prompts", "4", "--batch-size", "4", "--latency-model", "tiny",
                      "--runs", "1", "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval" / "fast.json").read_text())
    from hart.approximations import VARIANTS

    assert [row["variant"] for row in report["variants"]] == [v.name for v in VARIANTS]
    exact_row = report["variants"][0]
    assert exact_row["within_budget"] and exact_row["psnr_vs_exact_db"] == 100.0 and exact_row["speedup_vs_exact"] == 1
    assert all(len(row["latency_seconds"]) == 1 for row in report["variants"])
    for name in ("fast.md", "fast_samples.png", "fast.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def test_one_pass_draws_a_two_object_prompt_as_the_model_alone_and_the_default_composes(tmp_path):
    import numpy as np

    from hart.pipeline import HARTPipeline

    prompt = "a small red circle on the left and a blue square on the right on a yellow background"
    for name, flags in (("composed", []), ("one-pass", ["--one-pass"])):
        result = run_hart("generate", prompt, "--seed", "3", "-o", str(tmp_path / f"{name}.png"), *flags)
        assert result.returncode == 0, result.stderr
    pipe = HARTPipeline.from_pretrained("tiny", "cpu")
    for name, compose in (("composed", True), ("one-pass", False)):
        want = pipe.generate([prompt], seed=3, compose=compose).pil_images()[0]
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")), np.asarray(want)), name
