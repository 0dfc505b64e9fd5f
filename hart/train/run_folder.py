"""A run's folder: the resumable checkpoint and the metrics log, and whether a run may resume."""

import json
from pathlib import Path

import torch

from hart.atomic import atomic_file
from hart.errors import CheckpointError, HartError
from hart.train.process import Process
from hart.train.settings import TrainSettings

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
Restorable = torch.nn.Module | torch.optim.Optimizer | torch.Generator
RESUME_ADVICE = "resume with the settings and model of the run that wrote it, or choose another --out"


class RunFolder:
    """OUT/checkpoint.pt (resumable state), OUT/log.jsonl (metrics), written by the main process only."""

    def __init__(self, path: str | Path, process: Process):
        self.path, self.process = Path(path), process
        if process.is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    def load(self) -> dict | None:
        """The saved state, read with weights_only=True: a checkpoint is data, never code to run.

        torch's own messages span several lines and advise weights_only=False, which would run any
        code a foreign file carries; the user gets one sentence of ours instead."""
        if not self.checkpoint.is_file():
            return None
        try:
            return torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except OSError as err:
            raise CheckpointError(f"{self.checkpoint} could not be read ({err.strerror or err})") from None
        except Exception:  # torch raises many types here (UnpicklingError, RuntimeError, EOFError, ...)
            raise CheckpointError(f"{self.checkpoint} could not be read as a training checkpoint (not a zip/pickle "
                                  "torch file, or it holds objects other than tensors and plain data; hart never "
                                  "unpickles code)") from None

    def save(self, state: dict) -> None:
        if self.process.is_main:
            with atomic_file(self.checkpoint) as tmp:
                torch.save(state, tmp)

    def log(self, record: dict) -> None:
        if self.process.is_main:
            with open(self.log_file, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_log(self, step: int) -> None:
        """Keep only the log lines of steps <= `step`, the step a run starts (again) from.

        A run that stopped after its last checkpoint had already logged the steps since; resuming
        repeats them, so without this they would appear twice. Lines that do not parse (a write cut
        short) go too. The file is replaced atomically: a crash here leaves the old log whole."""
        if not self.process.is_main or not self.log_file.is_file():
            return
        lines = self.log_file.read_text(errors="replace").splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= step]
        with atomic_file(self.log_file) as tmp:
            tmp.write_text("".join(line if line.endswith("\n") else line + "\n" for line in kept))


def _logged_step(line: str) -> float:
    """The step a log line records; infinity for a line that is not a record (so it is dropped)."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return float("inf")
    return step if isinstance(step, int) and not isinstance(step, bool) else float("inf")


def check_resume(state: dict | None, kind: str, settings: TrainSettings, resume: bool, folder: RunFolder) -> int:
    """The step to start from: 0 for a fresh run, the saved step when resuming a matching run.

    Either way log.jsonl is cut back to that step, so every step appears in it once."""
    first_step = 0 if state is None else _resumed_step(state, kind, settings, resume, folder)
    folder.truncate_log(first_step)
    return first_step


def _resumed_step(state: object, kind: str, settings: TrainSettings, resume: bool, folder: RunFolder) -> int:
    where = folder.checkpoint
    if not resume:
        raise HartError(f"{where} exists: pass --resume to continue it or choose another --out")
    if not isinstance(state, dict) or not isinstance(state.get("kind"), str):
        raise CheckpointError(f"{where} is not a hart training checkpoint (no 'kind' entry); expected the "
                              f"checkpoint.pt of a `hart train {kind.split('-')[0]}` run")
    if state["kind"] != kind:
        raise CheckpointError(f"{where} is the checkpoint of a {state['kind']} run, not of a {kind} run; "
                              f"choose another --out")
    try:
        saved = TrainSettings(**state["settings"])
        step = state["step"]
        if not isinstance(step, int) or step < 0:
            raise TypeError(step)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where} has no valid 'settings' and 'step' entries; {RESUME_ADVICE}") from None
    if saved.batch_size != settings.batch_size or saved.data_seed != settings.data_seed:
        raise HartError(f"{where} was trained with batch {saved.batch_size} and data seed "
                        f"{saved.data_seed}; resume with the same values")
    if step > settings.steps:
        raise CheckpointError(f"{where} is at step {step}, past --steps {settings.steps}; pass --steps {step} or more")
    return step


def restore(state: dict, folder: RunFolder, **targets: Restorable) -> None:
    """Load each `state[name]` into `targets[name]`, or raise one CheckpointError sentence naming the entry.

    torch reports a mismatch as a multi-line RuntimeError (modules), a ValueError (optimizers) or
    not at all until the first step (optimizer moments of the wrong shape): each is checked here."""
    for name, target in targets.items():
        problem = _restore_one(state.get(name), target) if name in state else "it is missing"
        if problem is not None:
            raise CheckpointError(f"{folder.checkpoint}: the {name!r} entry does not fit this run ({problem}); "
                                  f"{RESUME_ADVICE}")


def _restore_one(value: object, target: Restorable) -> str | None:
    """None once `value` is loaded into `target`, else what is wrong (a clause, no full stop)."""
    if isinstance(target, torch.nn.Module):
        problem = _module_mismatch(value, target)
        if problem is not None:
            return problem
    try:
        if isinstance(target, torch.Generator):
            target.set_state(value)
        else:
            target.load_state_dict(value)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(target, torch.optim.Optimizer):
        for group in target.param_groups:
            for parameter in group["params"]:
                for key, moment in target.state.get(parameter, {}).items():
                    if isinstance(moment, torch.Tensor) and moment.dim() and moment.shape != parameter.shape:
                        return f"its {key} has shape {list(moment.shape)}, its parameter {list(parameter.shape)}"
    return None


def _module_mismatch(value: object, module: torch.nn.Module) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        return "it is not a dictionary of tensors"
    expected = module.state_dict()
    missing, unexpected = sorted(expected.keys() - value.keys()), sorted(value.keys() - expected.keys())
    if missing or unexpected:
        first = [f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]]
        more = len(missing) + len(unexpected) - len(first)
        return ", ".join(first) + (f" and {more} more key(s)" if more else "")
    for key, tensor in expected.items():
        if value[key].shape != tensor.shape:
            return f"{key} has shape {list(value[key].shape)}, expected {list(tensor.shape)}"
    return None
