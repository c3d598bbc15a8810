"""Experts as plugins: the registry, typed options and how an expert is built from them.

An expert is a :class:`~muva.grounding.experts.base.GroundingExpert` subclass that
registers itself with :func:`register_expert` and declares its user-settable options as a
small dataclass in its class attribute ``Options``; every field has a default and a
one-line help (:func:`option`)::

    @dataclass
    class BlurOptions:
        radius: float = option(2.0, "blur radius in pixels")

    @register_expert("blur", aliases=("smooth",), summary="blurred prior boxes")
    class BlurExpert(GroundingExpert):
        Options = BlurOptions

        def __init__(self, parts=DEFAULT_PARTS, radius=2.0, rules=None, fallback=None): ...

The fields of ``Options`` are keyword arguments of the class's ``__init__``.  Option
values given as text (``-X radius=3`` on the command line) are converted to the field
types by the typed config loader (:func:`muva.config.apply_overrides`), and an unknown
option is an :class:`ExpertOptionError` listing the expert's options with their help.

Registration is lazy: :data:`EXPERTS` imports the modules of this package the first
time it is asked for a name (an expert of another package registers when its module is
imported).  Expert modules import heavy packages (torch, transformers, LiteRT)
inside their classes only, so listing experts and their options builds nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import pkgutil
import sys
import types
import typing
from typing import Any, Iterable, Literal, Mapping, Union, get_args, get_origin

from muva.config import ConfigError, apply_overrides, from_dict
from muva.registry import Registry, RegistryError

__all__ = [
    "EXPERTS", "ExpertOptionError", "NoOptions", "OptionInfo", "build_expert", "expert_options",
    "option", "option_infos", "options_dict", "register_expert",
]

_NOT_EXPERT_MODULES = {"base", "spec"}


class ExpertOptionError(ConfigError):
    """An expert option that is unknown or whose value does not fit its type."""


def option(default: Any, help: str) -> Any:  # noqa: A002 - the word users know from argparse / typer
    """A field of an expert's ``Options`` dataclass: its default and a one-line help."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of an expert that has none."""


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One option of an expert, for listings: name, type (as text), default (as text), help."""

    name: str
    type: str
    default: str
    help: str


def _type_text(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        text = " or ".join(_type_text(a) for a in args)
        return f"{text} or none" if len(args) < len(get_args(tp)) else text
    if origin is tuple:
        return "[" + ",".join(_type_text(a) for a in get_args(tp)) + "]"
    if origin is list:
        return f"list of {_type_text(get_args(tp)[0])}" if get_args(tp) else "list"
    if isinstance(tp, type):
        return {"str": "text", "Path": "path"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _hints(options_cls: type) -> dict[str, Any]:
    module = sys.modules.get(options_cls.__module__)
    return typing.get_type_hints(options_cls, globalns=vars(module) if module else None)


def option_infos(cls_or_name: type | str) -> list[OptionInfo]:
    """The options of an expert (a registered name or an expert class), without building it."""
    cls = EXPERTS.get(cls_or_name) if isinstance(cls_or_name, str) else cls_or_name
    opts = cls.Options
    hints = _hints(opts)
    out = []
    for f in dataclasses.fields(opts):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(OptionInfo(f.name, _type_text(hints[f.name]), _default_text(default), f.metadata.get("help", "")))
    return out


def describe_options(cls_or_name: type | str) -> str:
    """One line naming every option of an expert with its type, default and help."""
    infos = option_infos(cls_or_name)
    if not infos:
        return "it takes no options"
    return "; ".join(f"{i.name} ({i.type}, default {i.default}): {i.help}" for i in infos)


def _check_options_class(cls: type, name: str) -> None:
    opts = getattr(cls, "Options", None)
    if not (isinstance(opts, type) and dataclasses.is_dataclass(opts)):
        raise TypeError(f"grounding expert {name!r}: {cls.__name__}.Options must be a dataclass (use NoOptions for none)")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for f in dataclasses.fields(opts):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise TypeError(f"grounding expert {name!r}: option {f.name!r} has no default")
        if not f.metadata.get("help"):
            raise TypeError(f"grounding expert {name!r}: option {f.name!r} has no help (declare it with option(default, help))")
        if f.name not in params and not takes_any:
            raise TypeError(f"grounding expert {name!r}: option {f.name!r} is not a keyword argument of {cls.__name__}.__init__")


class ExpertRegistry(Registry):
    """A :class:`~muva.registry.Registry` of expert classes that finds them on first use."""

    def __init__(self, kind: str, package: str):
        super().__init__(kind)
        self.package = package
        self.summaries: dict[str, str] = {}
        self._discovered = False
        self.broken: dict[str, str] = {}  # expert module → why it could not be imported

    def discover(self) -> None:
        """Import the expert modules of the package (once)."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_") and info.name not in _NOT_EXPERT_MODULES:
                module = f"{self.package}.{info.name}"
                try:
                    importlib.import_module(module)
                except Exception as exc:  # noqa: BLE001 - one broken expert file must not disable the others
                    self.broken[module] = f"{type(exc).__name__}: {exc}"

    def canonical(self, name: str) -> str:
        self.discover()
        try:
            return super().canonical(name)
        except RegistryError as exc:
            if not self.broken:
                raise
            failed = "; ".join(f"{m} ({why})" for m, why in self.broken.items())
            raise RegistryError(f"{exc.args[0]} (expert modules that failed to import: {failed})") from None

    def __contains__(self, name: object) -> bool:
        self.discover()
        return super().__contains__(name)

    def __iter__(self):
        self.discover()
        return super().__iter__()

    def names(self) -> list[str]:
        self.discover()
        return super().names()

    def aliases_of(self, name: str) -> list[str]:
        self.discover()
        return super().aliases_of(name)

    def remove(self, name: str) -> None:
        """Unregister an expert (tests and notebooks that register a temporary one)."""
        key = self.canonical(name)
        del self._items[key]
        self.summaries.pop(key, None)
        for alias in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[alias]


