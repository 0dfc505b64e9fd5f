"""Hostile inputs, generated: every mutated argument, config.json, safetensors header and manifest.json
ends in a valid image or in one clear line with exit status 2 (tests/integration/fuzz_inputs.py)."""

import json
import subprocess
import sys

import pytest

from tests.integration.fuzz_inputs import REPO

CASES_PER_CATEGORY = 75  # 300 cases: about 25 s on an idle 2-core CPU


@pytest.mark.slow
def test_mutated_inputs_end_in_an_image_or_one_clear_line(onnx_export, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.integration.fuzz_inputs", "--export",
                             str(onnx_export / "int8"), "--work", str(tmp_path / "work"), "--seed", "0",
                             "--cases", str(CASES_PER_CATEGORY)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    print(json.dumps({k: summary[k] for k in ("cases", "outcomes", "by_category", "seconds")}))
    failures = "\n".join(f"{f['category']}: {f['case']} -> {f['outcome']}: {f['detail']}" for f in summary["failures"])
    assert not summary["failures"], failures
    assert summary["cases"] == 4 * CASES_PER_CATEGORY
    # the generator reaches both ends: some inputs generate, some are refused, in every category
    assert summary["by_category"]["cli"].get("ok", 0) and summary["by_category"]["manifest.json"].get("ok", 0)
    assert all(counts.get("refused", 0) for counts in summary["by_category"].values())


def test_the_judge_catches_what_it_promises_to(tmp_path):
    """The fuzz test's own checks fail when they should: a traceback, two lines, a leftover, a flat image."""
    from PIL import Image

    from tests.integration.fuzz_inputs import judge, shown_lines

    judged = lambda code, err, outputs=(), reads=(): judge(code, err, None, list(reads), tmp_path, list(outputs),  # noqa: E731
                                                           set(), [tmp_path])[0]
    assert judged(2, "hart generate: error: bad\n") == "refused"
    assert judged(2, "bar 10%\rhart generate: error: bad\n") == "refused"  # the bar is overwritten on a terminal
    assert judged(2, "one\ntwo\n") == "multi-line"
    assert judged(1, "Traceback (most recent call last):\n  x\n") == "traceback"
    assert judged(3, "x\n") == "bad-exit"
    assert judged(2, "x\n", reads=["/root/secret"]) == "read-outside"
    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (0, 0, 0)).save(flat)
    assert judged(0, "", outputs=[flat]) == "broken-image"
    assert judged(0, "", outputs=[tmp_path / "missing.png"]) == "no-image"
    (tmp_path / ".out.png.tmp-1-abcdef12").write_bytes(b"")
    assert judged(2, "x\n") == "leftover"
    assert shown_lines("a\rb\n\nc\n") == ["b", "c"]
