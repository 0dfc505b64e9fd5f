"""Bad input ends early, in one sentence, and leaves nothing behind (see also test_fuzz.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hart.atomic import atomic_directory, atomic_file, check_writable, remove_stale
from hart.checkpoints.io import load_weights_only
from hart.checkpoints.official import read_official_state
from hart.config import HARTConfig, preset
from hart.errors import CheckpointError, ConfigError, HartError

TINY = Path(__file__).resolve().parents[2] / "hart" / "assets" / "tiny"


def dead_pid() -> int:
    """A process id that no process has now (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temp_folder_is_removed_by_the_next_write_and_a_live_ones_kept(tmp_path):
    stale = tmp_path / f".out.tmp-{dead_pid()}-0123abcd"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "big.onnx").write_bytes(b"x" * 1000)
    live = tmp_path / f".out.tmp-{os.getpid()}-0123abcd"
    live.mkdir()
    unrelated = tmp_path / ".other.tmp-1-0123abcd"
    unrelated.mkdir()
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("new")
    assert not stale.exists() and live.is_dir() and unrelated.is_dir()
    assert (tmp_path / "out" / "a.txt").read_text() == "new"


def test_a_previous_version_set_aside_by_a_killed_writer_is_restored(tmp_path):
    aside = tmp_path / f".out.old-{dead_pid()}-0123abcd"
    aside.mkdir()
    (aside / "a.txt").write_text("old")
    assert remove_stale(tmp_path / "out") == []
    assert (tmp_path / "out" / "a.txt").read_text() == "old" and not aside.exists()


def test_temp_names_carry_the_writers_pid(tmp_path):
    with atomic_file(tmp_path / "x.png") as tmp:
        assert tmp.name.startswith(f".x.png.tmp-{os.getpid()}-")
        tmp.write_bytes(b"1")


@pytest.mark.parametrize("make, message", [
    (lambda p: (p / "d.png").mkdir(), "is a folder"),
    (lambda p: (p / "file").write_text("x"), "is a file, not a folder"),
])
def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, make, message):
    make(tmp_path)
    target = tmp_path / "d.png" if message == "is a folder" else tmp_path / "file" / "x.png"
    with pytest.raises(HartError, match=message):
        check_writable(target)
    check_writable(tmp_path / "new" / "deeper" / "x.png")  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("section, field, value", [
    ("transformer", "depth", 10**12), ("transformer", "width", 192 * 10**6), ("tokenizer", "vocab_size", 10**13),
    ("text", "max_tokens", 10**9), ("residual_head", "sampling_steps", 10**6),
])
def test_absurd_sizes_are_refused_by_name_before_anything_is_built(tmp_path, section, field, value):
    data = json.loads((TINY / "config.json").read_text())
    data[section][field] = value
    if (section, field) == ("residual_head", "sampling_steps"):
        data[section]["train_steps"] = 10**6
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"config.json.*{section}\.{field} must be at most"):
        HARTConfig.from_json_file(tmp_path / "config.json")


@pytest.mark.parametrize("content", [b"\xff\xfe{", b'{"name": NaN}', b"[1, 2]"])
def test_unreadable_configs_are_one_sentence(tmp_path, content):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ConfigError, match="config.json"):
        HARTConfig.from_json_file(tmp_path / "config.json")


def test_a_config_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match="is not a file"):
        HARTConfig.from_json_file(tmp_path / "config.json")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_weights_stored_as_integers_or_booleans_are_named(tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    from hart.checkpoints import load_model

    folder = Path(shutil.copytree(TINY, tmp_path / "m"))
    state = load_file(folder / "residual_head.safetensors")
    key = sorted(state)[0]
    state[key] = state[key].to(dtype)
    save_file(state, folder / "residual_head.safetensors")
    with pytest.raises(CheckpointError, match=rf"{key} is stored as {str(dtype)[6:]}, expected floating-point"):
        load_model(folder)


def test_pickles_needing_code_are_refused_in_one_line_without_torchs_advice(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"weight": torch.zeros(2), "hook": HARTConfig}, path)
    with pytest.raises(CheckpointError) as refused:
        load_weights_only(path)
    message = str(refused.value)
    assert "\n" not in message and "weights_only=False" not in message and "hart.config.HARTConfig" in message
    (tmp_path / "garbage.bin").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a weights-only torch file"):
        load_weights_only(tmp_path / "garbage.bin")


def test_legacy_non_zip_pickles_load_without_mmap(tmp_path):
    state = {"blocks.0.attn.proj.weight": torch.arange(6.0).view(2, 3)}
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    torch.save(state, tmp_path / "zip.bin")
    for name in ("legacy.bin", "zip.bin"):
        assert torch.equal(read_official_state(tmp_path / name)["blocks.0.attn.proj.weight"], state[
            "blocks.0.attn.proj.weight"])


def test_sampling_settings_name_the_one_out_of_range():
    from hart.portable.spec import SamplingSettings

    config = preset("tiny")
    with pytest.raises(ConfigError, match=r"^sampling setting temperature must be in \[0.001, 100\] \(got 1e-45\)$"):
        SamplingSettings.resolve(config.sampling, config.num_scales, temperature=1e-45)
    with pytest.raises(ConfigError, match="sampling setting cfg must be a finite number"):
        SamplingSettings.resolve(config.sampling, config.num_scales, cfg=float("inf"))


def test_after_a_real_sigkill_mid_write_the_next_write_cleans_up(tmp_path):
    """A writer killed with SIGKILL (no `finally` runs) leaves its temp folder; the next write removes it."""
    import signal
    import time

    script = ("import sys, time; from hart.atomic import atomic_directory\n"
              f"with atomic_directory({str(tmp_path / 'out')!r}) as tmp:\n"
              "    (tmp / 'half.bin').write_bytes(b'x' * 100000); print('writing', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = list(tmp_path.glob(".out.tmp-*"))
    assert len(left) == 1 and (left[0] / "half.bin").is_file() and not (tmp_path / "out").exists()
    deadline = time.time() + 5
    while time.time() < deadline and Path(f"/proc/{child.pid}").exists():  # reaped above; be safe on slow hosts
        time.sleep(0.05)
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert not list(tmp_path.glob(".out.*")) and (tmp_path / "out" / "whole.bin").is_file()
