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


class RunFolder:
    """OUT/checkpoint.pt (resumable state), OUT/log.jsonl (metrics), written by the main process only."""

    def __init__(self, path: str | Path, process: Process):
        self.path, self.process = Path(path), process
        if process.is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def load(self) -> dict | None:
        if not self.checkpoint.is_file():
            return None
        try:
            return torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # a foreign or damaged file
            raise CheckpointError(f"{self.checkpoint} cannot be resumed from ({type(err).__name__}: {err})") from None

    def save(self, state: dict) -> None:
        if self.process.is_main:
            with atomic_file(self.checkpoint) as tmp:
                torch.save(state, tmp)

    def log(self, record: dict) -> None:
        if self.process.is_main:
            with open(self.path / LOG_FILE, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def check_resume(state: dict | None, kind: str, settings: TrainSettings, resume: bool, folder: RunFolder) -> int:
    """The step to start from: 0 for a fresh run, the saved step when resuming a matching run."""
    if state is None:
        return 0
    if not resume:
        raise HartError(f"{folder.checkpoint} exists: pass --resume to continue it or choose another --out")
    if state.get("kind") != kind:
        raise HartError(f"{folder.checkpoint} is a {state.get('kind')} run, not a {kind} run")
    saved = TrainSettings(**state["settings"])
    if saved.batch_size != settings.batch_size or saved.data_seed != settings.data_seed:
        raise HartError(f"{folder.checkpoint} was trained with batch {saved.batch_size} and data seed "
                        f"{saved.data_seed}; resume with the same values")
    return int(state["step"])
