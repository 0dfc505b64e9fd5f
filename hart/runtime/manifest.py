"""manifest.json: what an export folder holds and how to drive it, read strictly into a dataclass.

A runtime in any language needs only this file and the graphs it names: every graph's inputs and
outputs (names, dtypes, symbolic shapes), the model config, the scale schedule, sampling defaults,
the loop's definitions (`spec`, from hart.portable.spec), the RoPE and residual-noise layouts, the
RNG spec, the sha256 of every file, and the tolerances the export's parity checks met. A missing or
unknown field is named; numbers derived from the config (progress, step starts, ...) must agree
with it; every path must be relative, stay inside the folder and be listed with its sha256. Files
are checked against their sha256 before any graph is opened. Imports no torch.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hart.config import HARTConfig
from hart.strict import from_plain, read_json
from hart.errors import CheckpointError, ConfigError
from hart.portable import rng
from hart.portable.scales import ScaleSchedule
from hart.portable.schedule import diffusion_schedule

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "hart-export"
MANIFEST_VERSION = 2


@dataclass(frozen=True)
class ModelSection:
    name: str
    config: dict[str, Any]  # HARTConfig.to_dict(); read with Manifest.config
    parameters: dict[str, Any]


@dataclass(frozen=True)
class TextSection:
    kind: str  # words | qwen2 | random
    max_tokens: int
    dim: int
    positions: str
    unconditional: str
    past_max_tokens: str
    vocab: tuple[str, ...] = ()  # words
    pad_id: int = 0
    unknown_id: int | None = None  # words: reserved for unknown words, never produced (they are refused)
    tokenization: str = ""
    tokenizer_json: str = ""  # qwen2: the word tokenizer (tokenizer.json) inside the folder
    system_prompt_ids: tuple[int, ...] = ()  # qwen2: HART's instruction prefix, fed before the prompt ids
    system_prompt: str = ""
    features: str = ""  # random
    grammar: Any = None  # words models trained on hart/portable/grammar.py's sentences: its tables (refusals)
    compose: Any = None  # such models draw two objects as two one-object passes joined (hart/portable/compose.py)


@dataclass(frozen=True)
class ScheduleSection:
    patch_nums: tuple[int, ...]
    context_tokens: int
    step_lengths: tuple[int, ...]
    step_starts: tuple[int, ...]
    progress: tuple[float, ...]
    phi_index: tuple[int | None, ...]
    guidance: str


@dataclass(frozen=True)
class SamplingSection:
    cfg: float
    top_k: tuple[int, ...]
    top_p: float
    temperature: float
    residual_guidance: float
    gumbel: bool
    overrides: str
    rule: str


@dataclass(frozen=True)
class RopeSection:
    theta: float
    head_dim: int
    text_inv_freq: tuple[float, ...]
    image_inv_freq: tuple[float, ...]
    text: str
    image: str


@dataclass(frozen=True)
class ResidualSection:
    steps: int
    latent_scale: float
    timesteps: tuple[int, ...]
    noise: str
    guidance: str


@dataclass(frozen=True)
class GraphEntry:
    file: str
    description: str
    inputs: Any  # [{name, dtype, shape}] (Core ML: per function)
    outputs: Any
    functions: Any = None  # Core ML multifunction packages
    states: Any = None


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    format: str
    format_version: int
    precision: str
    created: str
    exporter: dict[str, Any]
    model: ModelSection
    text: TextSection
    schedule: ScheduleSection
    sampling: SamplingSection
    spec: dict[str, str]  # hart.portable.spec.spec_texts()
    rope: RopeSection
    residual: ResidualSection
    rng: dict[str, Any]
    loop: tuple[str, ...]
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]
    parity: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    coreml: dict[str, Any] | None = None
    edit: dict[str, Any] | None = None  # hart.portable.edit.describe(); older exports have none
    canvas: dict[str, Any] | None = None  # hart.portable.canvas.describe(); older exports have none

    @property
    def config(self) -> HARTConfig:
        return HARTConfig.from_dict(self.model.config, "manifest.json model.config")

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_FILE) -> "Manifest":
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or data.get("format_version") != \
                MANIFEST_VERSION:
            got = (data.get("format"), data.get("format_version")) if isinstance(data, dict) else (None, None)
            raise CheckpointError(f"{source} is not a {MANIFEST_FORMAT} version {MANIFEST_VERSION} manifest (format "
                                  f"{got[0]!r}, version {got[1]!r}); re-export the model with this version of hart")
        try:
            manifest = from_plain(cls, data, source)
            manifest._check_derived(source)
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
        return manifest

    def _check_derived(self, source: str) -> None:
        """The numbers a port reads must be the ones the model config implies."""
        config = self.config
        schedule = ScaleSchedule(config.patch_nums, config.text.max_tokens)
        head = config.residual_head
        expected = {
            "schedule.patch_nums": (self.schedule.patch_nums, config.patch_nums),
            "schedule.context_tokens": (self.schedule.context_tokens, config.text.max_tokens),
            "schedule.step_lengths": (self.schedule.step_lengths, schedule.step_lengths),
            "schedule.step_starts": (self.schedule.step_starts, schedule.step_starts),
            "schedule.progress": (self.schedule.progress,
                                  tuple(schedule.progress(si) for si in range(schedule.num_scales))),
            "text.kind/max_tokens/dim": ((self.text.max_tokens, self.text.dim),
                                         (config.text.max_tokens, config.text.dim)),
            "residual.steps": (self.residual.steps, diffusion_schedule(head.train_steps, head.sampling_steps).num_steps),
            "rope.head_dim": (self.rope.head_dim, config.transformer.head_dim),
            "rng.name": (self.rng.get("name"), rng.SPEC_NAME),
        }
        for name, (got, want) in expected.items():
            if tuple(got) != tuple(want) if isinstance(want, tuple) else got != want:
                raise ConfigError(f"{source} {name} is {got}, but its model config implies {want}")
        if self.text.kind == "words" and tuple(self.text.vocab) != tuple(config.text.vocab):
            raise ConfigError(f"{source} text.vocab differs from its model config's vocabulary")
        for name, entry in self.graphs.items():
            check_relative(entry.file, f"{source} graphs.{name}.file")
            if entry.file not in self.files and not any(f.startswith(entry.file.rstrip("/") + "/") for f in self.files):
                raise ConfigError(f"{source} graphs.{name}.file {entry.file!r} is not listed under files with its sha256")
        if self.text.tokenizer_json:
            check_relative(self.text.tokenizer_json, f"{source} text.tokenizer_json")
            if self.text.tokenizer_json not in self.files:
                raise ConfigError(f"{source} text.tokenizer_json {self.text.tokenizer_json!r} is not listed under files")
        for name in self.files:
            check_relative(name, f"{source} files")


def check_relative(name: str, where: str) -> None:
    """A manifest path must be relative and stay inside its folder (no '..', no absolute path)."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name or ".." in path.parts or name.startswith("~"):
        raise ConfigError(f"{where} names {name!r}; paths in a manifest must be relative and inside the export folder")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": sha256_of(folder / name), "bytes": (folder / name).stat().st_size} for name in sorted(names)}


def read_manifest(folder: str | Path, verify: bool = True) -> Manifest:
    """Read and validate OUT/manifest.json; with `verify`, refuse any missing or altered file."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not an export folder (not a folder); pass the folder that holds "
                              f"{MANIFEST_FILE}")
    if not path.exists():
        raise CheckpointError(f"{folder} is not an export folder: {MANIFEST_FILE} is missing")
    data = read_json(path, f"an export's {MANIFEST_FILE}", CheckpointError)
    manifest = Manifest.from_dict(data, str(path))
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: Path, manifest: Manifest) -> None:
    root = folder.resolve()
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.resolve().is_relative_to(root):
            raise CheckpointError(f"{folder / MANIFEST_FILE} lists {name!r}, which resolves outside the export folder")
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the export folder is incomplete (re-export it)")
        if path.stat().st_size != entry.bytes:
            raise CheckpointError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry.bytes}: "
                                  "the file is truncated or was replaced")
        if sha256_of(path) != entry.sha256:
            raise CheckpointError(f"{path} does not match its sha256 in {MANIFEST_FILE}: the file was changed or "
                                  "swapped with another graph")
