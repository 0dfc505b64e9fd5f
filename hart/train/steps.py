"""The step loop's bookkeeping: optimiser step, logs and checkpoints when due, progress bar, throughput."""

import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from hart.train.process import Process
from hart.train.run_folder import RunFolder
from hart.train.settings import TrainSettings


def progress_bar(process: Process, first_step: int, steps: int, what: str) -> tqdm:
    """Shown by the main process only: N processes would draw N bars over one another."""
    return tqdm(total=steps, initial=first_step, desc=what, unit="step", disable=not process.is_main,
                dynamic_ncols=True)


class Throughput:
    """Samples per second over the last logging window."""

    def __init__(self) -> None:
        self.started, self.samples = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.samples / max(now - self.started, 1e-9)
        self.started, self.samples = now, 0
        return rate


class Steps:
    """The bookkeeping every loop shares: optimiser step, logs, checkpoints and the progress bar."""

    def __init__(self, folder: RunFolder, process: Process, settings: TrainSettings, first_step: int, what: str,
                 snapshot: Callable[[int], dict]):
        self.folder, self.settings, self.snapshot = folder, settings, snapshot
        self.bar = progress_bar(process, first_step, settings.steps, what)
        self.speed = Throughput()

    def optimize(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters, clip: bool = True) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip and self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, self.settings.grad_clip)
        optimizer.step()
        self.speed.add(self.settings.batch_size)

    def logging_due(self, step: int) -> bool:
        return (step + 1) % self.settings.log_every == 0 or step + 1 == self.settings.steps

    def done(self, step: int, record: dict | None = None, **shown: str) -> None:
        """After step `step`: log `record` (when due), checkpoint (when due), advance the bar."""
        if record is not None:
            self.folder.log({"step": step + 1, **record, "samples_per_s": self.speed.rate()})
            self.bar.set_postfix(**shown)
        if (step + 1) % self.settings.checkpoint_every == 0:
            self.folder.save(self.snapshot(step + 1))
        self.bar.update(1)

    def finish(self) -> None:
        self.bar.close()
        self.folder.save(self.snapshot(self.settings.steps))
