"""YAML configs: one file holds the sections ``data``, ``vqvae``, ``vqvae_training``, ``flow`` and
``flow_training``. Each section is read into the dataclass of the component that owns it
(``from_section``), which rejects unknown keys with a :class:`~smokeflow.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

import yaml

from smokeflow.errors import ConfigError

KNOWN_SECTIONS = ("data", "vqvae", "vqvae_training", "flow", "flow_training")

T = TypeVar("T")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict of sections; errors name the file and the problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(config).__name__}")
    unknown = sorted(set(config) - set(KNOWN_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: {list(KNOWN_SECTIONS)}")
    return config


def save_config(config: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a config dict as YAML (atomically: a half-written config is never left behind)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    os.replace(tmp, path)


def section_to_dataclass(cls: type[T], section: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from a config section, rejecting unknown keys.

    Nested dataclass fields may be given as nested mappings. ``where`` names the section in messages.
    """
    section = dict(section or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"config section '{where}': unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in section.items():
        ftype = fields[name].type
        target = ftype if isinstance(ftype, type) else None
        if target is None and isinstance(ftype, str):
            target = _resolve_dataclass(cls, ftype)
        if target is not None and dataclasses.is_dataclass(target) and isinstance(value, dict):
            value = section_to_dataclass(target, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config section '{where}': {err}") from None


def _resolve_dataclass(owner: type, type_name: str):
    import sys

    module = sys.modules.get(owner.__module__)
    candidate = getattr(module, type_name, None) if module else None
    return candidate if dataclasses.is_dataclass(candidate) else None
