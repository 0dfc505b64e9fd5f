"""results.json -> report.md (tables laid out like Apple's and Qualcomm AI Hub's model cards) + PNG plots."""

import json
from pathlib import Path

from hart.atomic import atomic_file

PLOTS = ("latency.png", "stages.png", "size_fidelity.png")

# machine.CPU_FEATURES -> the names the header prints, in this order
FEATURE_LABELS = {
    "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16", "avx512_fp16": "AVX-512 FP16", "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "asimd": "NEON", "asimddp": "DotProd", "bf16": "BF16",
    "i8mm": "I8MM", "fphp": "FP16",
}
# mark -> footnote, for CPU rows whose precision this CPU has no native instructions for
FOOTNOTES = {
    "†": "† emulated: this CPU has no native bf16 (AVX-512 BF16, AMX-BF16 or Arm BF16); bf16 is converted "
         "to and from float32 around the arithmetic, so the row measures an emulation.",
    "‡": "‡ no VNNI: this CPU has no native int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX-INT8 or Arm "
         "DotProd/I8MM), so the int8 kernels of int4 (MatMulNBits at accuracy level 4) and qdq run on longer "
         "instruction sequences. The int8 backend is weight-only (float32 MatMuls) and does not use them.",
    "§": "§ emulated: this CPU has no native fp16 arithmetic (AVX-512 FP16 or Arm FP16); fp16 is computed "
         "in float32.",
}
# precision -> (machine.cpu_features boolean it needs, its FOOTNOTES mark); int8 is weight-only: float32 MatMuls
_NATIVE = {"bf16": ("native_bf16", "†"), "fp16": ("native_fp16", "§"), "int4": ("native_int8_dot", "‡"),
           "qdq": ("native_int8_dot", "‡")}


def _stage_names(rows: list[dict]) -> list[str]:
    """Every row's stages in loop order (text, scale_0, scale_1, ..., residual, decode): models of one report
    have different scale counts, so no single row names them all."""
    def order(name: str) -> tuple[int, int]:
        if name.startswith("scale_"):
            return 1, int(name.split("_")[1])
        return {"text": (0, 0), "residual": (2, 0), "codes": (2, 0), "decode": (3, 0)}.get(name, (4, 0))

    return sorted({name for r in rows for name in r["stage_seconds"]}, key=order)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _peak_for(result: dict, peaks: dict) -> float | None:
    scenario = result["scenario"]
    if scenario["device"] == "cuda":
        return peaks.get("cuda_bf16" if scenario["precision"] == "bf16" else "cuda_fp16")
    return peaks.get("cpu_bf16" if scenario["precision"] == "bf16" else "cpu_fp32")


def instruction_sets(machine: dict) -> str:
    """The header line naming the CPU's instruction sets, so a bf16 or int8 number can be read for what it is."""
    cpu = machine.get("cpu_features")
    if not cpu:
        return "CPU instruction sets: not recorded."
    names = [label for flag, label in FEATURE_LABELS.items() if flag in cpu.get("flags", ())]
    known = cpu.get("native_bf16") is not None
    text = ", ".join(names) or ("none of AVX2, AVX-512, AMX, NEON" if known else "not reported by the OS")
    torch = f" (torch: {cpu['torch_capability']})" if cpu.get("torch_capability") else ""
    return f"CPU instruction sets: {text}{torch}."


def mark(scenario: dict, machine: dict) -> str:
    """The FOOTNOTES mark of a CPU row whose precision lacks native instructions here ('' if none or unknown)."""
    feature, symbol = _NATIVE.get(scenario["precision"], ("", ""))
    cpu = machine.get("cpu_features") or {}
    return symbol if scenario["device"] == "cpu" and feature and cpu.get(feature) is False else ""


def _footnotes(rows: list[dict], machine: dict) -> list[str]:
    marks = {mark(r["scenario"], machine) for r in rows} - {""}
    return ["", *(FOOTNOTES[m] for m in FOOTNOTES if m in marks)] if marks else []


def _speedup(row: dict, rows: list[dict]) -> str:
    """The official code's median over this row's (same model and batch), or a dash without an official row."""
    s = row["scenario"]
    official = [r for r in rows if r["scenario"].get("runtime") == "official" and r["scenario"]["model"] == s["model"]
                and r["scenario"]["batch"] == s["batch"]]
    return f"{official[0]['wall_seconds']['median'] / row['wall_seconds']['median']:.2f}x" if official else "—"


