"""The ``heatvol`` command line: one sub-command per pipeline stage.

Heavy modules (Numba kernels, torch) are imported inside the commands that need them, so
``heatvol --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str, code: int = 1):
    """Print one line to stderr and exit."""
    click.echo(f"heatvol: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="heatvol")
def main():
    """heatvol: pose stores, pseudo-heatmap volumes and training for skeleton-based action
    recognition (PoseC3D-style).

    \b
    The pipeline:
      heatvol import penn-action DATA/penn_action --out poses.h5   # or: heatvol extract videos/
      heatvol info poses.h5
      heatvol render --limb --size 56                               # poses.h5 -> volumes.h5
    """


# --------------------------------------------------------------------------- store commands


@main.command("import", context_settings=CONTEXT)
@click.argument("fmt", metavar="FORMAT", type=click.Choice(
    ["penn-action", "nw-ucla", "pyskl", "ntu", "kinetics-skeleton"]))
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Pose store to write (HDF5).")
@click.option("--layout", default=None, help="Override the skeleton layout (pyskl only; "
              "default: inferred from the joint count).")
@click.option("--strict", is_flag=True, help="Stop at the first bad file instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Start a new store instead of resuming into an "
              "existing one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def import_cmd(fmt, src, out, layout, strict, overwrite, quiet):
    """Import a public skeleton dataset into a pose store.

    \b
    FORMAT and SRC:
      penn-action        folder of Penn Action .mat files        -> 2D penn13
      nw-ucla            folder of NW-UCLA JSON skeletons        -> 3D kinect20
      pyskl              a pyskl / mmaction2 annotation .pkl     -> 2D or 3D
      ntu                folder of NTU RGB+D .skeleton files     -> 3D ntu25
      kinetics-skeleton  folder of ST-GCN Kinetics-skeleton JSON -> 2D openpose18

    Sequences are named by their source file stems (pyskl: frame_dir). An existing store is
    resumed: sequences already in it are skipped. A bad file is reported and skipped
    (--strict stops instead). pyskl pickles execute code when loaded: only import files from
    a source you trust.

    \b
    Example:
      heatvol import penn-action ../shared/data/penn_action --out penn.h5
    """
    from .importers import ImportFailed, import_dataset
    from .store import StoreError

    kwargs = {"layout": layout} if layout else {}
    try:
        report = import_dataset(fmt, src, out, strict=strict, overwrite=overwrite,
                                progress=not quiet,
                                on_problem=lambda line: click.echo(f"heatvol: skipped {line}",
                                                                   err=True), **kwargs)
    except (ImportFailed, StoreError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    click.echo(f"{out}: imported {report.imported} sequences"
               + (f", {report.skipped_existing} already there" if report.skipped_existing else "")
               + (f", {len(report.problems)} bad files skipped" if report.problems else ""))
    if report.problems:
        sys.exit(3)


@main.command("export", context_settings=CONTEXT)
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["pyskl"]))
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="File to write.")
def export_cmd(fmt, store, out):
    """Export a pose store to another toolkit's format.

    \b
    pyskl: the annotation pickle of pyskl / mmaction2 ({'split', 'annotations'}).

    \b
    Example:
      heatvol export pyskl penn.h5 --out penn.pkl
    """
    from .importers import export_pyskl
    from .store import StoreError

    try:
        n = export_pyskl(store, out)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    click.echo(f"{out}: wrote {n} annotations")


def _open_any(path: Path):
    """A pose store or a volume file, by its format attribute."""
    from .store import PoseStore, StoreError

    try:
        return PoseStore(path)
    except StoreError as exc:
        try:
            from .volumes import VolumeFile, is_volume_file
        except ImportError:
            raise exc from None
        if is_volume_file(path):
            return VolumeFile(path)
        raise


@main.command("info", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(path, as_json):
    """Summarise a pose store or a volume file.

    \b
    Example:
      heatvol info poses.h5
      heatvol info poses.h5 --json | jq .splits
    """
    from .store import StoreError

    try:
        with _open_any(path) as obj:
            summary = obj.summary()
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(_format_summary(summary))


def _format_summary(s: dict) -> str:
    lines = [f"{s['path']}  ({s['kind']}, format v{s['format_version']})"]
    if s["kind"] == "poses":
        f = s["frames_per_sequence"]
        lines += [
            f"  layout      {s['layout']} ({s['joints']} joints, {s['dims']}D)",
            f"  sequences   {s['sequences']:,}",
            f"  frames      {s['frames']:,}  (per sequence: min {f['min']}, median "
            f"{f['median']:g}, mean {f['mean']:g}, max {f['max']})",
            "  persons     " + ", ".join(f"{m}: {c:,}" for m, c in
                                         s["persons_per_sequence"].items()) + "  (M: sequences)",
        ]
    else:
        lines += [f"  {k:<11} {v}" for k, v in s.get("settings", {}).items()]
        lines.append(f"  samples     {s['samples']:,}")
    classes = s.get("classes", {})
    if classes:
        width = max(len(c) for c in classes)
        lines.append(f"  classes     {len(classes)}" +
                     (f"  ({s['unlabelled']:,} unlabelled)" if s.get("unlabelled") else ""))
        lines += [f"    {i:>3}  {name:<{width}}  {count:,}" for i, (name, count) in
                  enumerate(classes.items())]
    if s.get("splits"):
        lines.append("  splits      " + ", ".join(f"{k}: {v:,}" for k, v in s["splits"].items()))
    if s.get("failures"):
        lines.append(f"  failures    {len(s['failures'])}")
        lines += [f"    {name}: {why}" for name, why in s["failures"].items()]
    return "\n".join(lines)


@main.command("check", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
def check_cmd(path):
    """Validate every invariant of a pose store; exit status 1 lists each problem.

    Checks shapes, finite coordinates, scores in [0, 1], image shapes of 2D data, labels
    within the classes, and that every split member exists.

    \b
    Example:
      heatvol check poses.h5 && echo sound
    """
    from .store import PoseStore, StoreError

    try:
        with PoseStore(path) as store:
            problems = store.check()
            n = len(store)
    except StoreError as exc:
        fail(str(exc))
    if problems:
        for p in problems:
            click.echo(f"{path}: {p}", err=True)
        fail(f"{len(problems)} problems in {path}")
    click.echo(f"{path}: OK ({n:,} sequences)")


if __name__ == "__main__":
    main()
