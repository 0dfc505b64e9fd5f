"""Strict JSON <-> frozen dataclasses: every mismatch names the exact field (configs and manifests).

Unknown fields and missing required ones are refused; numbers must be finite; fields typed `Any`
pass through, `dict[str, X]`, `tuple[X, ...]` and `X | None` are checked item by item.
"""

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from hart.errors import ConfigError


def read_json(path: Path, what: str, error: type[Exception] = ConfigError) -> Any:
    """The JSON value in `path`; any way the file can be wrong is one sentence naming it and `what` it
    should be (missing, a folder, unreadable, not UTF-8, not JSON, NaN or Infinity spelled in it)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a JSON number")

    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"), parse_constant=refuse)
    except FileNotFoundError:
        raise error(f"{path} is missing; expected {what}") from None
    except (IsADirectoryError, NotADirectoryError):
        raise error(f"{path} is not a file; expected {what}") from None
    except OSError as err:
        raise error(f"{path} cannot be read ({err.strerror}); expected {what}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text; expected {what}") from None
    except json.JSONDecodeError as err:
        raise error(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); expected {what}") from None
    except (ValueError, RecursionError) as err:
        raise error(f"{path} is not valid JSON ({err if isinstance(err, ValueError) else 'nested too deeply'}); "
                    f"expected {what}") from None


def read_json_object(path: Path, what: str, error: type[Exception] = ConfigError) -> dict:
    """read_json for files that must hold a JSON object (configs)."""
    data = read_json(path, what, error)
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def from_plain(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from JSON data, naming the exact field on any mismatch (also used for
    manifests: fields typed `Any` pass through, `dict[str, X]` and `X | None` are checked)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object (got {type(data).__name__})")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}"
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where} is missing the required field {f.name}")
            continue
        kwargs[f.name] = _coerce(data[f.name], hints[f.name], path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value, path)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, path)
    if origin is dict:
        _key_type, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a JSON object (got {type(value).__name__})")
        return {k: _coerce(v, item_type, f"{path}.{k}") for k, v in value.items()}
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list (got {value!r})")
        return tuple(_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported config type {hint} at {path}")  # a bug in this module, not user input
