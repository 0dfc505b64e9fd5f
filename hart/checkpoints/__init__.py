"""Finding and loading models: our folders, official release folders, and named presets."""

import logging
from pathlib import Path

from hart.checkpoints.io import load_model, random_model, save_model
from hart.checkpoints.official import is_official_folder, load_official, official_config
from hart.components import HARTModel
from hart.config import PRESETS, HARTConfig, preset
from hart.errors import CheckpointError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = "tiny"


def shipped_weights(name: str) -> Path | None:
    """The folder of a preset's weights shipped inside the package, if there is one."""
    folder = ASSETS / name
    return folder if (folder / "config.json").is_file() else None


def _text_encoder(config: HARTConfig, path: str | None):
    if path is None:
        return None
    if path != "random" and config.text.kind != "qwen2":
        raise CheckpointError(f"--text-encoder is for models that use Qwen2; {config.name} has its own "
                              f"{config.text.kind} text encoder (only 'random' replaces it, for timing runs)")
    if path == "random":
        from hart.text import RandomTextEncoder

        return RandomTextEncoder(config.text)
    from hart.text.qwen2 import Qwen2TextEncoder

    return Qwen2TextEncoder(config.text, path)


def load_config(model: str) -> HARTConfig:
    """The config of a preset, one of our model folders, or an official release folder."""
    folder = Path(model)
    if folder.is_dir():
        return official_config(folder) if is_official_folder(folder) else HARTConfig.from_json_file(folder / "config.json")
    if model in PRESETS:
        shipped = shipped_weights(model)
        return HARTConfig.from_json_file(shipped / "config.json") if shipped else preset(model)
    raise CheckpointError(f"{model!r} is neither a model folder nor a preset; presets: {', '.join(PRESETS)}")


def load_pretrained(model: str = DEFAULT_MODEL, text_encoder: str | None = None) -> HARTModel:
    """Load by preset name or folder (CPU, float32). Presets without shipped weights get random ones.

    `text_encoder`: a local Qwen2 folder for models that use Qwen2, or "random" for seeded random
    features (timing runs only).
    """
    folder = Path(model)
    if folder.is_dir():
        if is_official_folder(folder):
            if text_encoder is None:
                raise CheckpointError(f"{folder} is an official HART release: also pass its Qwen2 text encoder "
                                      "folder (Qwen2-VL-1.5B-Instruct) with --text-encoder")
            config = official_config(folder)
            return load_official(folder, _text_encoder(config, text_encoder))
        config = HARTConfig.from_json_file(folder / "config.json")
        return load_model(folder, _text_encoder(config, text_encoder))
    config = load_config(model)
    shipped = shipped_weights(model)
    if shipped:
        return load_model(shipped, _text_encoder(config, text_encoder))
    log.warning("preset %s has no trained weights here: using RANDOM weights, so images will be noise "
                "(fine for timing and export tests)", model)
    loaded = random_model(config)
    if text_encoder is not None:
        loaded.text_encoder = _text_encoder(config, text_encoder)
    return loaded


__all__ = ["DEFAULT_MODEL", "load_config", "load_model", "load_official", "load_pretrained", "official_config",
           "random_model", "save_model"]
