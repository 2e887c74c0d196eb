"""Training presets: YAML files of :class:`heatvol.training.TrainConfig` fields.

    heatvol presets                      # lists them
    heatvol train --preset penn-x3d-cpu  # uses one; command-line options override its fields

A plain ``heatvol train`` uses ``default`` on a CUDA GPU and ``penn-x3d-cpu`` without one
(:func:`heatvol.training.settings.default_preset`).

A preset may start from another with ``extends: NAME``; its own keys win. ``description`` is
shown by ``heatvol presets``. Presets are looked up in the directories of the
``HEATVOL_PRESET_PATH`` environment variable (``os.pathsep``-separated) first, then in this
package, so a user directory can add presets or replace the bundled ones (also ``default``);
``--preset`` also takes a path to a ``.yaml`` file.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

__all__ = ["DEFAULT", "PresetError", "preset_dirs", "list_presets", "load_preset", "preset_path"]

#: The GPU preset a plain ``heatvol train`` uses on a CUDA GPU (without one: ``penn-x3d-cpu``).
DEFAULT = "default"
_HERE = Path(__file__).resolve().parent


class PresetError(ValueError):
    """A preset is missing or malformed; the message names it."""


def preset_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("HEATVOL_PRESET_PATH", "").split(os.pathsep) if p]
    return extra + [_HERE]


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (or ``name`` itself when it is a .yaml path)."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise PresetError(f"preset file {path} not found")
        return path
    for directory in preset_dirs():
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    raise PresetError(f"no preset named {name!r}; known: {', '.join(list_presets()) or 'none'} "
                      f"(`heatvol presets` lists them)")


def list_presets() -> dict[str, str]:
    """{name: description}, the first directory holding a name wins."""
    found: dict[str, str] = {}
    for directory in preset_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            if path.stem not in found:
                try:
                    found[path.stem] = str(_read(path).get("description", "")).strip()
                except PresetError as exc:
                    found[path.stem] = f"(unreadable: {exc})"
    return dict(sorted(found.items()))


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"{path}: cannot read preset ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise PresetError(f"{path}: a preset is a mapping of settings")
    return data


def load_preset(name: str, _seen: tuple = ()) -> dict:
    """The settings of preset ``name`` with ``extends`` resolved (``description`` and
    ``extends`` removed; ``preset`` set to the name)."""
    if name in _seen:
        raise PresetError(f"preset {name!r} extends itself ({' -> '.join(_seen + (name,))})")
    path = preset_path(name)
    data = _read(path)
    parent = data.pop("extends", None)
    data.pop("description", None)
    base = load_preset(str(parent), _seen + (name,)) if parent else {}
    base.update(data)
    base["preset"] = path.stem if name.endswith((".yaml", ".yml")) or os.sep in name else name
    return base
