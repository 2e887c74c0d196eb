"""The settings of a training run (:class:`TrainConfig`), the one-line error every setting or
input problem raises (:class:`ConfigError`), and which settings a resumed run may not change."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["ConfigError", "TrainConfig", "RESUME_MUST_MATCH", "resume_conflicts"]


class ConfigError(ValueError):
    """A setting or an input makes the run impossible; one line, shown by the CLI."""


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
    size: int = 56
    test_size: int | None = None          # default: size
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
    render: str = "auto"                  # cpu | gpu | auto
    render_backend: str = "cuda"          # the step renderer's backend for render=gpu
    device: str = "auto"
    workers: int = 2
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

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
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
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["area_range"] = list(self.area_range)
        return out


#: Settings a resumed run must share with the checkpoint it continues (the data order, the
#: model's shape or the batches would differ otherwise).
RESUME_MUST_MATCH = ("model", "mode", "modality", "align", "clip_len", "size", "batch_size",
                     "seed", "max_persons", "train_split", "sigma")


def resume_conflicts(saved: dict, cfg: TrainConfig) -> list[str]:
    """The :data:`RESUME_MUST_MATCH` settings whose saved value differs from ``cfg``'s, as
    ``"name (old -> new)"`` strings (empty: the run may resume)."""
    return [f"{k} ({saved[k]!r} -> {getattr(cfg, k)!r})" for k in RESUME_MUST_MATCH
            if k in saved and saved[k] != getattr(cfg, k)]
