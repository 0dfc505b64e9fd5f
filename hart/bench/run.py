"""`hart bench` / `python -m benchmarks`: plan the scenarios, build the exports they need, run each in
its own process, and write results.json, report.md and the plots."""

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from hart.bench import machine, report
from hart.bench.scenarios import FULL, MODELS, OFFICIAL, QUICK, REFERENCE, Scenario, plan
from hart.errors import HartError

log = logging.getLogger(__name__)
WORKER_TIMEOUT = 3600
OFFICIAL_MARKER = "hart/modules/models/transformer/hart_transformer_t2i.py"  # what makes a folder the official code


def _export_folder(scenario: Scenario, exports: Path) -> Path:
    return exports / scenario.model / scenario.runtime / scenario.precision


def missing_exports(scenarios: list[Scenario], exports: Path) -> dict[tuple[str, str], tuple[str, ...]]:
    """(model, runtime) -> precisions for every export the scenarios need that `exports` lacks (existing
    ones are reused), so the progress bar can count the exports before they start."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for s in scenarios:
        if s.runtime in ("onnx", "coreml"):
            wanted.setdefault((s.model, s.runtime), set()).add(s.precision)
    return {key: tuple(sorted(precisions)) for key, precisions in wanted.items()
            if not all((exports / key[0] / key[1] / p / "manifest.json").is_file() for p in precisions)}


def prepare_exports(scenarios: list[Scenario], exports: Path, bar: tqdm | None = None) -> None:
    """Export every (model, runtime) the scenarios need, once, each in a process of its own. With an enabled
    `bar`, each export is one step of it, named in its description, and the export shows its own steps."""
    show_progress = bar is not None and not bar.disable
    for (model_name, runtime), precisions in missing_exports(scenarios, exports).items():
        if bar is not None:
            bar.set_description(f"bench: exporting {model_name} for {runtime} ({', '.join(precisions)})")
        log.info("exporting %s for %s (%s)", model_name, runtime, ", ".join(precisions))
        export_in_child(model_name, runtime, exports / model_name / runtime, precisions, show_progress)
        if bar is not None:
            bar.update()


def export_in_child(model_name: str, runtime: str, target: Path, precisions: tuple[str, ...],
                    show_progress: bool) -> None:
    """`hart export` in a child process, so that what an export held is the system's again before the
    scenarios run: exported inside this process, the 0.7B's 13 GB stayed with it, and beside an ONNX
    int8 worker (12 GB) a 23.5 GB machine killed the benchmark. The 0.7B presets export random weights
    (timing only) with one parity seed; the embedded model its trained weights with the export's 20."""
    command = [sys.executable, "-m", "hart", "export", runtime, "--model", model_name, "--out", str(target),
               "--overwrite"]
    if model_name != "tiny":
        command += ["--text-encoder", "random"]
    command += (["--precision", ",".join(precisions), "--parity-seeds", "20" if model_name == "tiny" else "1"]
                if runtime == "onnx" else ["--compress", ",".join(precisions)])
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=None if show_progress else subprocess.PIPE,
                          text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0:
        said = (done.stderr or "").strip().splitlines()
        raise HartError(f"exporting {model_name} for {runtime} ({', '.join(precisions)}) failed with exit code "
                        f"{done.returncode}" + (f": {said[-1]}" if said else " (its messages are above)"))


def check_official(path: str | Path) -> Path:
    """A local clone of mit-han-lab/hart (the folder holding its `hart/` package), refused in one sentence."""
    folder = Path(path).expanduser().resolve()
    if not (folder / OFFICIAL_MARKER).is_file():
        raise HartError(f"--official {path} is not a clone of mit-han-lab/hart (no {OFFICIAL_MARKER} in it); "
                        "git clone https://github.com/mit-han-lab/hart and give its folder")
    return folder


def _commit(folder: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def run_scenario(scenario: Scenario, exports: Path, reference: Path, runs: int, warmup: int,
                 official: Path | None = None) -> dict:
    job = {"scenario": scenario.to_dict(), "runs": runs, "warmup": warmup, "reference": str(reference),
           "is_reference": scenario.backend == REFERENCE, "export": str(_export_folder(scenario, exports))}
    command = [sys.executable, "-m", "hart.bench.worker"]
    if scenario.runtime == "official":  # a script of its own: the official package is also named `hart`
        from hart.checkpoints import load_config
        from hart.checkpoints.official import official_kwargs

        job.update(official_kwargs(load_config(scenario.model)), official=str(official), batch=scenario.batch,
                   commit=_commit(official))
        command = [sys.executable, str(Path(__file__).with_name("official_worker.py"))]
    process = subprocess.run([*command, json.dumps(job)], capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                             cwd=tempfile.gettempdir())
    if process.returncode != 0:
        last = (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise HartError(f"{scenario.key} failed: {last}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_benchmark(mode: str, out: str | Path, models=None, backends=None, batches=None, runs=None, warmup=None,
                  exports: str | Path | None = None, show_progress: bool = False,
                  official: str | Path | None = None) -> dict:
    """Measure the scenarios of `mode` (narrowed by the arguments) and write the report to `out`.

    show_progress: a tqdm bar on stderr over the exports and scenarios, naming the one under way, since a
    quick run takes minutes and a full one far longer. Each scenario runs in a worker process whose
    output is captured, so this bar is the only one shown."""
    defaults = QUICK if mode == "quick" else FULL
    models, backends = tuple(models or defaults["models"]), tuple(backends or defaults["backends"])
    batches, runs = tuple(batches or defaults["batches"]), runs or defaults["runs"]
    warmup = defaults["warmup"] if warmup is None else warmup
    if runs < 1 or warmup < 0 or min(batches) < 1:
        raise HartError("benchmarks need runs >= 1, warmup >= 0 and batch sizes >= 1")
    official = check_official(official) if official is not None else None
    started = time.perf_counter()
    scenarios, skipped = plan(models, backends, batches, official is not None)
    info = machine.describe()
    with tempfile.TemporaryDirectory(prefix="hart-bench-") as scratch:
        exports = Path(exports) if exports else Path(scratch) / "exports"
        steps = 1 + len(missing_exports(scenarios, exports)) + len(scenarios)  # the peaks, exports, scenarios
        with tqdm(total=steps, desc="bench: matmul peaks", unit="step", disable=not show_progress,
                  leave=False) as bar:
            peaks = machine.peaks()
            bar.update()
            prepare_exports(scenarios, exports, bar)
            results = []
            for scenario in scenarios:
                bar.set_description(f"bench: {scenario.key}")
                reference = Path(scratch) / f"reference-{scenario.model}-b{scenario.batch}.npz"
                try:
                    results.append(run_scenario(scenario, exports, reference, runs, warmup, official))
                    log.info("%s: %.3f s median", scenario.key, results[-1]["wall_seconds"]["median"])
                except (HartError, subprocess.TimeoutExpired) as err:
                    skipped.append({**scenario.to_dict(), "reason": str(err)})
                bar.update()
    summary = {"mode": mode, "machine": info, "matmul_peak_gflops": peaks, "runs": runs, "warmup": warmup,
               "results": results, "skipped": skipped, "wall_seconds": time.perf_counter() - started}
    if mode == "full":  # the presets too slow to time here, from the largest one timed
        from hart.bench.estimate import estimates

        summary["estimates"] = estimates(results, MODELS, (REFERENCE, OFFICIAL))
    report.write(summary, Path(out))
    return summary