def _estimates(estimated: list[dict], rows: list[dict]) -> list[str]:
    """The estimated rows (hart/bench/estimate.py): totals, the speed-up against the official code's estimate,
    and the stages that dominate."""
    if not estimated:
        return []
    lines = ["", "## Estimated, not measured", "",
             "Models too slow to time here: their FLOPs per stage counted on meta tensors, each stage at the FLOP "
             "rate the row named measured on its model's stage of the same kind (a scale: the measured scale of the "
             "nearest FLOP count). An estimate, not a measurement: cache effects of longer sequences are not in it.",
             "", "| model | from (measured) | estimated s | speed-up vs official (estimated) | largest stages (s) |",
             "|---|---|---|---|---|"]
    official = {e["model"]: e["total_seconds"] for e in estimated if e["backend"] == "official-cpu-fp32"}
    for e in estimated:
        ratio = official.get(e["model"])
        speedup = "official" if e["backend"] == "official-cpu-fp32" else (
            f"{ratio / e['total_seconds']:.2f}x" if ratio else "—")
        largest = sorted(e["stage_seconds"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"| {e['model']} | {e['backend']} @ {e['from_model']} | {e['total_seconds']:.1f} | {speedup} | "
                     + ", ".join(f"{k} {v:.1f}" for k, v in largest) + " |")
    return lines


def markdown(results: dict) -> str:
    machine, peaks, rows = results["machine"], results["matmul_peak_gflops"], results["results"]

    def backend(r: dict) -> str:
        return r["scenario"]["backend"] + mark(r["scenario"], machine)

    lines = [
        f"# HART benchmark: {machine['cpu']}{' + ' + machine['gpu'] if 'gpu' in machine else ''}", "",
        f"{machine['date']} · {machine['platform']} · {machine['cpu_count']} CPUs · "
        f"{machine.get('memory_gb', '?')} GB · "
        f"torch {machine['torch']} · onnxruntime {machine.get('onnxruntime', '—')} · {results['mode']} mode", "",
        instruction_sets(machine), "",
        "Measured matmul peak (same run): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + ".", "",
        f"Median and p90 of {results['runs']} runs after {results['warmup']} warm-up run(s), each in a fresh process "
        "(peak memory is the process's). The 0.7B presets run with random weights and random text features: latency "
        "does not depend on weight values. Fidelity compares each backend's image and tokens with PyTorch fp32 eager "
        "on the CPU for the same prompts and seeds.", "",
        "## End to end", "",
        "| model | backend | precision | batch | median (s) | p90 (s) | time to first scale (s) | load (s) "
        "| peak memory (MB) | artifact (MB) | tokens = fp32 | PSNR vs fp32 (dB) | speed-up vs official |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, fidelity = r["scenario"], r.get("fidelity", {})
        memory = r.get("cuda_max_allocated_mb", r["peak_rss_mb"])
        official = r["scenario"].get("runtime") == "official"
        lines.append(f"| {s['model']} | {backend(r)} | {s['precision']} | {s['batch']} | "
                     f"{_fmt(r['wall_seconds']['median'])} | {_fmt(r['wall_seconds']['p90'])} | "
                     f"{_fmt(r['time_to_first_scale_seconds'])} | "
                     f"{_fmt(r['load_seconds'], 1)} | {memory:.0f} | {r['artifact_bytes'] / 2**20:.1f} | "
                     f"{'reference' if 'flops_per_stage' in r else _fmt(fidelity.get('token_agreement'))} | "
                     f"{'reference' if 'flops_per_stage' in r else _fmt(fidelity.get('psnr_db'), 1)} | "
                     f"{'official' if official else _speedup(r, rows)} |")
    lines += _footnotes(rows, machine)
    if any(r["scenario"].get("runtime") == "official" for r in rows):
        commit = next(r.get("official_commit") for r in rows if r["scenario"].get("runtime") == "official")
        lines += ["", f"official-cpu-fp32: the official mit-han-lab/hart code (commit {commit or 'unknown'}), "
                  "timed the same way in a process of its own (`hart bench --official PATH`, hart/bench/"
                  "official_worker.py): fp32 on the CPU, random weights and random text features, its CUDA-only "
                  "fused RMSNorm and RoPE kernels replaced by plain PyTorch and `.cuda()` a no-op. Speed-up = its "
                  "median / the row's median, same model and batch; its stages come from hooks on its modules "
                  "(scale 0 includes the text prefix, as here)."]
    if any(r["scenario"].get("fast") for r in rows):
        from hart.approximations import FAST

        lines += ["", f"-fast rows: `--fast`, opt-in approximations that change the image ({FAST.describe()}; "
                  "exports keep their unrolled residual steps), so their tokens and PSNR against fp32 measure "
                  "the approximation, not a precision; their cost in prompt adherence is `hart eval --task fast`'s."]
    stages = _stage_names(rows)
    lines += ["", "## Time per stage (median seconds)", "",
              "| model | backend | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for r in rows:
        lines.append(f"| {r['scenario']['model']} | {backend(r)} | "
                     + " | ".join(_fmt(r["stage_seconds"].get(k)) for k in stages) + " |")
    lines += _footnotes(rows, machine)
    lines += ["", "## Compute per stage", "",
              "FLOPs of the exact loop (matmuls, convolutions, attention) from torch's FlopCounterMode over meta "
              "tensors (hart/bench/estimate.py; on the CPU's own tensors it misses the fused attention kernel), "
              "in a loaded model's steady state (the unconditional text row kept; the official code recomputes "
              "it, so its scale_0 rate is understated by the row it repeats); achieved = FLOPs / median stage "
              "time.", "",
              "| model | backend | stage | GFLOP | achieved GFLOP/s | % of matmul peak |", "|---|---|---|---|---|---|"]
    flops = {r["scenario"]["model"]: r["flops_per_stage"] for r in rows if "flops_per_stage" in r}
    for r in rows:
        counts, peak = flops.get(r["scenario"]["model"], {}), _peak_for(r, peaks)
        for stage, count in counts.items():
            seconds = r["stage_seconds"].get(stage)
            if not seconds or count == 0:
                continue
            achieved = count / seconds / 1e9
            lines.append(f"| {r['scenario']['model']} | {backend(r)} | {stage} | {count / 1e9:.3f} | "
                         f"{achieved:.1f} | {100 * achieved / peak:.0f} % |" if peak else "| — |")
    lines += _footnotes([r for r in rows if r["scenario"]["model"] in flops], machine)
    lines += _estimates(results.get("estimates", []), rows)
    if results["skipped"]:
        lines += ["", "## Not run here", "", "| model | backend | reason |", "|---|---|---|"]
        lines += [f"| {s['model']} | {s['backend']} | {s['reason']} |" for s in results["skipped"]]
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def plots(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    labels = [f"{r['scenario']['model']}\n{r['scenario']['backend']}" for r in rows]

    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    medians = [r["wall_seconds"]["median"] for r in rows]
    errors = [r["wall_seconds"]["p90"] - r["wall_seconds"]["median"] for r in rows]
    axis.bar(range(len(rows)), medians, yerr=[[0] * len(rows), errors], color="#4878cf", capsize=3)
    axis.set_xticks(range(len(rows)), labels, fontsize=7)
    axis.set_ylabel("seconds per generation (median, p90 whisker)")
    axis.set_title("End-to-end latency")
    _save(figure, folder / "latency.png")

    stages = _stage_names(rows)
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    bottom = [0.0] * len(rows)
    colors = plt.get_cmap("tab20")
    for i, stage in enumerate(stages):
        values = [r["stage_seconds"].get(stage, 0.0) for r in rows]
        axis.bar(range(len(rows)), values, bottom=bottom, label=stage, color=colors(i % 20))
        bottom = [b + v for b, v in zip(bottom, values)]
    axis.set_xticks(range(len(rows)), labels, fontsize=7)
    axis.set_ylabel("seconds (median per stage)")
    axis.set_title("Where the time goes")
    axis.legend(fontsize=6, ncol=2)
    _save(figure, folder / "stages.png")

    figure, axis = plt.subplots(figsize=(6, 4))
    for r in rows:
        psnr = 100.0 if "flops_per_stage" in r else r.get("fidelity", {}).get("psnr_db")
        if psnr is not None:
            axis.scatter(r["artifact_bytes"] / 2**20, psnr)
            axis.annotate(f"{r['scenario']['model']} {r['scenario']['backend']}", (r["artifact_bytes"] / 2**20, psnr),
                          fontsize=6)
    axis.set_xlabel("artifact size (MB)")
    axis.set_ylabel("PSNR vs PyTorch fp32 (dB, 100 = identical)")
    axis.set_title("Size against fidelity")
    _save(figure, folder / "size_fidelity.png")


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    import matplotlib.pyplot as plt

    plt.close(figure)


def write(results: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_file(folder / "report.md") as tmp:
        tmp.write_text(markdown(results))
    plots(results, folder)
