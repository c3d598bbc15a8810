"""A protocol setting as experiment config: its sources, targets and run folder.

:func:`setting_config` gives the config a setting trains with (``muva protocol run``);
:func:`setting_overrides` gives the same as ``KEY=VALUE`` overrides (``muva sweep --protocol``),
so both commands train a setting on exactly the same data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

__all__ = ["default_out", "setting_config", "setting_overrides", "setting_slug"]


def setting_slug(name: str) -> str:
    """A setting or protocol name as a folder name (``MA->D`` → ``MA_to_D``)."""
    return name.replace("->", "_to_").replace("+", "-").replace("/", "_").replace(":", "_")


def default_out(protocol, base) -> Path:
    """``runs/protocol/<protocol>/<config name>``: one folder per protocol and method."""
    return Path("runs/protocol") / setting_slug(protocol.name) / setting_slug(base.name)


def setting_config(base, setting, out_dir: Path):
    """The experiment config of one protocol setting (it keeps the base config's name)."""
    splits = {s for _, s in setting.sources}
    if len(splits) != 1:
        raise ValueError(f"setting {setting.name} mixes source splits {splits}; not supported")
    options = dict(base.data.dataset_options)
    target_splits = dict(base.data.target_splits)
    targets = []
    for t in setting.targets:
        targets.append(t.dataset)
        if t.options:
            options[t.dataset] = {**options.get(t.dataset, {}), **t.options}
        if t.num_splits > 1:
            target_splits[t.dataset] = t.num_splits
    data = replace(base.data, sources=[d for d, _ in setting.sources], source_split=splits.pop(), targets=targets,
                   dataset_options=options, target_splits=target_splits)
    return replace(base, data=data, output=replace(base.output, dir=str(Path(out_dir) / setting_slug(setting.name))))


def setting_overrides(base, setting) -> list[str]:
    """``KEY=VALUE`` overrides that turn ``base`` into the setting's config (its data section, not its folder)."""
    data = setting_config(base, setting, Path(".")).data
    out = [f"data.sources={json.dumps(list(data.sources))}", f"data.source_split={data.source_split}",
           f"data.targets={json.dumps(list(data.targets))}"]
    if data.dataset_options != base.data.dataset_options:
        out.append(f"data.dataset_options={json.dumps(data.dataset_options)}")
    if data.target_splits != base.data.target_splits:
        out.append(f"data.target_splits={json.dumps(data.target_splits)}")
    return out
