"""The settings of a training run, shared by every loop and saved in its checkpoint."""

from dataclasses import asdict, dataclass

from hart.errors import HartError


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


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)
