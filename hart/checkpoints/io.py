"""Our checkpoint format: a folder with config.json and one <component>.safetensors per network.

Loading is strict: every missing key, unexpected key and shape mismatch is reported by name. Writes
are atomic (the folder appears whole or not at all). Nothing here ever downloads anything.
"""

import logging
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hart.atomic import atomic_directory
from hart.components import HARTModel, assemble, build_networks
from hart.config import HARTConfig
from hart.errors import CheckpointError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


def weights_file(component: str) -> str:
    return f"{component}.safetensors"


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first problems if `state` does not fit `module` exactly."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [f"{k} has shape {list(state[k].shape)}, expected {list(expected[k])}"
             for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k]]
    wrong += [f"{k} is stored as {str(state[k].dtype).removeprefix('torch.')}, expected floating-point numbers"
              for k in sorted(expected.keys() & state.keys()) if not state[k].is_floating_point()]

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    problems = []
    if missing:
        problems.append(f"missing key(s) {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s) {listing(unexpected)}")
    if wrong:
        problems.append(listing(wrong))
    if problems:
        raise CheckpointError(f"{source} does not match the model: {'; '.join(problems)}")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    check_state_dict(module, state, source)
    module.load_state_dict(state, strict=True, assign=True)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; a model folder holds config.json and one .safetensors per component")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def load_weights_only(path: Path, mmap: bool = False):
    """torch.load with weights_only=True (tensors and plain containers only; no code runs). A pickle that
    needs more is refused in one sentence of ours: torch's own message suggests turning that off."""
    import pickle
    import re

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        detail = f"it names the Python object {named.group(1)}" if named else "it is not a pickle of tensors"
        raise CheckpointError(f"{path} is not a weights-only torch file ({detail}); hart loads pickles with "
                              "weights_only=True and never runs code from a file") from None


def save_model(model: HARTModel, directory: str | Path, overwrite: bool = False,
               text_encoder: Path | None = None) -> Path:
    """Write config.json and every network's weights (float32, contiguous) into `directory`, atomically.

    `text_encoder`: a Qwen2 folder linked (symlink) as the config's text.path, inside the same atomic
    write, so the folder appears complete or not at all."""
    directory = Path(directory)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_FILE).write_text(model.config.to_json())
        if text_encoder is not None:
            (tmp / model.config.text.path).symlink_to(Path(text_encoder).resolve(), target_is_directory=True)
        for name, module in model.networks().items():
            state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
            save_file(state, tmp / weights_file(name), metadata={"format": "pt", "component": name})
    return directory


def load_model(directory: str | Path, text_encoder=None) -> HARTModel:
    """Load a folder written by save_model (on the CPU, float32). `text_encoder` overrides the config's."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a folder; expected a model folder with {CONFIG_FILE}")
    config = HARTConfig.from_json_file(directory / CONFIG_FILE)
    networks = build_networks(config, device="meta")
    for name, module in networks.items():
        path = directory / weights_file(name)
        load_strict(module, read_safetensors(path), str(path))
    if text_encoder is None and config.text.kind == "qwen2":
        from hart.text.qwen2 import Qwen2TextEncoder

        text_encoder = Qwen2TextEncoder(config.text, _resolve(directory, config.text.path))
    return assemble(config, networks, text_encoder)


def _resolve(directory: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else directory / candidate


def random_model(config: HARTConfig, seed: int = 0) -> HARTModel:
    """A model with freshly initialised weights (for tests, timing and export of untrained presets).

    The initialisation draws from a seeded fork of torch's global generator, leaving it untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        networks = build_networks(config)
    return assemble(config, networks, random_weights=True)
