"""What every training loop shares: settings, (multi-)process setup, data batches, learning-rate
schedule, resumable checkpoints, logs and a progress bar.

Multi-GPU / multi-process training uses torchrun + DDP: `torchrun --nproc_per_node N -m hart train
...`. Each rank draws its own slice of every global batch, so the data a step sees does not depend
on the number of processes, only on the step; the gloo backend serves CPU runs, NCCL GPU runs.
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from hart.atomic import atomic_file
from hart.data.scenes import Scene, image_array, make_scene
from hart.errors import CheckpointError, HartError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int  # global: summed over every process
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    data_seed: int = 0  # which scenes are drawn (fixed across runs, unlike the initialisation seed)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise HartError(f"training {name.replace('_', '-')} must be positive (got {getattr(self, name)})")
        if self.lr <= 0:
            raise HartError(f"training lr must be positive (got {self.lr})")


# --------------------------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Process:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise HartError(f"batch size {global_batch} must be divisible by the {self.world_size} processes")
        return global_batch // self.world_size

    def own_part(self, values: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This process's slice of a tensor drawn for the whole global batch (along `dim`).

        Random choices are drawn for the global batch from a generator every rank seeds alike, so
        a run on N processes sees the same numbers as a run on one."""
        local = self.local_batch(values.shape[dim])
        return values.narrow(dim, self.rank * local, local).to(self.device)


def start_process(device: str) -> Process:
    """Join the torchrun process group if there is one (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and world > 1:
        torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(torch_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return Process(rank, world, torch_device)


def end_process() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def average(value: torch.Tensor) -> float:
    """The mean of a scalar over processes (for logging)."""
    return (summed(value) / (dist.get_world_size() if dist.is_initialized() else 1)).item()


def summed(value: torch.Tensor) -> torch.Tensor:
    """A tensor summed over processes (every rank must call this at the same point)."""
    value = value.detach().float().clone()
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


# --------------------------------------------------------------------------------------------- data
class SceneImages(Dataset):
    """Scene i of a split: its image [3, H, W] in [0, 1] and its caption (or `labels(scene)`)."""

    def __init__(self, split: str, seed: int, image_size: int, labels: Callable[[Scene], dict] | None = None):
        self.split, self.seed, self.image_size, self.labels = split, seed, image_size, labels

    def __len__(self) -> int:
        return 2**31 - 1  # scenes are generated on demand

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str | dict]:
        scene = make_scene(index, self.split, self.seed)
        image = torch.from_numpy(image_array(scene, self.image_size))
        return image, (scene.caption if self.labels is None else self.labels(scene))


class StepBatches(Sampler[list[int]]):
    """Global batch s covers scenes s*B .. s*B+B-1; this process takes its contiguous slice."""

    def __init__(self, first_step: int, steps: int, global_batch: int, process: Process):
        self.first_step, self.steps, self.global_batch, self.process = first_step, steps, global_batch, process

    def __iter__(self) -> Iterator[list[int]]:
        local = self.process.local_batch(self.global_batch)
        for step in range(self.first_step, self.steps):
            start = step * self.global_batch + self.process.rank * local
            yield list(range(start, start + local))

    def __len__(self) -> int:
        return self.steps - self.first_step


def scene_batches(split: str, settings: TrainSettings, first_step: int, process: Process, image_size: int,
                  labels: Callable[[Scene], dict] | None = None) -> DataLoader:
    """Batches of (images, captions or labels) rendered by one background worker while the model trains."""
    return DataLoader(SceneImages(split, settings.data_seed, image_size, labels),
                      batch_sampler=StepBatches(first_step, settings.steps, settings.batch_size, process),
                      num_workers=1, persistent_workers=False, prefetch_factor=4)


# --------------------------------------------------------------------------------------------- schedule
def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, settings: TrainSettings) -> float:
    lr = learning_rate(step, settings)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy alike on every rank (identical initialisation); return the generator the
    loop draws its global-batch random choices from (see Process.own_part)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed + 1)


# --------------------------------------------------------------------------------------------- run folder
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


def progress_bar(process: Process, first_step: int, steps: int, what: str) -> tqdm:
    return tqdm(total=steps, initial=first_step, desc=what, unit="step", disable=not process.is_main, dynamic_ncols=True)


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


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)


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