EXPERTS = ExpertRegistry("grounding expert", "muva.grounding.experts")


def register_expert(name: str, *, aliases: Iterable[str] = (), summary: str | None = None):
    """Class decorator: register a grounding expert under ``name`` (see the module doc)."""

    def deco(cls: type) -> type:
        _check_options_class(cls, name)
        if cls.__dict__.get("name") is None:  # the name recorded as the source of its boxes
            cls.name = name
        EXPERTS.add(name, cls, aliases=tuple(aliases))
        EXPERTS.summaries[name.strip().lower().replace("_", "-")] = summary or (inspect.getdoc(cls) or "").split("\n")[0]
        return cls

    return deco


def _unknown(name: str, cls: type, key: str) -> ExpertOptionError:
    valid = [f.name for f in dataclasses.fields(cls.Options)]
    close = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ExpertOptionError(f"unknown option {key!r} of the {name} expert.{hint} Options of {name}: {describe_options(cls)}")


def expert_options(name: str, overrides: Iterable[str] = (), base: Mapping[str, Any] | None = None):
    """The ``Options`` of expert ``name`` from ``base`` values and ``KEY=VALUE`` texts (a dry build).

    Values are converted to the field types; an unknown key or a value that does not fit
    is an :class:`ExpertOptionError` that lists the expert's options.
    """
    key_name = EXPERTS.canonical(name)
    cls = EXPERTS.get(key_name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ExpertOptionError(f"expert option {item!r} must look like KEY=VALUE (e.g. -X threads=2); "
                                    f"options of {key_name}: {describe_options(cls)}")
        key = item.split("=", 1)[0].strip()
        if key not in fields:
            raise _unknown(key_name, cls, key)
    for key in base or {}:
        if key not in fields:
            raise _unknown(key_name, cls, key)
    try:
        return apply_overrides(cls.Options, dict(base or {}), overrides)
    except ConfigError as exc:
        text = str(exc).replace("config key", "option")
        raise ExpertOptionError(f"{key_name} expert: {text}. Options of {key_name}: {describe_options(cls)}") from exc


def options_dict(options: Any) -> dict[str, Any]:
    """An ``Options`` instance → keyword arguments of its expert (values kept typed)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def build_expert(name: str, **kwargs):
    """Build a registered expert by name.

    Keyword arguments are its options (fields of its ``Options``; text values are
    converted) plus the other keyword arguments of its class (``parts=``, ``rules=``,
    ``fallback=``, already built objects such as ``model_obj=``).  Anything else is an
    :class:`ExpertOptionError` that lists the options.
    """
    key_name = EXPERTS.canonical(name)
    cls = EXPERTS.get(key_name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    values = {k: v for k, v in kwargs.items() if k in fields}
    extras = {k: v for k, v in kwargs.items() if k not in fields}
    for key in extras:
        if key not in params or key == "self":
            if not takes_any:
                raise _unknown(key_name, cls, key)
    try:
        options = from_dict(cls.Options, values)
    except ConfigError as exc:
        text = str(exc).replace("config key", "option")
        raise ExpertOptionError(f"{key_name} expert: {text}. Options of {key_name}: {describe_options(cls)}") from exc
    cls.check_options(options)
    return cls(**extras, **options_dict(options))
