"""The ``heatvol`` command line: one sub-command per pipeline stage, in three modules:
:mod:`~heatvol.cli.poses` (extract, import, export, info, check), :mod:`~heatvol.cli.volumes`
(render, show) and :mod:`~heatvol.cli.training` (train, test, ensemble, presets).

The commands only parse options and print messages; the work is in the library. Heavy modules
(h5py, Numba, torch) are imported inside the commands that need them, and choice lists come from
the registries only when a command reads them, so ``heatvol --help`` answers at once.
"""

from __future__ import annotations

import click

from .. import __version__
from . import poses, shards, training, volumes
from .common import CONTEXT

__all__ = ["main"]


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="heatvol")
def main():
    """heatvol: pose stores, pseudo-heatmap volumes and training for skeleton-based action
    recognition (PoseC3D-style).

    \b
    The pipeline:
      heatvol extract videos/                                       # videos -> poses.h5
      heatvol import penn-action DATA/penn_action --out poses.h5   # or a public dataset
      heatvol info poses.h5
      heatvol render --limb --size 56                               # poses.h5 -> volumes.h5
      heatvol train                                                 # poses.h5 -> runs/...
      torchrun --nproc-per-node 8 -m heatvol.cli render ...         # 8 shards (docs/scale.md)
    """


for _command in (poses.extract_cmd, poses.import_cmd, poses.export_cmd, poses.info_cmd,
                 poses.check_cmd, volumes.render_cmd, volumes.show_cmd, training.train_cmd,
                 training.test_cmd, training.ensemble_cmd, training.presets_cmd,
                 shards.merge_cmd):
    main.add_command(_command)
