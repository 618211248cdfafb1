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


def apply_overrides(config: dict[str, Any], items: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``config`` with ``SECTION.KEY=VALUE`` items applied (VALUE parsed as YAML).

    For one-off changes from the command line (``smokeflow train --set flow_training.learning_rate=2e-4``)
    instead of a copied config file. The sections must exist; a key the file leaves at its default may be
    set, and a misspelt key is rejected when the section is read (``section_to_dataclass``).
    """
    import copy

    config = copy.deepcopy(config)
    for item in items or []:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. flow_training.max_steps=1000")
        node = config
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {item!r}: the config has no section {'.'.join(parts[:depth + 1])!r}")
            node = node[part]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({err})") from None
        if isinstance(value, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string; on a command line it means the number.
            try:
                value = float(value)
            except ValueError:
                pass
        node[parts[-1]] = value
    return config


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
