"""Dataset options given on the command line: ``--dataset-option`` / ``-O KEY=VALUE``.

The same options a training config gives as ``data.dataset_options`` (``{dataset name:
{key: value}}``), written one per flag:

* ``KEY=VALUE`` applies to every dataset of the command whose parser accepts ``KEY``
  (``-O split=3`` for VIPeR, PRID, GRID and iLIDS at once);
* ``DATASET.KEY=VALUE`` applies to that dataset only (``-O msmt17.train_split=train+val``),
  the one-flag form of ``data.dataset_options: {msmt17: {train_split: train+val}}``.

Values are read as YAML scalars, as config overrides are: ``3`` is an integer, ``true`` /
``false`` booleans, ``null`` None; anything else (``train+val``, a regular expression, a
path) stays the text given.  :func:`parse_dataset_options` is the one parser of these
flags; :func:`options_for_datasets` hands each dataset its share and refuses options that
no dataset accepts.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import yaml

# The package imports this module last, once DATASETS and its helpers exist.
from muva.data.datasets import DATASETS, dataset_record, unknown_dataset_error
from muva.data.records import DatasetError

ANY_DATASET = "*"  # key of the options given without a dataset name


def _value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return text  # lists, mappings, dates and strings: the text exactly as given


def parse_dataset_options(pairs: Iterable[str] | None) -> dict[str, dict[str, Any]]:
    """``["split=3", "msmt17.train_split=train+val"]`` → ``{"*": {"split": 3}, "msmt17": {"train_split": "train+val"}}``.

    Options without a dataset name are filed under ``"*"`` (:data:`ANY_DATASET`).  A pair
    that is not ``KEY=VALUE`` or names an unknown dataset is a :class:`DatasetError`.
    """
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        key, sep, raw = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise DatasetError(
                f"dataset option {pair!r} is not KEY=VALUE (e.g. -O split=3, -O variant=labeled, "
                "-O msmt17.train_split=train+val)"
            )
        dataset, dot, name = key.rpartition(".")
        if not dot:
            dataset = ANY_DATASET
        elif not name or not dataset:
            raise DatasetError(f"dataset option {pair!r}: expected KEY=VALUE or DATASET.KEY=VALUE")
        elif dataset not in DATASETS:
            raise unknown_dataset_error(dataset, f" (in dataset option {pair!r}; only registered datasets take DATASET.KEY=VALUE)")
        else:
            dataset = DATASETS.canonical(dataset)
        out.setdefault(dataset, {})[name] = _value(raw.strip())
    return out


def accepted_options(spec: str) -> tuple[str, ...]:
    """Option names the dataset ``spec`` takes: its parser's keywords, or ``name`` for a folder."""
    if isinstance(spec, str) and spec in DATASETS:
        return dataset_record(spec).options
    return ("name",)


def _scoped(spec: str, options: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(spec, str) and spec in DATASETS:
        canonical = DATASETS.canonical(spec)
        for key, opts in options.items():
            if key != ANY_DATASET and key in DATASETS and DATASETS.canonical(key) == canonical:
                out.update(opts)
    return out


def _no_such_option(key: str, specs: Sequence[str]) -> DatasetError:
    if len(specs) == 1 and specs[0] in DATASETS:
        accepted = accepted_options(specs[0])
        return DatasetError(f"dataset {DATASETS.canonical(specs[0])!r} has no option {key!r}; accepted: {', '.join(accepted) or 'none'}")
    takes = "; ".join(f"{s}: {', '.join(accepted_options(s)) or 'none'}" for s in dict.fromkeys(specs))
    return DatasetError(f"dataset option {key!r} is taken by none of the datasets given ({takes or 'none given'})")


def options_for_datasets(specs: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The options of each of ``specs`` (same order), from :func:`parse_dataset_options`.

    ``KEY=VALUE`` goes to every dataset that takes ``KEY`` and is an error when none does
    (naming what each one takes); ``DATASET.KEY=VALUE`` goes to that dataset, and is an
    error when it is not among ``specs`` or does not take ``KEY``.
    """
    specs = [str(s) for s in specs]
    common = dict(options.get(ANY_DATASET, {}))
    for key in common:
        if not any(key in accepted_options(s) for s in specs):
            raise _no_such_option(key, specs)
    named = {DATASETS.canonical(s) for s in specs if s in DATASETS}
    for dataset, opts in options.items():
        if dataset == ANY_DATASET:
            continue
        if dataset not in named:
            raise DatasetError(
                f"dataset option {dataset}.{next(iter(opts))}=… names dataset {dataset!r}, which is not among "
                f"the datasets given ({', '.join(specs) or 'none'})"
            )
        for key in opts:
            if key not in accepted_options(dataset):
                raise _no_such_option(key, [dataset])
    return [{**{k: v for k, v in common.items() if k in accepted_options(s)}, **_scoped(s, options)} for s in specs]


def dataset_options_for(specs: Sequence[str], pairs: Iterable[str] | None) -> list[dict[str, Any]]:
    """:func:`parse_dataset_options` then :func:`options_for_datasets`: what commands call."""
    return options_for_datasets(specs, parse_dataset_options(pairs))
