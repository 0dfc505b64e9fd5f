"""`python -m export` (the top-level export/ folder) is `hart export` under another name."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_both_formats():
    result = run("export", "--help")
    assert result.returncode == 0, result.stderr
    assert "onnx" in result.stdout and "coreml" in result.stdout


def test_a_bad_model_fails_in_one_line_as_hart_export_does(tmp_path):
    args = ("onnx", "--model", "/nonexistent", "--out", str(tmp_path / "out"))
    result, hart = run("export", *args), run("hart", "export", *args)
    assert result.returncode == hart.returncode == 2
    assert result.stderr == hart.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "/nonexistent" in result.stderr
    assert not (tmp_path / "out").exists()
