"""The settings of a ``heatvol train`` run, merged in one place: a preset (or, with
``resume``, the settings saved in the checkpoint it continues), then the options given.

    from heatvol.training.settings import train_settings
    chosen = train_settings(poses="penn.h5", preset=None, overrides={"epochs": 3})
    chosen.config      # a checked TrainConfig; nothing on disk was created or changed
    chosen.notes       # lines for the run's banner (e.g. which preset and why)
    chosen.renamed     # (old, new) setting names read under their former name

A plain ``heatvol train`` (no ``--preset``, no ``--resume``) uses :func:`default_preset`: the
design's GPU set-up (preset ``default``, SlowOnly) where a CUDA GPU is usable, else the CPU
preset ``penn-x3d-cpu`` (a slim X3D, 98.6 % top-1 on Penn Action on a 2-core CPU;
``docs/training.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, TrainConfig, upgrade_settings

__all__ = ["CPU_PRESET", "TrainSettings", "default_preset", "train_settings"]

#: The preset of a plain ``heatvol train`` without a CUDA GPU.
CPU_PRESET = "penn-x3d-cpu"


@dataclass
class TrainSettings:
    """What :func:`train_settings` decided."""

    config: TrainConfig
    notes: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)


def default_preset(device: str | None = None) -> tuple[str, str]:
    """(preset, why) for a run given no ``--preset``: ``default`` (SlowOnly, sized for a GPU)
    when ``device`` (the ``--device`` option, None = auto) can be a CUDA GPU and torch sees
    one, else :data:`CPU_PRESET`."""
    from ..presets import DEFAULT

    if device is None or device == "auto" or device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return DEFAULT, "no --preset given and a CUDA GPU is available"
        why = "no --preset given and no CUDA GPU (torch.cuda.is_available() is False)"
    else:
        why = f"no --preset given and --device {device}"
    return CPU_PRESET, why + ": the CPU preset (a slim X3D, 98.6 % top-1 on Penn Action)"


def _check_store_path(settings: dict) -> None:
    poses = Path(settings.get("poses") or "poses.h5")
    if not poses.exists() and not poses.with_name(poses.name + ".parts").exists():
        raise ConfigError(f"{poses}: no such pose store (give its path, or run in a folder "
                          f"holding poses.h5)")


def train_settings(*, poses: str | None = None, preset: str | None = None,
                   work_dir: str | None = None, resume: str | None = None,
                   overrides: dict | None = None) -> TrainSettings:
    """The run's checked :class:`TrainConfig`, from (lowest first) the preset or the resumed
    checkpoint's settings, then ``overrides`` (option name -> value, None = not given; any
    TrainConfig field, former names included), ``poses`` and ``work_dir``.

    ``resume``: a checkpoint path, or ``"auto"`` for ``WORK_DIR/last.pt`` (``WORK_DIR``:
    ``work_dir``, else ``runs/PRESET``). A resumed run keeps its saved settings (except
    ``max_steps``: a new stopping point, or none). Problems (no such preset, checkpoint or
    store, an impossible value) raise ConfigError or :class:`heatvol.presets.PresetError`
    before anything is created."""
    from ..presets import load_preset
    from .checkpoint import load_checkpoint

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    overrides, renamed = upgrade_settings(overrides)
    device = overrides.get("device")
    notes = []
    if resume is not None:
        if resume in ("auto", "last"):
            if work_dir is None:
                name = preset or default_preset(device)[0]
                work_dir = str(Path("runs") / Path(name).stem)
            ckpt_path = Path(work_dir) / "last.pt"
        else:
            ckpt_path = Path(resume)
            work_dir = work_dir or str(ckpt_path.parent)
        settings, _ = upgrade_settings(load_checkpoint(ckpt_path)["config"])
        settings.pop("max_steps", None)
        settings["resume"] = str(ckpt_path)
    else:
        if preset is None:
            preset, why = default_preset(device)
            notes.append(f"preset {preset}: {why}")
        settings, renamed_in_preset = upgrade_settings(load_preset(preset))
        renamed = [(f"preset {preset}: {old}", new) for old, new in renamed_in_preset] + renamed
        settings["resume"] = None
    settings.update(overrides)
    if poses is not None:
        settings["poses"] = str(poses)
    if work_dir is not None:
        settings["work_dir"] = str(work_dir)
    elif not settings.get("work_dir"):
        settings["work_dir"] = str(Path("runs") / str(settings.get("preset") or "default"))
    config = TrainConfig.from_dict(settings)
    _check_store_path(settings)
    return TrainSettings(config=config, notes=notes, renamed=renamed)
