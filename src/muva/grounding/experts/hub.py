"""Loading a ``transformers`` model for an expert: local folder, Hugging Face cache or hub, offline-safe.

One place for what every transformers-backed expert (the MLLM, the open-vocabulary
detectors) does before ``from_pretrained``: a path must be a model folder; a hub id is
read from the local cache without asking the hub when downloads cannot happen
(:func:`muva.utils.network.network_problem`), and absent there the error says so at once
with the fix, instead of the hub retrying every file for minutes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, TypeVar

from muva.utils.errors import MuvaError
from muva.utils.network import hub_offline, network_problem

T = TypeVar("T")


class ModelLoadError(MuvaError, RuntimeError):
    """A transformers model of an expert cannot be found, loaded or run."""


def in_hub_cache(model_id: str) -> bool:
    """Whether the Hugging Face cache holds this model (its config.json; the weights are checked on loading)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: comes with transformers (muva[mllm])
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str) and os.path.isfile(found)


def fix_hint(model_id: str) -> str:
    """How to get a model onto an offline machine."""
    return (f"Fix: download it on a machine with internet (`hf download {model_id}`) and copy its Hugging Face cache "
            "folder here (HF_HOME); or pass a local copy with -X model=/path/to/folder; or use an expert that needs no "
            "model download: -e pose or -e prior.")


def is_local_path(model_id: str) -> bool:
    """Whether ``model_id`` names a folder rather than a hub id (``org/name``)."""
    return Path(model_id).expanduser().exists() or model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1


def local_only(model_id: str, local_files_only: bool, what: str, error: type[ModelLoadError] = ModelLoadError) -> bool:
    """Whether loading ``model_id`` must read only local files; raises ``error`` when it cannot be had.

    A folder must hold ``config.json``; a hub id not in the cache while the network is
    unusable is an error naming the problem and the fix.
    """
    if is_local_path(model_id):
        if not (Path(model_id).expanduser() / "config.json").is_file():
            raise error(f"model {model_id}: no model folder there (expected a folder holding config.json "
                        "and the weights, as `hf download` or save_pretrained writes it)")
        return True
    if local_files_only:
        return True
    problem = network_problem()
    if problem:
        if not in_hub_cache(model_id):
            raise error(f"the {what} {model_id} is not in the local Hugging Face cache and {problem}, so it cannot "
                        f"be downloaded. {fix_hint(model_id)}")
        return True  # in the cache: read it from there without asking the hub
    return False


def load_pretrained(model_id: str, load: Callable[[bool], T], *, local_files_only: bool, what: str,
                    error: type[ModelLoadError] = ModelLoadError, hint: str = "") -> T:
    """``load(local_files_only)`` (the ``from_pretrained`` calls) with the offline checks and one clear error."""
    offline = local_only(Path(model_id).expanduser().as_posix() if is_local_path(model_id) else model_id, local_files_only, what, error)
    try:
        with hub_offline() if offline else contextlib.nullcontext():
            return load(offline)
    except ImportError as exc:
        raise error(f"the {what} needs transformers: pip install 'muva[mllm]' ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - hub, file and config errors come in many types
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise error(f"cannot load {model_id!r} ({type(exc).__name__}: {first}). {fix_hint(model_id)}{' ' + hint if hint else ''}") from exc
