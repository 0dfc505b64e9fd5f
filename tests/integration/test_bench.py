"""`hart bench`: the quick mode end to end (slow), and the machine description and report rendering from
synthetic results (fast). No timings asserted."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from hart import cpu
from hart.bench import machine, report

OLD_RESULTS = Path(__file__).parents[2] / "benchmarks" / "results" / "cpu-2core" / "results.json"


@pytest.mark.slow
def test_quick_benchmark_writes_a_complete_report(onnx_export, tmp_path):
    exports = tmp_path / "exports" / "tiny" / "onnx"
    exports.parent.mkdir(parents=True)
    exports.symlink_to(onnx_export, target_is_directory=True)  # reuse the session's export
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--mode", "quick", "--runs", "2",
                             "--out", str(tmp_path / "report"), "--exports", str(tmp_path / "exports")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {"date", "cpu", "torch", "cpu_features"} <= set(results["machine"])
    assert results["matmul_peak_gflops"]["cpu_fp32"] > 0
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
    report_md = (tmp_path / "report" / "report.md").read_text()
    for heading in ("## End to end", "## Time per stage", "## Compute per stage", "CPU instruction sets: "):
        assert heading in report_md
    for plot in ("latency.png", "stages.png", "size_fidelity.png"):
        assert (tmp_path / "report" / plot).read_bytes()[:4] == b"\x89PNG"


def test_machine_records_the_cpu_instruction_sets():
    features = machine.describe()["cpu_features"]
    assert set(features["flags"]) <= set(cpu.CPU_FEATURES)
    for key in ("native_bf16", "native_int8_dot", "native_fp16"):
        assert features[key] in (True, False, None)
        if platform.system() == "Linux":
            assert isinstance(features[key], bool)
    assert features["torch_capability"] is None or isinstance(features["torch_capability"], str)
    json.dumps(features)  # goes into results.json


def test_cpu_flags_parse_on_x86_arm_and_macos():
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni amx_tile\n"
    assert cpu.parse_cpuinfo(x86) == {"avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile"}
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes fphp asimdhp asimddp i8mm bf16\nCPU part\t: 0xd0c\n"
    assert cpu.parse_cpuinfo(arm) == {"asimd", "fphp", "asimddp", "i8mm", "bf16"}
    assert cpu.parse_cpuinfo("processor\t: 0\nvendor_id\t: IBM/S390\n") is None
    mac = ("machdep.cpu.features: FPU SSE2 FMA AVX1.0 F16C\nmachdep.cpu.leaf7_features: AVX2 AVX512F AVX512VNNI\n"
           "hw.optional.arm.FEAT_BF16: 1\nhw.optional.arm.FEAT_I8MM: 0\nhw.optional.neon: 1\n")
    assert cpu.parse_sysctl(mac) == {"fma", "f16c", "avx2", "avx512f", "avx512_vnni", "bf16", "asimd"}


def _row(backend: str, device: str, precision: str, reference: bool = False) -> dict:
    stages = {"text": 0.01, "scale_0": 0.02, "residual": 0.03, "decode": 0.01}
    row = {"scenario": {"model": "tiny", "backend": backend, "batch": 1, "runtime": backend.split("-")[0],
                        "device": device, "precision": precision},
           "runs": 2, "wall_seconds": {"median": 0.1, "p90": 0.12}, "time_to_first_scale_seconds": 0.01,
           "load_seconds": 1.0, "peak_rss_mb": 400.0, "artifact_bytes": 2**20, "stage_seconds": stages}
    if reference:
        row["flops_per_stage"] = {stage: 1e9 for stage in stages}
    else:
        row["fidelity"] = {"token_agreement": 0.9, "psnr_db": 40.0}
    return row


def _results(cpu_features: dict | None) -> dict:
    info = {"date": "2026-01-01T00:00:00+00:00", "platform": "Linux", "cpu": "test CPU", "cpu_count": 2,
            "torch": "2.13.0", "memory_gb": 8.0}
    if cpu_features is not None:
        info["cpu_features"] = cpu_features
    rows = [_row("torch-cpu-fp32", "cpu", "fp32", reference=True), _row("torch-cpu-bf16", "cpu", "bf16"),
            _row("onnx-cpu-int8", "cpu", "int8"), _row("onnx-cpu-int4", "cpu", "int4"),
            _row("torch-cuda-bf16", "cuda", "bf16")]
    return {"mode": "quick", "machine": info, "matmul_peak_gflops": {"cpu_fp32": 100.0, "cpu_bf16": 200.0},
            "runs": 2, "warmup": 1, "results": rows, "skipped": []}


def _features(native: bool) -> dict:
    flags = ["avx2", "fma", "f16c"] + (["avx512f", "avx512_vnni", "avx512_bf16"] if native else [])
    return {"arch": "x86_64", "flags": flags, "torch_capability": "AVX512" if native else "AVX2",
            "native_bf16": native, "native_int8_dot": native, "native_fp16": False}


def test_report_marks_rows_this_cpu_has_no_native_instructions_for():
    text = report.markdown(_results(_features(native=False)))
    assert "CPU instruction sets: AVX2, FMA, F16C (torch: AVX2)." in text
    assert "| torch-cpu-bf16† |" in text and "| onnx-cpu-int4‡ |" in text
    assert "| onnx-cpu-int8 |" in text  # weight-only: float32 MatMuls, no int8 instructions to lack
    assert "| torch-cuda-bf16 |" in text  # the GPU's bf16 is not the CPU's
    assert report.FOOTNOTES["†"] in text and report.FOOTNOTES["‡"] in text


def test_report_does_not_mark_rows_on_a_cpu_with_native_instructions():
    text = report.markdown(_results(_features(native=True)))
    assert "CPU instruction sets: AVX2, FMA, F16C, AVX-512, AVX-512 VNNI, AVX-512 BF16 (torch: AVX512)." in text
    assert "| torch-cpu-bf16 |" in text and "| onnx-cpu-int4 |" in text
    assert not any(symbol in text for symbol in report.FOOTNOTES)


@pytest.mark.parametrize("old", ["synthetic", "committed"])
def test_results_without_cpu_features_still_render(old):
    if old == "committed" and not OLD_RESULTS.is_file():
        pytest.skip("no committed results")
    results = _results(None) if old == "synthetic" else json.loads(OLD_RESULTS.read_text())
    results["machine"].pop("cpu_features", None)
    text = report.markdown(results)
    assert "CPU instruction sets: not recorded." in text and "## End to end" in text
    assert not any(symbol in text for symbol in report.FOOTNOTES)


@pytest.mark.parametrize("show_progress", [True, False])
def test_the_progress_bar_names_each_export_and_scenario(tmp_path, monkeypatch, capsys, show_progress):
    pytest.importorskip("onnxruntime")

    from hart.bench import run

    exported = []
    monkeypatch.setattr(run.machine, "peaks", lambda: {"cpu_fp32": 1.0})
    monkeypatch.setattr(run, "run_scenario", lambda scenario, *args: _row(scenario.backend, "cpu", scenario.precision))
    monkeypatch.setattr(run.report, "write", lambda summary, out: None)
    monkeypatch.setattr(run, "export_in_child", lambda model, runtime, target, precisions, progress:
                        exported.append((target, precisions, progress)))
    backends = ("torch-cpu-fp32", "onnx-cpu-fp32", "onnx-cpu-int8")
    summary = run.run_benchmark("quick", tmp_path / "report", ("tiny",), backends, (1,), 1, 0, tmp_path / "exports",
                                show_progress=show_progress)
    assert len(summary["results"]) == 3 and not summary["skipped"]
    assert exported == [(tmp_path / "exports" / "tiny" / "onnx", ("fp32", "int8"), show_progress)]
    err = capsys.readouterr().err
    names = ["bench: matmul peaks", "bench: exporting tiny for onnx (fp32, int8)",
             *(f"bench: tiny/{b}/b1" for b in backends)]
    assert all((name in err) == show_progress for name in names), err


def test_official_needs_a_clone_and_its_stand_in_kernels_are_this_projects_arithmetic(tmp_path):
    """`--official` takes only a folder holding the official package; the worker's CPU stand-ins for the
    official CUDA kernels compute what this project's RMSNorm and RoPE compute."""
    import torch

    from hart.bench import official_worker
    from hart.bench.run import check_official
    from hart.errors import HartError
    from hart.models.layers import RMSNorm
    from hart.models.rope import apply_rope

    with pytest.raises(HartError, match=r"is not a clone of mit-han-lab/hart \(no hart/modules/models/transformer"):
        check_official(tmp_path)
    official_worker._plain_kernels()
    kernels = sys.modules["hart_backend.fused_kernels"]
    x = torch.randn(2, 5, 64)
    norm = RMSNorm(64)
    torch.nn.init.normal_(norm.weight)
    out = torch.empty_like(x)
    kernels.rms_norm(out, x, norm.weight.data, norm.eps)
    assert torch.equal(out, norm(x))
    t = torch.randn(7, 2, 3, 16)  # [S, B, H, D]
    angles = torch.randn(7, 1, 1, 16)
    cos, sin = angles.cos()[None, :, 0, 0], angles.sin()[None, :, 0, 0]  # [1, S, D]
    want = apply_rope(t.permute(1, 2, 0, 3), cos, sin).permute(2, 0, 1, 3)
    assert torch.allclose(kernels.fused_rope_forward_func(t, angles), want, atol=1e-6)


