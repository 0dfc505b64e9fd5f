"""The settings of a training run, shared by every loop and saved in its checkpoint."""

import math
import numbers
from dataclasses import asdict, dataclass, fields

from hart.errors import ConfigError

SEED_LIMIT = 2**63  # torch.manual_seed and torch.Generator take seeds in [0, 2**63)

# field -> (smallest allowed value, whether the smallest value itself is allowed); every field is finite
BOUNDS: dict[str, tuple[float, bool]] = {
    "steps": (1, True), "batch_size": (1, True), "lr": (0, False), "weight_decay": (0, True),
    "warmup_steps": (0, True), "grad_clip": (0, True), "seed": (0, True), "checkpoint_every": (1, True),
    "log_every": (1, True), "data_seed": (0, True),
}
NO_OPTION = ("grad_clip",)  # fields the command line does not expose: named as fields, not as options


def option_name(field: str) -> str:
    """How a field is spelled where the user set it: `--batch-size` on the command line."""
    return f"training setting {field}" if field in NO_OPTION else "--" + field.replace("_", "-")


def check_number(name: str, value: object, least: float, inclusive: bool = True, whole: bool = False,
                 below: float = math.inf) -> None:
    """Raise a one-sentence ConfigError unless `value` is a finite (whole) number in range.

    torch and numpy reject such values much later, with a traceback that names none of the options
    (`Invalid learning rate: nan`), or not at all (a NaN loss from step one)."""
    kind = "a whole number" if whole else "a finite number"
    bound = f"{'>=' if inclusive else '>'} {least:g}"
    if below < math.inf:
        bound += f" and < 2**{int(math.log2(below))}"
    number = isinstance(value, numbers.Integral if whole else numbers.Real)
    if isinstance(value, bool) or not number or not math.isfinite(value) or not (
            (value >= least if inclusive else value > least) and value < below):
        raise ConfigError(f"{name} must be {kind} {bound} (got {value!r})")


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int  # global: summed over every process
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0  # 0 turns clipping off
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    data_seed: int = 0  # which scenes are drawn (fixed across runs, unlike the initialisation seed)

    def __post_init__(self) -> None:
        for field in fields(self):
            least, inclusive = BOUNDS[field.name]
            check_number(option_name(field.name), getattr(self, field.name), least, inclusive,
                         whole=field.type is int, below=SEED_LIMIT if field.name.endswith("seed") else math.inf)


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)
