"""Commands on pose stores: ``extract``, ``import``, ``export``, ``info``, ``check``.

Every command follows the exit codes of :mod:`heatvol.cli.common` (docs/cli.md): 0 done,
1 an error (one line), 2 a usage error, 3 finished with some inputs skipped, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (CONTEXT, EXIT_INTERRUPTED, EXIT_SKIPPED, EXIT_USAGE, LazyChoice, fail,
                     interruptible, os_error_line, warn)
from .shards import SHARD_HELP


def _formats():
    from ..importers import FORMATS

    return FORMATS


def _extract_backends():
    from ..extract import BACKENDS

    return BACKENDS


def open_any(path: Path):
    """A pose store or a volume file, by its format attribute."""
    from ..store import PoseStore, StoreError
    from ..volumes import VolumeFile, is_volume_file

    try:
        return PoseStore(path)
    except StoreError:
        if is_volume_file(path):
            return VolumeFile(path)
        raise


@click.command("extract", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="VIDEOS_FRAMES_OR_IMAGES...",
                type=click.Path(path_type=Path))
@click.option("--out", "-o", default="poses.h5", show_default=True,
              type=click.Path(path_type=Path),
              help="Pose store to write (HDF5); an existing one is resumed.")
@click.option("--backend", type=LazyChoice(_extract_backends), default="topdown",
              show_default=True,
              help="topdown: person detector (NanoDet) + pose model per person (MoveNet), "
              "ONNX, offline. rtmpose: YOLOX + RTMPose ONNX exports (downloaded to the cache "
              "on first use). blazepose: MediaPipe 0.10.14's models, CPU. mmpose: mmdet "
              "detector + HRNet (optional extra).")
@click.option("--preset", default=None,
              help="topdown: accurate (NanoDet + MoveNet Thunder, detector every frame; the "
              "default) or fast (NanoDet + MoveNet Lightning, detector every 3rd frame). "
              "rtmpose: rtmpose-m (default), rtmpose-s, rtmpose-x.")
@click.option("--models", "models_dir", type=click.Path(path_type=Path), default=None,
              help="topdown, rtmpose: folder holding the model files [default: $HEATVOL_MODELS, "
              "then ~/.cache/heatvol/models].")
@click.option("--layout", type=click.Choice(["coco17", "blazepose33"]), default="coco17",
              show_default=True, help="Keypoint layout to store (blazepose33: blazepose only).")
@click.option("--max-persons", default=2, show_default=True,
              help="People per frame, and tracks kept per video (highest total score).")
@click.option("--det-score-thr", type=float, default=None,
              help="Person detector score threshold [default: topdown 0.15, others 0.5].")
@click.option("--det-interval", type=int, default=None,
              help="Run the detector at least every N frames; in between, people are "
              "followed from their keypoints [default: topdown accurate 1, fast 3; "
              "blazepose 4].")
@click.option("--workers", default=1, show_default=True,
              help="Videos processed in parallel (processes); results are written by the "
              "main process.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="topdown, rtmpose, mmpose: where to run (cuda needs "
              "onnxruntime-gpu for the ONNX backends; blazepose is CPU only).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="CSV of video,label (label: class name or index). A folder "
              "of class folders (videos/<class>/*.mp4) labels itself.")
@click.option("--det-config", default=None, help="mmpose: mmdet config (path or URL) "
              "[default: mmdet's bundled Faster R-CNN R50-FPN COCO].")
@click.option("--det-checkpoint", default=None, help="mmpose: detector checkpoint (path or URL).")
@click.option("--pose-config", default=None, help="mmpose: pose config [default: mmpose's "
              "bundled HRNet-w32 COCO 256x192].")
@click.option("--pose-checkpoint", default=None, help="mmpose: pose checkpoint (path or URL).")
@click.option("--overwrite", is_flag=True, help="Redo videos already in the store.")
@click.option("--shard", "shard_opt", default=None, metavar="K/N", help=SHARD_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def extract_cmd(inputs, out, backend, preset, models_dir, layout, max_persons, det_score_thr,
                det_interval, workers, device, labels, det_config, det_checkpoint, pose_config,
                pose_checkpoint, overwrite, quiet, shard_opt=None):
    """Extract tracked 2D poses from videos, folders of frames and images into a pose store.

    Each video becomes one sequence named by its file stem, a folder of frames one sequence
    named by the folder (frames in name order), an image a one-frame sequence; T = the
    decoded frame count, keypoints in full-frame pixels with scores, image shape and fps.
    People keep their index across frames; at most --max-persons tracks per video are kept. Videos
    already in the store are skipped (--overwrite redoes them), so a killed run resumes
    where it stopped. An unreadable, corrupt or zero-frame video is recorded as a failure
    (see `heatvol info`) and the run goes on; the exit status is then 3.

    \b
    The default backend's model files (nanodet.onnx, movenet-thunder.onnx,
    movenet-lightning.onnx) are read from --models DIR, else $HEATVOL_MODELS, else
    ~/.cache/heatvol/models; nothing is downloaded when they are there.

    \b
    Examples:
      heatvol extract ../shared/data/videos --models ../shared/models   # -> poses.h5
      HEATVOL_MODELS=../shared/models heatvol extract frames_folder/ image.jpg --out p.h5
      heatvol extract videos/ --out poses.h5 --labels labels.csv --workers 2
      heatvol show poses.h5 S001C001P001R001A001_rgb --out p.png \\
          --video ../shared/data/videos/S001C001P001R001A001_rgb.avi
    """
    from ..extract import BackendUnavailable, ExtractError, extract_videos
    from ..store import StoreError

    if max_persons < 1:
        fail(f"--max-persons must be at least 1, got {max_persons}", EXIT_USAGE)
    if workers < 1:
        fail(f"--workers must be at least 1, got {workers}", EXIT_USAGE)
    if backend == "blazepose" and device == "cuda":
        fail("the blazepose backend runs on the CPU only; use --backend topdown for --device "
             "cuda", EXIT_USAGE)
    if backend == "blazepose" and layout != "coco17" and layout != "blazepose33":
        fail(f"--layout {layout}: blazepose gives coco17 or blazepose33", EXIT_USAGE)
    if backend in ("mmpose", "topdown", "rtmpose") and layout != "coco17":
        fail(f"--backend {backend} gives coco17 keypoints only", EXIT_USAGE)

    def on_failure(name, reason):
        click.echo(f"heatvol: failed {name}: {reason}", err=True)

    from .shards import SHARD_ERRORS, report_shard, shard_option

    shard = shard_option(shard_opt)
    sharded = {}
    if shard is not None:
        from ..shard import extract_shard

        def extract_videos(inputs, out, **kwargs):  # noqa: F811 - this shard's share
            report, info = extract_shard(inputs, out, shard, **kwargs)
            sharded.update(info, extracted=len(report.extracted), skipped=len(report.skipped),
                           total=len(report.extracted) + len(report.skipped) + len(report.failed))
            return report

    try:
        report = extract_videos(list(inputs), out, backend=backend, preset=preset,
                                models_dir=models_dir, layout=layout,
                                max_persons=max_persons, det_score_thr=det_score_thr,
                                det_interval=det_interval, workers=workers, device=device,
                                labels=labels, overwrite=overwrite, progress=not quiet,
                                det_config=det_config, det_checkpoint=det_checkpoint,
                                pose_config=pose_config, pose_checkpoint=pose_checkpoint,
                                on_failure=on_failure)
    except BackendUnavailable as exc:
        fail(exc)
    except (ExtractError, StoreError, ValueError, FileNotFoundError, *SHARD_ERRORS) as exc:
        fail(exc)
    except OSError as exc:  # the output folder cannot be written, ...
        fail(os_error_line(exc, out))
    except KeyboardInterrupt:
        fail("interrupted; videos finished so far are in the store (run again to resume)",
             EXIT_INTERRUPTED)
    click.echo(f"{sharded.get('part') or out}: extracted {len(report.extracted)} videos"
               + (f" ({report.frames:,} frames, {report.fps:.1f} frames/s)"
                  if report.extracted else "")
               + (f", {len(report.skipped)} already there" if report.skipped else "")
               + (f", {len(report.failed)} failed" if report.failed else ""))
    if sharded:
        report_shard(out, sharded, quiet_part=True)
    if report.failed:
        sys.exit(EXIT_SKIPPED)


@click.command("import", context_settings=CONTEXT)
@click.argument("fmt", metavar="FORMAT", type=LazyChoice(_formats))
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Pose store to write (HDF5).")
@click.option("--layout", default=None, help="Override the skeleton layout (pyskl only; "
              "default: inferred from the joint count).")
@click.option("--strict", is_flag=True, help="Stop at the first bad file instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Start a new store instead of resuming into an "
              "existing one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@interruptible("sequences committed so far are in the store (run again to continue)")
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
    (--strict stops instead), and the exit status is then 3. A file in which no joint is
    present in any frame is imported, with a warning, and counted in the summary. pyskl
    pickles execute code when loaded: only import files from a source you trust.

    \b
    Example:
      heatvol import penn-action ../shared/data/penn_action --out penn.h5
    """
    from ..importers import ImportFailed, import_dataset
    from ..store import StoreError

    kwargs = {"layout": layout} if layout else {}
    try:
        report = import_dataset(fmt, src, out, strict=strict, overwrite=overwrite,
                                progress=not quiet,
                                on_problem=lambda line: click.echo(f"heatvol: skipped {line}",
                                                                   err=True),
                                on_notice=warn, **kwargs)
    except (ImportFailed, StoreError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    except OSError as exc:  # the output folder cannot be written, ...
        fail(os_error_line(exc, out))
    if report.note:
        warn(report.note)
    click.echo(f"{out}: imported {report.imported} sequences"
               + (f" ({len(report.all_missing)} with no joint present in any frame)"
                  if report.all_missing else "")
               + (f", {report.skipped_existing} already there" if report.skipped_existing else "")
               + (f", {len(report.problems)} bad files skipped" if report.problems else ""))
    if report.problems:
        sys.exit(EXIT_SKIPPED)


@click.command("export", context_settings=CONTEXT)
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["pyskl"]))
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="File to write.")
@interruptible("nothing was written")
def export_cmd(fmt, store, out):
    """Export a pose store to another toolkit's format.

    \b
    pyskl: the annotation pickle of pyskl / mmaction2 ({'split', 'annotations'}).

    \b
    Example:
      heatvol export pyskl penn.h5 --out penn.pkl
    """
    from ..importers import export_pyskl
    from ..store import StoreError

    try:
        n = export_pyskl(store, out)
    except (StoreError, ValueError) as exc:
        fail(exc)
    except OSError as exc:
        fail(os_error_line(exc, out))
    click.echo(f"{out}: wrote {n} annotations")


