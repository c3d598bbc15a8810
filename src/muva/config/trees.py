"""Config trees as plain nested mappings: keys that moved, and what differs between two trees.

* :func:`upgrade_tree` moves the keys a root dataclass lists in ``RENAMED_KEYS`` (old dotted
  key → new dotted key) to their new place — in YAML files, in overrides and in configs saved
  by an older muva (checkpoints, ``provenance.json``);
* :func:`config_diff` lists the dotted keys whose values differ, for resume and reuse checks.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from muva.config.errors import ConfigError

__all__ = ["config_diff", "renamed_key", "upgrade_tree"]


def _renames(cls: type) -> Mapping[str, str]:
    return getattr(cls, "RENAMED_KEYS", None) or {}


def renamed_key(cls: type, key: str) -> str:
    """``key`` with a renamed prefix replaced (``data.grounding_expert`` → ``grounding.expert``)."""
    for old, new in _renames(cls).items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return key


def upgrade_tree(cls: type, tree: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of the nested mapping ``tree`` with every key listed in ``cls.RENAMED_KEYS`` moved.

    A tree holding both an old key and its new one with different values is an error.
    """
    out = _copy_tree(tree or {})
    for old, new in _renames(cls).items():
        *path, last = old.split(".")
        node: Any = out
        for k in path:
            node = node.get(k) if isinstance(node, Mapping) else None
        if not isinstance(node, dict) or last not in node:
            continue
        value = node.pop(last)
        *npath, nlast = new.split(".")
        dst = out
        for k in npath:
            dst = dst.setdefault(k, {})
            if not isinstance(dst, dict):
                raise ConfigError(f"config key '{new}' (the new name of '{old}') needs '{k}' to be a section")
        if nlast in dst and dst[nlast] != value:
            raise ConfigError(f"config sets both '{old}' (old name) and '{new}' to different values; keep '{new}'")
        dst[nlast] = value
    return out


def _copy_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = (),
                absent_ok: bool = False) -> list[str]:
    """``["stage2.epochs: 60 → 10", ...]``: the dotted keys whose values differ between two config trees.

    ``ignore`` holds dotted keys (or section prefixes) left out of the comparison;
    ``absent_ok`` skips keys that ``old`` does not have (written by an older muva).
    """
    ignore = tuple(ignore)
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if key and any(key == i or key.startswith(i + ".") for i in ignore):
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{key}.{k}" if key else str(k))
        elif a != b and not (absent_ok and a == "<absent>"):
            out.append(f"{key}: {a!r} → {b!r}")

    walk(old, new, "")
    return out
