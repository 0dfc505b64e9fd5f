"""The golden trace of the embedded model: the Python loop replays it exactly, the PyTorch pipeline
still produces it, and the manifest's own texts give the numbers it records."""

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hart import golden
from hart.checkpoints import load_pretrained, shipped_weights
from hart.strict import from_plain
from hart.export.manifest import describe_model
from hart.pipeline import HARTPipeline
from hart.portable.spec import RESIDUAL_GUIDANCE, to_uint8
from hart.runtime.manifest import RopeSection, TextSection

TRACE = Path(shipped_weights("tiny")) / golden.TRACE_FILE


@pytest.fixture(scope="module")
def tiny():
    return load_pretrained("tiny")


@pytest.fixture(scope="module")
def described(tiny):
    return describe_model(tiny)


def sections(described):
    return from_plain(TextSection, described["text"], "text"), from_plain(RopeSection, described["rope"], "rope")


def test_the_python_loop_replays_every_case(tiny, described):
    checked = golden.replay(TRACE, tiny.config, *sections(described))
    _, meta = golden.read(TRACE)
    assert {c["name"] for c in meta["cases"]} == {"defaults", "residual_guidance_1", "no_residual", "overrides", "edit"}
    for case in meta["cases"]:
        names = [c.split(": ", 1)[1] for c in checked if c.startswith(case["name"] + ":")]
        assert {"text ids", "condition rows", "step 5 cos", "scale 5 ids", "final residual", "pixels"} <= set(names)
        assert ("residual noise" in names) == (case["options"].get("residual", True))
        assert ("encoder image" in names) == ("edited ids 5" in names) == (case.get("task") == "edit")


def test_the_edit_case_keeps_the_encoders_ids_and_redraws_the_rest():
    """The trace's edit is a real one: at every scale some tokens are the encoder's and some are sampled
    differently, so a port that ignores the forcing (or forces everything) fails its replay."""
    arrays, meta = golden.read(TRACE)
    case = next(c for c in meta["cases"] if c.get("task") == "edit")
    name, ends = case["name"], np.cumsum([n * n for n in meta["patch_nums"]])
    encoder_ids = np.split(arrays[f"{name}/encoder_ids"], ends[:-1], axis=1)
    changed_somewhere = False
    for si, n in enumerate(meta["patch_nums"]):
        used, sampled = arrays[f"{name}/ids_{si}"], arrays[f"{name}/sampled_{si}"]
        from_encoder = used == encoder_ids[si]
        assert np.all(from_encoder | (used == sampled)), si
        changed_somewhere |= bool(np.any(used != sampled))
        if n > 1:
            assert from_encoder.any() and (used == sampled).any(), si
    assert changed_somewhere
    mask = arrays[f"{name}/mask"].astype(bool)
    assert np.array_equal(arrays[f"{name}/pixels"][0][~golden.edit.dilate(mask, 2)],
                          arrays[f"{case['source']}/pixels"][0][~golden.edit.dilate(mask, 2)])


def test_a_changed_trace_is_caught(tiny, described, tmp_path):
    arrays, meta = golden.read(TRACE)
    arrays["overrides/logits_3"] = arrays["overrides/logits_3"].copy()
    arrays["overrides/logits_3"][0, :, :] += np.linspace(0, 5, arrays["overrides/logits_3"].shape[-1], dtype=np.float32)
    golden.write(tmp_path / "t.safetensors", arrays, meta)
    with pytest.raises(AssertionError, match="case overrides: scale 3 ids differs"):
        golden.replay(tmp_path / "t.safetensors", tiny.config, *sections(described))


def test_a_changed_edit_case_is_caught(tiny, described, tmp_path):
    """The encoder's ids reach the loop's forced tokens: one changed kept id fails the replay at its scale."""
    arrays, meta = golden.read(TRACE)
    used, sampled = arrays["edit/ids_5"], arrays["edit/sampled_5"]
    # a kept id the sampler would not have drawn: an id equal to both could be a sampled one that matched
    kept = int(np.flatnonzero((used[0] == arrays["edit/encoder_ids"][0, -64:]) & (used[0] != sampled[0]))[0])
    arrays["edit/encoder_ids"] = arrays["edit/encoder_ids"].copy()
    arrays["edit/encoder_ids"][0, -64 + kept] = (used[0, kept] + 1) % 512
    assert used.shape == sampled.shape == (1, 64)
    golden.write(tmp_path / "t.safetensors", arrays, meta)
    with pytest.raises(AssertionError, match="case edit: scale 5 ids differs"):
        golden.replay(tmp_path / "t.safetensors", tiny.config, *sections(described))


def test_the_pytorch_pipeline_still_draws_the_trace(tiny):
    """Every case is one pass of the loop (compose=False); composition joins two such passes."""
    arrays, meta = golden.read(TRACE)
    pipe = HARTPipeline(tiny, device="cpu")
    for case in meta["cases"]:
        if case.get("task") == "edit":
            name = case["name"]
            result = pipe.loop.edit(arrays[f"{name}/input"], arrays[f"{name}/mask"][None].astype(bool),
                                    [case["prompt"]], seed=case["seed"], compose=False, **case["options"])
            wanted = [arrays[f"{name}/sampled_{si}"] for si in range(len(result.ids))]
            for si, ids in enumerate(result.image_ids):
                assert np.array_equal(np.asarray(ids), arrays[f"{name}/ids_{si}"]), (name, si)
        else:
            result = pipe.generate([case["prompt"]], seed=case["seed"], compose=False, **case["options"])
            wanted = [arrays[f"{case['tokens']}/ids_{si}"] for si in range(len(result.ids))]
        for si, ids in enumerate(result.ids):
            assert np.array_equal(np.asarray(ids), wanted[si]), (case["name"], si)
        error = to_uint8(result.images).astype(int) - arrays[f"{case['name']}/pixels"].astype(int)
        assert np.abs(error).max() <= 1, case["name"]  # the wrappers' graphs vs eager PyTorch: float rounding


def test_the_manifest_loop_text_gives_the_recorded_residual_guidance(described):
    """Follows the manifest's own `loop` text, not the Python code: its residual line names the formula."""
    _, meta = golden.read(TRACE)
    line = next(line for line in described["loop"] if line.startswith("residual = residual("))
    expression = re.search(r"guidance = (.+?)\)\s+#", line).group(1)
    assert described["spec"]["residual_guidance"].startswith(RESIDUAL_GUIDANCE)
    schedule = SimpleNamespace(progress=described["schedule"]["progress"])
    checked = 0
    for case in meta["cases"]:
        if "guidance" in case:
            names = {"cfg": case["settings"]["cfg"], "schedule": schedule, "K": len(schedule.progress),
                     "sampling": SimpleNamespace(residual_guidance=case["settings"]["residual_guidance"])}
            value = eval(expression, {"__builtins__": {}}, names)  # noqa: S307 (our own manifest text)
            assert np.float32(value) == np.float32(case["guidance"]), case["name"]
            checked += 1
    assert checked == 4  # every case with a residual, the edit included


def test_rounding_to_8_bits_is_half_to_even():
    values = np.array([0.5, 1.5, 2.5, 254.5], dtype=np.float32) / np.float32(255)
    pixels = to_uint8(torch.from_numpy(values).reshape(1, 1, 1, -1).repeat(1, 3, 1, 1))
    assert pixels[0, 0, :, 0].tolist() == np.round(np.clip(values, 0, 1) * np.float32(255)).astype(int).tolist()
