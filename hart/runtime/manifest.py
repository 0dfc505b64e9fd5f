"""manifest.json: what an export folder holds and how to drive it (torch-free).

A runtime in any language needs only this file and the graphs it names: every graph's inputs and
outputs (names, dtypes, symbolic shapes), the scale schedule, sampling constants, the RoPE and
residual-noise layouts, the RNG spec, the sha256 of every file, and the tolerances the export's
parity checks met. Files are checked against their sha256 before any graph is opened.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

from hart.errors import CheckpointError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "hart-export"
MANIFEST_VERSION = 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": sha256_of(folder / name), "bytes": (folder / name).stat().st_size} for name in sorted(names)}


def read_manifest(folder: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read and validate OUT/manifest.json; with `verify`, refuse any missing or altered file."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not an export folder: {MANIFEST_FILE} is missing") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("format_version") != MANIFEST_VERSION:
        raise CheckpointError(f"{path} is not a {MANIFEST_FORMAT} version {MANIFEST_VERSION} manifest "
                              f"(format {manifest.get('format')!r}, version {manifest.get('format_version')!r})")
    for key in ("graphs", "files", "schedule", "sampling", "rng", "model"):
        if key not in manifest:
            raise CheckpointError(f"{path} has no {key!r} section")
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the export folder is incomplete (re-export it)")
        if path.stat().st_size != entry["bytes"]:
            raise CheckpointError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}: "
                                  "the file is truncated or was replaced")
        if sha256_of(path) != entry["sha256"]:
            raise CheckpointError(f"{path} does not match its sha256 in {MANIFEST_FILE}: the file was changed or "
                                  "swapped with another graph")
