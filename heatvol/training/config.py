"""The settings of a training run (:class:`TrainConfig`), the one-line errors of a run
(:class:`ConfigError` for settings and inputs, :class:`RunError` for what fails while it runs),
the renamed settings still read for one release (:func:`upgrade_settings`), and which settings
a resumed run may not change.

The words are :mod:`heatvol.params`'s: ``size`` is (H, W), ``render_device`` is where volumes
are rendered (auto | cpu | cuda), ``device`` is the torch device of the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..params import MODES, RENDER_DEVICES, parse_size

__all__ = ["ConfigError", "RunError", "TrainConfig", "RESUME_MUST_MATCH", "resume_conflicts",
           "upgrade_settings", "RENAMED_SETTINGS"]


class ConfigError(ValueError):
    """A setting or an input makes the run impossible; one line, shown by the CLI."""


class RunError(RuntimeError):
    """The run stopped on an error while it ran (e.g. a DataLoader worker failed on a
    sample); one line, shown by the CLI."""


#: Settings renamed in this release, read (with a deprecation line) until the next one:
#: old name -> new name.
RENAMED_SETTINGS = {"render": "render_device"}

# The flag of each checked setting, so its error speaks the command line's words.
_FLAGS = {"size": "--size", "test_size": "--set test_size", "clip_len": "--clip-len",
          "batch_size": "--batch-size", "epochs": "--epochs", "workers": "--workers",
          "lr": "--lr", "max_steps": "--max-steps", "render_device": "--render-device",
          "mode": "--limb/--joint", "max_persons": "--set max_persons",
          "sigma": "--set sigma", "val_every": "--set val_every",
          "val_num_clips": "--set val_num_clips", "log_every": "--set log_every",
          "keep_epochs": "--set keep_epochs", "eval_batch_size": "--set eval_batch_size"}


def upgrade_settings(data: dict) -> tuple[dict, list[tuple[str, str]]]:
    """``data`` with the settings of :data:`RENAMED_SETTINGS` under their new names (the old
    ``render: gpu`` is ``render_device: cuda``; ``render_backend``, a testing knob of the old
    ``render: gpu``, is dropped) and the (old, new) pairs found, for a deprecation line."""
    data = dict(data)
    found = []
    for old, new in RENAMED_SETTINGS.items():
        if old in data:
            value = data.pop(old)
            if old == "render" and value == "gpu":
                value = "cuda"
            data.setdefault(new, value)
            found.append((old, new))
    data.pop("render_backend", None)
    return data, found


#: What rendered volumes travel from the DataLoader workers to the model in ("auto": see
#: :func:`heatvol.training.setup.resolve_volume_dtype`).
VOLUME_DTYPES = ("auto", "float32", "float16", "uint8")


@dataclass
class TrainConfig:
    """Every setting of a training run (presets and the CLI set these fields)."""

    poses: str = "poses.h5"
    work_dir: str | None = None           # default: runs/<preset>
    preset: str | None = None
    # model and volumes
    model: str = "slowonly"
    model_kwargs: dict = field(default_factory=dict)
    mode: str = "joint"                   # 3D CNNs: joint | limb heatmaps
    modality: str = "joint"               # GCNs: joint | bone | joint-motion | bone-motion
    rotate: float | list = 0.0            # GCNs, training: random rotation up to this (radians;
                                          # 3D: one limit or three, about x, y, z)
    scale: float = 0.0                    # GCNs, training: random scaling by 1 +- this
    align: bool = False                   # GCNs, 3D: turn each sequence to one canonical view
    clip_len: int = 48
    size: tuple = (56, 56)                # (H, W); an int (square) or [H, W] is accepted
    test_size: tuple | None = None        # (H, W) of testing; default: size
    sigma: float = 0.6
    max_persons: int = 2
    area_range: tuple = (0.56, 1.0)
    train_split: str = "train"
    val_split: str | None = "auto"        # auto: "val", else "test", else none
    # optimisation
    epochs: int = 240
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-4
    grad_clip: float | None = 40.0
    warmup_epochs: float = 0.0
    warmup_start: float = 0.1             # warm-up starts at lr * warmup_start
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    # execution
    render_device: str = "auto"           # where volumes are rendered: cpu (DataLoader
                                          # workers) | cuda (inside the step) | auto
    step_render_device: str | None = None # TESTING STAND-IN ONLY: with render_device="cuda",
                                          # render inside the step with these kernels ("cpu")
                                          # instead of CUDA, so the in-step path runs without
                                          # a GPU (tests/test_training.py); never in presets
    target_device: str = "any"            # what a preset is sized for: "cuda" warns with an
                                          # estimated time when the run is on a CPU
    device: str = "auto"                  # the torch device of the model
    workers: int = 2
    volume_dtype: str = "auto"            # what the workers hand the model (render_device cpu):
                                          # auto = float16 for a CUDA model under amp (bf16
                                          # autocast), else float32 | float32 | float16 | uint8
    amp: bool = True                      # bf16 autocast, CUDA only
    channels_last: bool = True            # CUDA only
    seed: int = 0
    max_steps: int | None = None
    resume: str | None = None             # a checkpoint path, or "auto" = <work_dir>/last.pt
    val_every: int = 1                    # epochs between validations (and the last); 0: none
    val_num_clips: int = 1
    val_flip: bool = False
    eval_batch_size: int | None = None
    log_every: int = 10
    keep_epochs: int = 3
    progress: bool = True

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Every setting's type and range, before anything is created; a ConfigError naming
        the command-line flag. ``size``/``test_size`` become (H, W) tuples."""
        try:
            self.size = parse_size(self.size, _FLAGS["size"])
            if self.test_size is not None:
                self.test_size = parse_size(self.test_size, _FLAGS["test_size"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.mode not in MODES:
            raise ConfigError(f"mode must be {' or '.join(MODES)} ({_FLAGS['mode']}); got "
                              f"{self.mode!r}")
        if self.render_device not in RENDER_DEVICES:
            raise ConfigError(f"--render-device must be one of {', '.join(RENDER_DEVICES)}; got "
                              f"{self.render_device!r}")
        if self.volume_dtype not in VOLUME_DTYPES:
            raise ConfigError(f"volume_dtype must be one of {', '.join(VOLUME_DTYPES)} "
                              f"(--set volume_dtype); got {self.volume_dtype!r}")
        if self.step_render_device not in (None, "cpu", "reference"):
            raise ConfigError(f"step_render_device (a testing stand-in) is cpu or reference; got "
                              f"{self.step_render_device!r}")
        for name, low in (("clip_len", 1), ("batch_size", 1), ("epochs", 1), ("workers", 0),
                          ("max_persons", 1), ("val_every", 0), ("val_num_clips", 1),
                          ("log_every", 1), ("keep_epochs", 0), ("max_steps", 0),
                          ("eval_batch_size", 1)):
            value = getattr(self, name)
            if value is None and name in ("max_steps", "eval_batch_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{_FLAGS[name]} must be an integer >= {low}; got {value!r}")
        for name in ("lr", "sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{_FLAGS[name]} must be a positive number; got {value!r}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from settings (a preset, ``--set``, a checkpoint); the renamed settings of
        :data:`RENAMED_SETTINGS` are read under their new names."""
        data, _ = upgrade_settings(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(names))}")
        data = dict(data)
        if "area_range" in data:
            data["area_range"] = tuple(data["area_range"])
        return cls(**data)

    @classmethod
    def from_checkpoint_dict(cls, data: dict) -> TrainConfig:
        """The settings saved in a checkpoint, ignoring fields this version no longer has."""
        data, _ = upgrade_settings(data)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["area_range"] = list(self.area_range)
        out["size"] = list(self.size)
        out["test_size"] = None if self.test_size is None else list(self.test_size)
        return out


#: Settings a resumed run must share with the checkpoint it continues (the data order, the
#: model's shape or the batches would differ otherwise).
RESUME_MUST_MATCH = ("model", "mode", "modality", "align", "clip_len", "size", "batch_size",
                     "seed", "max_persons", "train_split", "sigma")


def resume_conflicts(saved: dict, cfg: TrainConfig) -> list[str]:
    """The :data:`RESUME_MUST_MATCH` settings whose saved value differs from ``cfg``'s, as
    ``"name (old -> new)"`` strings (empty: the run may resume)."""
    def same(key):
        old, new = saved[key], getattr(cfg, key)
        if key == "size":  # an int (older checkpoints) or [H, W]
            old = parse_size(old)
        return old == new

    return [f"{k} ({saved[k]!r} -> {getattr(cfg, k)!r})" for k in RESUME_MUST_MATCH
            if k in saved and not same(k)]
