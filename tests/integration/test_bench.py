"""`hart bench --mode quick`: the embedded model on the CPU backends, a well-formed report (no timings asserted)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_a_complete_report(onnx_export, tmp_path):
    exports = tmp_path / "exports" / "tiny" / "onnx"
    exports.parent.mkdir(parents=True)
    exports.symlink_to(onnx_export, target_is_directory=True)  # reuse the session's export
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--mode", "quick", "--runs", "2",
                             "--out", str(tmp_path / "report"), "--exports", str(tmp_path / "exports")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {"date", "cpu", "torch"} <= set(results["machine"]) and results["matmul_peak_gflops"]["cpu_fp32"] > 0
    backends = {r["scenario"]["backend"] for r in results["results"]}
    assert backends == {"torch-cpu-fp32", "torch-cpu-bf16", "onnx-cpu-fp32", "onnx-cpu-int8"}
    for r in results["results"]:
        assert r["runs"] == 2 and r["wall_seconds"]["median"] > 0 and r["peak_rss_mb"] > 0
        assert set(r["stage_seconds"]) >= {"text", "scale_0", "residual", "decode"}
        assert r["artifact_bytes"] > 0
        if r["scenario"]["backend"] == "torch-cpu-fp32":
            assert sum(r["flops_per_stage"].values()) > 0
        else:
            assert 0 <= r["fidelity"]["token_agreement"] <= 1
    onnx_fp32 = next(r for r in results["results"] if r["scenario"]["backend"] == "onnx-cpu-fp32")
    assert onnx_fp32["fidelity"]["token_agreement"] >= 0.999 and onnx_fp32["fidelity"]["psnr_db"] >= 40
    report = (tmp_path / "report" / "report.md").read_text()
    for heading in ("## End to end", "## Time per stage", "## Compute per stage"):
        assert heading in report
    for plot in ("latency.png", "stages.png", "size_fidelity.png"):
        assert (tmp_path / "report" / plot).read_bytes()[:4] == b"\x89PNG"
