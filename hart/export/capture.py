"""Graph capture (torch.export -> ONNX) for every graph of a model, in parallel where it pays.

Capture is single-threaded Python (tracing, symbolic shapes, decompositions, the ONNX optimizer) and
took 48 of the embedded model's 74 export seconds on a 2-core CPU, so the graphs are spread over one
process per core, largest first, when the caller asks for it (`auto_processes`: the CLI and the
tests do). A large model is captured in one process only: each worker holds its own copy of the weights.
"""

import contextlib
import io
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import onnx
import torch

from hart.components import HARTModel
from hart.export.graphs import GraphSpec, graph_specs
from hart.export.quiet import quiet_libraries

log = logging.getLogger(__name__)

LARGE_GRAPH_BYTES = 1_800_000_000  # above this, weights go to external data (protobuf's 2 GB limit)
PARALLEL_MAX_PARAMETERS = 200_000_000  # above this, two copies of the weights cost more than they save

_model: HARTModel | None = None  # the model in a worker process


def export_graph(spec: GraphSpec, folder: Path) -> Path:
    """torch.export -> ONNX (opset 20) -> onnx.checker; large graphs keep their weights in <file>.data."""
    path = folder / f"{spec.name}.onnx"
    parameters = sum(p.numel() * p.element_size() for p in spec.module.parameters())
    with contextlib.redirect_stdout(io.StringIO()) as chatter, torch.no_grad():
        program = torch.onnx.export(spec.module.eval(), spec.example, dynamo=True, input_names=spec.inputs,
                                    output_names=spec.outputs, dynamic_shapes=spec.dynamic, verbose=False)
    log.debug("%s export log:\n%s", spec.name, chatter.getvalue())
    program.save(str(path), external_data=parameters > LARGE_GRAPH_BYTES)
    onnx.checker.check_model(str(path))
    return path


def _start_worker(model: HARTModel) -> None:
    global _model
    _model = model


def _capture_in_worker(name: str, folder: str) -> str:
    with quiet_libraries():
        spec = next(s for s in graph_specs(_model) if s.name == name)
        export_graph(spec, Path(folder))
    return name


def auto_processes(model: HARTModel) -> int:
    """One capture process per core (at most 4), or 1 for a model too large to copy into each."""
    parameters = sum(model.parameter_counts().values())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if parameters > PARALLEL_MAX_PARAMETERS else max(1, min(cores, 4))


def capture_graphs(model: HARTModel, specs: list[GraphSpec], folder: Path, done: Callable[[str], None],
                   processes: int = 1) -> None:
    """Export every graph of `specs` into `folder`; `done(name)` after each one.

    With `processes` > 1 the graphs are captured in that many spawned processes, which re-import the
    caller's main module: only for callers whose main module is import-safe (the CLI, pytest; a
    script needs `if __name__ == "__main__":`). Otherwise they are captured here."""
    if processes < 2:
        for spec in specs:
            export_graph(spec, folder)
            done(spec.name)
        return
    # largest first, so that the last graph to finish is a small one
    order = sorted((s.name for s in specs), key=lambda n: {"residual": 0, "step": 1, "decoder": 2}.get(n, 3))
    context = multiprocessing.get_context("spawn")  # no forked torch threads or locks
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker, initargs=(model,)) as pool:
        futures = [pool.submit(_capture_in_worker, name, str(folder)) for name in order]
        for future in as_completed(futures):
            done(future.result())
    log.info("captured %d graphs in %d processes", len(specs), processes)
