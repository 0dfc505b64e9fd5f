"""The judge: a small CNN that reads a scene (background, and at each of the nine positions whether an
object is there and its color, shape and size), and whose penultimate features give the Fréchet distance
of `hart eval`.

It reads every position, not one object, so two-object prompts are judged whole: the object count, each
object's attributes at its own position and the background (`read`). `predict` gives the one-object
reading (the most certainly occupied position) that the editing and canvas evaluations use. It is
trained on clean renders of 0-2 objects of every (color, shape) pair (held-out pairs included: it judges
the generator, it is not the generator), with mild blur and noise so generated images with soft edges
are read as a person would. `hart train classifier` trains it; the package ships the result.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from hart.atomic import atomic_directory
from hart.checkpoints.io import load_strict, read_safetensors
from hart.data.scenes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, Scene
from hart.errors import CheckpointError
from hart.train.batches import scene_batches
from hart.train.lr_schedule import set_learning_rate
from hart.train.process import average, end_process, seed_everything, start_process
from hart.train.run_folder import RunFolder, check_resume, restore
from hart.train.settings import TrainSettings, settings_dict
from hart.train.steps import Steps

log = logging.getLogger(__name__)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS), "shape": SHAPES, "size": tuple(SIZES), "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
}
SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "scene_classifier"
WEIGHTS, LABELS = "classifier.safetensors", "attributes.json"
KIND = "classifier"
READS = "every position"  # the judge's kind in attributes.json (the first judge read one object)


IGNORED = -100  # cross_entropy's ignore_index: an empty position has no color, shape or size
SLOT_ATTRIBUTES = ("color", "shape", "size")  # read at every position


@dataclass(frozen=True)
class SceneReading:
    """What a scene shows: its background and its objects as (position, color, shape, size), sorted."""
    background: str
    objects: tuple[tuple[str, str, str, str], ...]

    def describe(self) -> str:
        things = "; ".join(f"{size} {color} {shape} {position}" for position, color, shape, size in self.objects)
        return f"{things or 'no object'} | {self.background} background"


def scene_reading(scene: Scene) -> SceneReading:
    """The truth the judge's reading of the scene's image is compared with."""
    objects = tuple(sorted((o.position, o.color, o.shape, o.size) for o in scene.objects))
    return SceneReading(scene.background, objects)


def scene_truth(scene: Scene) -> dict[str, str]:
    """A one-object scene's attributes by name (what `predict` reads)."""
    obj = scene.objects[0]
    return {"color": obj.color, "shape": obj.shape, "size": obj.size, "position": obj.position,
            "background": scene.background}


def scene_labels(scene: Scene) -> dict[str, torch.Tensor]:
    """Training targets: background [], occupied [P] float, and per position color / shape / size [P]."""
    positions = ATTRIBUTES["position"]
    labels = {"background": torch.tensor(ATTRIBUTES["background"].index(scene.background)),
              "occupied": torch.zeros(len(positions))}
    labels |= {name: torch.full((len(positions),), IGNORED) for name in SLOT_ATTRIBUTES}
    for obj in scene.objects:
        slot = positions.index(obj.position)
        labels["occupied"][slot] = 1.0
        for name in SLOT_ATTRIBUTES:
            labels[name][slot] = ATTRIBUTES[name].index(getattr(obj, name))
    return labels