@click.command("info", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@interruptible("nothing was changed")
def info_cmd(path, as_json):
    """Summarise a pose store or a volume file.

    \b
    Example:
      heatvol info poses.h5
      heatvol info poses.h5 --json | jq .splits
    """
    from ..store import StoreError

    try:
        with open_any(path) as obj:
            summary = obj.summary()
    except StoreError as exc:
        fail(exc)
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
        settings = dict(s.get("settings", {}))
        if settings.get("split") is None:
            settings["split"] = "(all sequences)"
        lines += [f"  {k:<11} {v}" for k, v in settings.items() if v is not None]
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


@click.command("check", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@interruptible("nothing was changed")
def check_cmd(path):
    """Validate every invariant of a pose store; exit status 1 lists each problem.

    Checks that every sequence can be read (a damaged one is named and the check goes on),
    shapes, coordinates finite and within +-1e6, scores in [0, 1], image shapes of 2D data,
    labels within the classes, and that every split member exists.

    \b
    Example:
      heatvol check poses.h5 && echo sound
    """
    from ..store import PoseStore, StoreError

    try:
        with PoseStore(path) as store:
            problems = store.check()
            n = len(store)
    except StoreError as exc:
        fail(exc)
    if problems:
        for p in problems:
            click.echo(f"{path}: {p}", err=True)
        fail(f"{len(problems)} problems in {path}")
    click.echo(f"{path}: OK ({n:,} sequences)")