def test_flops_counted_on_meta_tensors_are_the_cpu_runs_with_attention_counted():
    """The meta count (no arithmetic) equals FlopCounterMode on the real CPU run when attention runs as
    plain matmuls; CPU's fused attention kernel would be missed, so the real run alone undercounts."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from hart.bench.estimate import PROMPT, count_flops
    from hart.checkpoints import load_pretrained
    from hart.pipeline import HARTPipeline

    pipe = HARTPipeline(load_pretrained("tiny"), "cpu")
    pipe.generate([PROMPT], seed=0)  # the unconditional prefix kept, as count_flops has it

    def real(math: bool) -> dict[str, int]:
        counts, done = {}, [0]
        with sdpa_kernel(SDPBackend.MATH) if math else nullcontext(), FlopCounterMode(display=False) as counter:
            def stage(event):
                counts[event.stage] = counter.get_total_flops() - done[0]
                done[0] = counter.get_total_flops()
            pipe.generate([PROMPT], seed=0, callback=stage)
        return counts

    meta = count_flops(pipe.config)
    assert meta == real(math=True)
    assert sum(real(math=False).values()) < sum(meta.values())
    unshared = count_flops(pipe.config, share_prefix=False)
    assert unshared["scale_0"] > meta["scale_0"] and unshared["scale_5"] == meta["scale_5"]


def test_estimates_lend_each_stage_the_rate_its_nearest_measured_stage_achieved():
    from hart.bench.estimate import estimate_seconds

    measured = {"text": 1e9, "scale_0": 1e10, "scale_1": 1e9, "scale_2": 4e9, "residual": 2e9, "decode": 3e9}
    seconds = {"text": 0.1, "scale_0": 0.1, "scale_1": 0.02, "scale_2": 0.04, "residual": 0.01, "decode": 0.03}
    got = estimate_seconds({"scale_0": 1e10, "scale_1": 1e9, "scale_2": 8e9, "scale_3": 3e10, "residual": 8e9,
                            "decode": 3e10, "text": 0.0}, measured, seconds)
    assert got == pytest.approx({"scale_0": 0.1, "scale_1": 0.02, "scale_2": 0.08, "scale_3": 0.3,
                                 "residual": 0.04, "decode": 0.3})


def test_an_export_runs_in_a_child_and_its_failure_is_one_sentence(tmp_path):
    """The benchmark's exports run as `hart export` in a process of their own (their memory is the system's
    again before the scenarios); a failed one says which export and the child's own last line."""
    from hart.bench.run import export_in_child
    from hart.errors import HartError

    with pytest.raises(HartError, match=r"exporting no-such-model for onnx \(fp32\) failed with exit code 2: .*"
                                        r"'no-such-model' is neither a model folder nor a preset"):
        export_in_child("no-such-model", "onnx", tmp_path / "x", ("fp32",), False)
    assert not (tmp_path / "x").exists()
