"""The learning rate at each step: linear warm-up, then cosine decay."""

import math

import torch

from hart.train.settings import TrainSettings


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
