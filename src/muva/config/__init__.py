"""Typed configuration: dataclasses loaded from YAML with ``key.sub=value`` overrides.

Every configurable part of muva is a plain ``@dataclass`` with defaults.  This module
turns YAML files and command-line overrides into instances of those dataclasses and
back, with strict checking:

* an unknown key (in YAML or in an override) is an error naming the closest valid keys;
* values are converted to the annotated type (``int``, ``float``, ``bool``, ``str``,
  ``Path``, ``Optional[...]``, ``list[...]``, ``tuple[...]``, ``Literal[...]``, nested
  dataclasses) and a value that does not fit is an error naming the key and the type;
* a YAML file may start from another one with ``_base_: other.yaml`` (relative to
  the file), so presets stay short;
* a key that moved keeps working: a root dataclass lists ``RENAMED_KEYS`` (old dotted
  key → new dotted key) and :func:`upgrade_tree` moves old keys — in YAML files, in
  overrides and in configs saved by an older muva — to their new place.

Example (any config dataclass works the same way; here the synthetic generator's)::

    >>> from muva.data.synth import SynthConfig
    >>> cfg = load_config(SynthConfig, overrides=["num_domains=4", "ids_per_domain=60"])
    >>> cfg.num_domains, cfg.ids_per_domain
    (4, 60)
    >>> load_config(SynthConfig, overrides=["num_domain=4"])
    Traceback (most recent call last):
    ...
    muva.config.ConfigError: unknown config key 'num_domain'; did you mean 'num_domains' or 'ids_per_domain'? Valid keys: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar, Union, get_args, get_origin

import yaml

from muva.config.errors import ConfigError
from muva.config.trees import renamed_key, config_diff, upgrade_tree

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_config",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "save_config",
    "dump_config",
    "config_keys",
    "config_diff",
    "upgrade_tree",
]




# ----------------------------------------------------------------------------- helpers
def _type_hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config dataclass (for help texts and error messages)."""
    keys: list[str] = []
    hints = _type_hints(cls)
    for name in _fields(cls):
        tp = _strip_optional(hints[name])
        if dataclasses.is_dataclass(tp):
            keys.extend(config_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _strip_optional(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _unknown_key_error(key: str, where: str, valid: Iterable[str], full: str, root: type | None = None) -> ConfigError:
    valid = sorted(valid)
    prefix = f"{where}." if where else ""
    close = [f"{prefix}{c}" for c in difflib.get_close_matches(key, valid, n=3, cutoff=0.5)]
    if root is not None:  # 'optim.lr' → 'stage1.optim.lr', 'stage2.optim.lr': the key exists deeper in the tree
        leaves = config_keys(root)
        sections = {k.rsplit(".", i)[0] for k in leaves for i in range(1, k.count(".") + 1)}
        deeper = sorted(k for k in set(leaves) | sections if k.endswith("." + full))
        close = deeper + [c for c in close if c not in deeper]
    hint = ""
    if close:
        hint = "; did you mean " + " or ".join(f"'{c}'" for c in close[:4]) + "?"
    scope = f" under '{where}'" if where else ""
    return ConfigError(f"unknown config key '{full}'{hint} Valid keys{scope}: {', '.join(valid)}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _number(value: Any, tp: type, key: str) -> int | float:
    """An int or float from a number or its text; a bool or a fractional value for an int is refused."""
    ok = not isinstance(value, bool) and (isinstance(value, (int, float)) if tp is float else
                                          isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
    if ok:
        return tp(value)
    if isinstance(value, str):
        try:
            return tp(value)
        except ValueError:
            pass
    raise ConfigError(f"config key '{key}': {value!r} is not {'an int' if tp is int else 'a float'}")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or an override) to annotated type ``tp``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(map(repr, choices))}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping for section, got {value!r}")
        return from_dict(tp, value, _prefix=f"{key}.")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = [value] if origin is list or tp is list else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key '{key}': {value!r} is not a bool (use true/false)")
    if tp in (int, float):
        return _number(value, tp, key)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': {value!r} is not a string")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"config key '{key}': {value!r} is not a path")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}': cannot convert {value!r} to {_type_name(tp)}")


# ----------------------------------------------------------------------------- public API
def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, _prefix: str = "") -> T:
    """Build a config dataclass from a (possibly partial) nested mapping, strictly."""
    data = upgrade_tree(cls, data) if not _prefix else dict(data or {})
    fields = _fields(cls)
    hints = _type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            where = _prefix[:-1]
            raise _unknown_key_error(key, where, fields, f"{_prefix}{key}", None if _prefix else cls)
        kwargs[key] = _convert(value, hints[key], f"{_prefix}{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config{(' section ' + _prefix[:-1]) if _prefix else ''}: {exc}") from exc
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-Python dict of a config (tuples become lists, paths strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(tree: dict[str, Any], cls: type, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    node_cls: Any = cls
    for depth, part in enumerate(parts):
        fields = _fields(node_cls)
        where = ".".join(parts[:depth])
        if part not in fields:
            raise _unknown_key_error(part, where, fields, key, cls)
        if depth == len(parts) - 1:
            node[part] = value
            return
        sub_cls = _strip_optional(_type_hints(node_cls)[part])
        if get_origin(sub_cls) in (dict, Mapping) or sub_cls is dict:  # data.dataset_options.msmt17.train_split=...
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, Mapping) else {}
            *inner, last = parts[depth + 1:]
            for k in inner:
                child[k] = child = dict(child[k]) if isinstance(child.get(k), Mapping) else {}
            child[last] = value
            return
        if not dataclasses.is_dataclass(sub_cls):
            raise ConfigError(f"config key '{'.'.join(parts[: depth + 1])}' is a value, not a section; cannot set '{key}'")
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
        node_cls = sub_cls


def apply_overrides(cls: type[T], base: Mapping[str, Any] | T | None, overrides: Iterable[str]) -> T:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars/lists) to a config."""
    tree = to_dict(base) if dataclasses.is_dataclass(base) else dict(base or {})
    tree = upgrade_tree(cls, tree)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(tree, cls, renamed_key(cls, key), value)
    return from_dict(cls, tree)


def _read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"config _base_ cycle: {' -> '.join(map(str, _seen + (path,)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse YAML in {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    base = data.pop("_base_", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else list(base)
    merged: dict[str, Any] = {}
    for b in bases:
        _deep_merge(merged, _read_yaml(path.parent / b, _seen + (path.resolve(),)))
    _deep_merge(merged, data)
    return merged


def _deep_merge(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file (with ``_base_`` inheritance) plus overrides."""
    tree: dict[str, Any] = _read_yaml(Path(path)) if path else {}
    if path:
        try:
            from_dict(cls, tree)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return apply_overrides(cls, tree, overrides)


def dump_config(cfg: Any) -> str:
    """YAML text of a config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (used by every run: ``<out>/config.yaml``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg))
    return path