class SceneClassifier(nn.Module):
    def __init__(self, image_size: int = 64, width: int = 32, features: int = 128):
        super().__init__()
        self.image_size = image_size
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(channels, channels[1:]):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(8, b), nn.SiLU(),
                       nn.Conv2d(b, b, 3, padding=1), nn.GroupNorm(8, b), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        # flattened, not pooled: position is a spatial attribute
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * (image_size // 16) ** 2, features), nn.SiLU())
        slots = len(ATTRIBUTES["position"])
        self.heads = nn.ModuleDict({"background": nn.Linear(features, len(ATTRIBUTES["background"])),
                                    "occupied": nn.Linear(features, slots)})
        self.heads.update({name: nn.Linear(features, slots * len(ATTRIBUTES[name])) for name in SLOT_ATTRIBUTES})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] in [0, 1] -> features [B, F] (the Fréchet distance's space)."""
        return self.embed(self.body(images * 2 - 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> background [B, nB], occupied [B, P] (logits of "an object is here"), color / shape / size
        [B, P, n]."""
        features = self.features(images)
        slots = len(ATTRIBUTES["position"])
        logits = {name: head(features) for name, head in self.heads.items()}
        return {name: x.view(len(images), slots, -1) if name in SLOT_ATTRIBUTES else x for name, x in logits.items()}

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> list[SceneReading]:
        """Every image's background and objects (the positions read as occupied, each with its attributes)."""
        logits = self(images)
        chosen = {name: logits[name].argmax(-1).tolist() for name in ("background", *SLOT_ATTRIBUTES)}
        occupied = (logits["occupied"] > 0).tolist()
        readings = []
        for i, here in enumerate(occupied):
            objects = tuple(sorted((position, *(ATTRIBUTES[name][chosen[name][i][slot]] for name in SLOT_ATTRIBUTES))
                                   for slot, position in enumerate(ATTRIBUTES["position"]) if here[slot]))
            readings.append(SceneReading(ATTRIBUTES["background"][chosen["background"][i]], objects))
        return readings

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, list[str]]:
        """The one-object reading: the most certainly occupied position and what is there."""
        logits = self(images)
        slot = logits["occupied"].argmax(-1)  # [B]
        rows = torch.arange(len(images))
        predicted = {"position": [ATTRIBUTES["position"][i] for i in slot.tolist()],
                     "background": [ATTRIBUTES["background"][i] for i in logits["background"].argmax(-1).tolist()]}
        for name in SLOT_ATTRIBUTES:
            predicted[name] = [ATTRIBUTES[name][i] for i in logits[name][rows, slot].argmax(-1).tolist()]
        return {name: predicted[name] for name in ATTRIBUTES}


def load_classifier(folder: str | Path = SHIPPED) -> SceneClassifier:
    folder = Path(folder)
    if not (folder / LABELS).is_file():
        raise CheckpointError(f"{folder} holds no scene classifier ({LABELS} missing); train one with "
                              "`hart train classifier --out DIR`")
    saved = json.loads((folder / LABELS).read_text())
    if saved.get("attributes") != {k: list(v) for k, v in ATTRIBUTES.items()} or saved.get("reads") != READS:
        raise CheckpointError(f"{folder / LABELS} is a judge of another kind than this version's (other attribute "
                              f"values, or not {READS}); train one with `hart train classifier --out DIR`")
    with torch.device("meta"):
        model = SceneClassifier(saved["image_size"])
    load_strict(model, read_safetensors(folder / WEIGHTS), str(folder / WEIGHTS))
    return model.eval()


def _augment(images: torch.Tensor, generator: torch.Generator, process) -> torch.Tensor:
    """Random Gaussian blur (sigma up to 1.2 px) and pixel noise (std up to 0.04), per image."""
    batch = images.shape[0]
    global_batch = batch * process.world_size
    sigma = process.own_part(torch.rand(global_batch, generator=generator)).cpu() * 1.2 + 1e-3
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    kernels = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).to(images.device)  # [B, 7]
    x = images.transpose(0, 1)  # [3, B, H, W]: one group per image
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kernels[:, None, None, :], groups=batch)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kernels[:, None, :, None], groups=batch)
    noise = process.own_part(torch.randn((global_batch, *images.shape[1:]), generator=generator))
    strength = process.own_part(torch.rand(global_batch, 1, 1, 1, generator=generator))
    return (x.transpose(0, 1) + noise * strength * 0.04).clamp(0, 1)


def export_classifier(model: SceneClassifier, out: Path) -> Path:
    with atomic_directory(out, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / WEIGHTS)
        labels = {"image_size": model.image_size, "reads": READS,
                  "attributes": {k: list(v) for k, v in ATTRIBUTES.items()}}
        (tmp / LABELS).write_text(json.dumps(labels, indent=1) + "\n")
    return out


def train_classifier(settings: TrainSettings, out: str | Path, device: str = "auto", resume: bool = False,
                     image_size: int = 64) -> Path:
    process = start_process(device)
    try:
        out = Path(out)
        folder = RunFolder(out, process)
        generator = seed_everything(settings.seed)
        model = SceneClassifier(image_size).to(process.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        state = folder.load()
        first_step = check_resume(state, KIND, settings, resume, folder)
        if state is not None:
            restore(state, folder, model=model, optimizer=optimizer)
        trainer = torch.nn.parallel.DistributedDataParallel(model) if process.world_size > 1 else model

        def snapshot(step: int) -> dict:
            return {"kind": KIND, "step": step, "settings": settings_dict(settings), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict()}

        steps = Steps(folder, process, settings, first_step, "classifier", snapshot)
        batches = scene_batches("classifier", settings, first_step, process, image_size, labels=scene_labels)
        for step, (images, labels) in enumerate(batches, start=first_step):
            lr = set_learning_rate(optimizer, step, settings)
            logits = trainer(_augment(images.to(process.device), generator, process))
            labels = {name: value.to(process.device) for name, value in labels.items()}
            losses = {"background": F.cross_entropy(logits["background"], labels["background"]),
                      "occupied": F.binary_cross_entropy_with_logits(logits["occupied"], labels["occupied"])}
            losses |= {name: F.cross_entropy(logits[name].flatten(0, 1), labels[name].flatten(), ignore_index=IGNORED)
                       for name in SLOT_ATTRIBUTES}
            loss = sum(losses.values())
            steps.optimize(optimizer, loss, model.parameters(), clip=False)
            if steps.logging_due(step):
                record = {"lr": lr, "loss": average(loss),
                          **{f"loss_{name}": average(value) for name, value in losses.items()}}
                steps.done(step, record, loss=f"{record['loss']:.4f}")
            else:
                steps.done(step)
        steps.finish()
        model_dir = out / "model"
        if process.is_main:
            export_classifier(model.eval(), model_dir)
        return model_dir
    finally:
        end_process()
