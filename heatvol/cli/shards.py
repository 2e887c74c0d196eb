"""Sharded runs on the command line: the ``--shard K/N`` option that ``extract`` and ``render``
share, their report lines, and ``heatvol merge``. The work is in :mod:`heatvol.shard` and
:mod:`heatvol.merge` (docs/scale.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..merge import MergeError
from ..shard import ShardError, pin_gpu, resolve_shard
from .common import CONTEXT, EXIT_USAGE, fail, one_line

__all__ = ["SHARD_HELP", "SHARD_ERRORS", "shard_option", "report_shard", "merge_cmd"]

SHARD_HELP = ("Do shard K of N (K from 0) of the work, into OUT.shard-K-of-N; the last shard "
              "to finish merges all into OUT. Default: torchrun's RANK/WORLD_SIZE or a SLURM "
              "array's task id/count when set (docs/scale.md).")

SHARD_ERRORS = (ShardError, MergeError)


def shard_option(text: str | None):
    """--shard (or the launcher's environment) -> Shard or None; a torchrun rank is given its
    own GPU (LOCAL_RANK) before anything touches CUDA. A bad value exits with status 2."""
    try:
        shard = resolve_shard(text)
    except ShardError as exc:
        fail(exc, EXIT_USAGE)
    line = pin_gpu(shard)
    if line:
        click.echo(f"heatvol: warning: {one_line(line)}", err=True)
    return shard


def report_shard(out: Path, res: dict, *, quiet_part: bool = False) -> None:
    """What a shard did (unless ``quiet_part``: the command said it), and whether the job is
    merged."""
    done = res.get("rendered", res.get("extracted", 0))
    if res.get("part") and not quiet_part:
        click.echo(f"{res['part']}: shard {res['shard']} done ({done} new, "
                   f"{res.get('skipped', 0)} already there, {res.get('total', done)} in all)")
    if not res.get("part"):
        click.echo(f"{out}: already holds this job's merged output; nothing to do")
    elif res.get("merged"):
        click.echo(f"{out}: all shards merged")
    elif res.get("waiting"):
        click.echo(f"{out}: waiting for shard(s) {', '.join(map(str, res['waiting']))}; the "
                   f"last to finish merges")


@click.command("merge", context_settings=CONTEXT)
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT when it exists.")
@click.option("--remove-parts", is_flag=True, help="Remove the parts (with their shard "
              "manifests and done markers) once OUT is in place.")
def merge_cmd(out, parts, overwrite, remove_parts):
    """Merge pose stores, or volume files, into one.

    The parts must agree (layout, classes, splits; render settings for volume files) and each
    sequence must be in exactly one part. Shard outputs (OUT.shard-K-of-N) are checked against
    their manifests: every shard of the job present, every sequence it was given in it. The
    merged file holds the sequences in the order one process would have written them. On any
    problem nothing is written and one line names the file and the sequence.

    \b
    Examples:
      heatvol merge volumes.h5 volumes.h5.shard-*-of-4
      heatvol merge all.h5 part1.h5 part2.h5
    """
    from ..merge import merge_parts, remove_part_files
    from ..store import StoreError

    try:
        res = merge_parts(out, list(parts), overwrite=overwrite)
    except (MergeError, StoreError) as exc:
        fail(exc)
    if remove_parts:
        remove_part_files(list(parts))
    click.echo(f"{out}: merged {len(parts)} parts, {res['sequences']:,} sequences"
               + (f", {res['failures']} failures" if res["failures"] else ""))
