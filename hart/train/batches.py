"""Training data: scenes rendered on demand, batched by step so every process count sees the same data."""

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hart.data.scenes import Scene, image_array, make_scene
from hart.train.process import Process
from hart.train.settings import TrainSettings


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
