"""Stage-2 loss terms as plugins: the term contract, :func:`register_loss` and the weights check.

The stage-2 objective is ``Σ weight(name) · term(name)(out, batch)`` over the terms named in
``stage2.weights`` with a weight other than 0.  A term is a :class:`LossTerm` subclass
registered in :data:`LOSSES`::

    @register_loss("center", aliases=("centre",))
    class CenterTerm(LossTerm):
        @classmethod
        def build(cls, ctx: LossContext) -> "CenterTerm":
            return cls()

        def forward(self, out, batch):
            ...  # a scalar tensor

The contract:

* ``build(ctx)`` (a classmethod) makes the term from a :class:`LossContext`: the stage-2
  config section, the number of identities, the feature size, the frozen text prototypes,
  the mask temperature and whether the model has part tokens.  The default calls ``cls()``.
* ``forward(out, batch) -> Tensor`` returns the *unweighted* scalar.  ``out`` is the model's
  training output (``logits``, ``features`` (pre-BN), ``proj_features``, ``bn_features``,
  ``tokens``, ``mask_logits``); ``batch`` is the loader's batch (``image``, ``pid``,
  ``camid``, ``index``, and ``mask`` — the pseudo masks — when the sources are grounded).
* Class attributes declare what the term needs (all ``False`` by default):
  ``needs_parts`` (the term is left out for a model without part tokens),
  ``needs_text`` (stage 2 computes ``ctx.text_prototypes``, else it is ``None``),
  ``needs_pseudo_masks`` (``batch["mask"]``; training without grounding caches is refused),
  ``needs_epoch_features`` (:meth:`LossTerm.rebuild` is called at the start of every epoch
  with the test features of all training images, as the cluster memory is).
* State kept in buffers is saved in ``last.pt`` and restored on resume.  The optimiser
  trains the model's parameters only: a term's own parameters would stay as built.

A plugin module registers its terms when imported (``muva --import MODULE``); a term is then
weighted like a built-in one, ``stage2.weights.center=0.5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import torch
from torch import nn

from muva.config import ConfigError
from muva.registry import Registry, RegistryError

__all__ = ["LOSSES", "LossConfigError", "LossContext", "LossTerm", "register_loss", "resolve_weights"]

#: every registered stage-2 loss term (built-in and plugin), by name.
LOSSES = Registry("loss")

T = TypeVar("T", bound=type)

_NAME = re.compile(r"[a-z][a-z0-9-]*")


class LossConfigError(ConfigError):
    """``stage2.weights`` names a loss that is not registered, twice, or none at all."""


@dataclass(frozen=True, eq=False)
class LossContext:
    """What :meth:`LossTerm.build` gets.

    ``cfg`` is the ``stage2`` config section (``muva.engine.config.Stage2Config``: label
    smoothing, memory and mask settings, ...); ``text_prototypes`` the frozen text feature of
    every identity (``num_classes × feature_dim``), ``None`` unless a term ``needs_text``.
    """

    cfg: Any
    num_classes: int
    feature_dim: int
    text_prototypes: torch.Tensor | None = None
    mask_temperature: float = 1.0
    has_parts: bool = True


class LossTerm(nn.Module):
    """Base class of a stage-2 loss term (see the module documentation for the contract)."""

    #: the registered name (set by :func:`register_loss`); logged as ``loss/<name>``.
    name: ClassVar[str] = ""
    needs_parts: ClassVar[bool] = False
    needs_text: ClassVar[bool] = False
    needs_pseudo_masks: ClassVar[bool] = False
    needs_epoch_features: ClassVar[bool] = False

    @classmethod
    def build(cls, ctx: LossContext) -> "LossTerm":
        """The term for one training run (default: ``cls()``)."""
        return cls()

    def forward(self, out: dict, batch: dict) -> torch.Tensor:  # pragma: no cover - the contract
        raise NotImplementedError(f"{type(self).__name__}.forward(out, batch) must return the loss")

    def rebuild(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """With ``needs_epoch_features``: the test features and labels of all training images."""
        raise NotImplementedError(f"{type(self).__name__} declares needs_epoch_features but has no rebuild()")


def register_loss(name: str, *, aliases: tuple[str, ...] | list[str] = ()) -> Callable[[T], T]:
    """Class decorator: register a :class:`LossTerm` subclass in :data:`LOSSES` under ``name``.

    The name is what ``stage2.weights`` and the metrics (``loss/<name>``) use: lower-case
    letters, digits and ``-`` (``_`` is read as ``-``).
    """

    def deco(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"register_loss({name!r}) decorates a muva.losses.LossTerm subclass, got {cls!r}")
        key = name.strip().lower().replace("_", "-")
        if not _NAME.fullmatch(key) or hasattr(nn.ModuleDict, key):
            raise ValueError(f"loss name {name!r}: use lower-case letters, digits and '-', starting with a letter "
                             "(and not a torch.nn.Module attribute)")
        LOSSES.add(key, cls, aliases=aliases)
        cls.name = key
        return cls

    return deco


def _plugin_hint() -> str:
    return ("A loss of a plugin module is registered when the module is imported: load it with "
            "`muva --import MODULE` (a module name or a .py file) before the command, or $MUVA_PLUGINS.")


def resolve_weights(weights: Mapping[str, float], has_parts: bool | None = None,
                    has_pseudo_masks: bool | None = None) -> dict[str, float]:
    """``{registered name: weight}`` of the terms that run, in the order of ``weights``.

    Weight 0 switches a term off; a term that ``needs_parts`` is left out when ``has_parts``
    is False.  Raises :class:`LossConfigError` for a name that is not registered (listing the
    registered losses and how to load a plugin), for two names of one loss, when a term that
    runs ``needs_pseudo_masks`` and ``has_pseudo_masks`` is False, and when no term runs.
    ``None`` for ``has_parts`` / ``has_pseudo_masks`` means not known yet (no check).
    """
    seen: dict[str, str] = {}
    active: dict[str, float] = {}
    for given, weight in weights.items():
        try:
            key = LOSSES.canonical(str(given))
        except RegistryError as exc:
            raise LossConfigError(f"stage2.weights.{given}: {exc.args[0]}. {_plugin_hint()}") from None
        if key in seen:
            raise LossConfigError(f"stage2.weights names the loss {key!r} twice ({seen[key]!r} and {given!r}); "
                                  f"weight it once, as stage2.weights.{key}")
        seen[key] = str(given)
        cls = LOSSES.get(key)
        if not weight or (cls.needs_parts and has_parts is False):
            continue
        if cls.needs_pseudo_masks and has_pseudo_masks is False:
            raise LossConfigError(f"stage2.weights.{key} > 0 needs pseudo masks (grounding caches) for the sources: "
                                  f"give data.grounding / run `muva ground run`, or set stage2.weights.{key}=0")
        active[key] = float(weight)
    if not active:
        raise LossConfigError(f"every stage-2 loss weight is 0{' for a model without parts' if has_parts is False else ''}"
                              f"; set at least one of stage2.weights.<name> (registered: {', '.join(LOSSES.names())})")
    return active
