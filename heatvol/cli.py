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


# --------------------------------------------------------------------------- rendering


def _size(values) -> tuple[int, int]:
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise click.BadParameter("give one number (square) or two (H W)", param_hint="--size")


class _SizeOption(click.Option):
    """``--size 56`` or ``--size 64 48`` (H W)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("type", int)
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        opt = parser._long_opt.get("--size")
        if opt is None:
            return
        original = opt.process

        def process(value, state):
            values = [value]
            while state.rargs and state.rargs[0].isdigit() and len(values) < 2:
                values.append(state.rargs.pop(0))
            original(" ".join(values), state)

        opt.process = process

    def type_cast_value(self, ctx, value):
        if value is None:
            return None
        parts = str(value).split()
        try:
            return _size([int(v) for v in parts])
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a size", param_hint="--size") from None


@main.command("render", context_settings=CONTEXT)
@click.argument("poses", required=False, default="poses.h5", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Volume file to write [default: volumes.h5 beside POSES].")
@click.option("--limb", is_flag=True, help="Render limb heatmaps (one channel per limb) instead "
              "of joint heatmaps.")
@click.option("--size", cls=_SizeOption, default="56", show_default=True,
              help="Heatmap size: one number (square) or two (H W).")
@click.option("--clip-len", default=48, show_default=True, help="Frames per clip (uniform sampling).")
@click.option("--num-clips", default=1, show_default=True, help="Clips per sample (test-mode "
              "uniform sampling, deterministic).")
@click.option("--sigma", default=0.6, show_default=True, help="Gaussian std in heatmap pixels.")
@click.option("--split", default=None, help="Render only this split of the store.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "uint8"]), default="float32",
              show_default=True, help="Volume dtype (uint8 = value x 255, rounded).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True, help="Where to render; cuda without a usable GPU is an error.")
@click.option("--workers", default=1, show_default=True, help="Rendering processes (each with "
              "cores/workers Numba threads).")
@click.option("--overwrite", is_flag=True, help="Start the volume file afresh instead of resuming.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def render_cmd(poses, out, limb, size, clip_len, num_clips, sigma, split, dtype, device, workers,
               overwrite, quiet):
    """Render K x T x H x W heatmap volumes from a pose store (PoseC3D's pseudo-heatmaps).

    Each sequence goes through PoseC3D's test pipeline (uniform sampling of --num-clips clips
    of --clip-len frames, one subject-centred square box over the clip, resize to --size)
    and is rendered as joint (K channels) or limb (L channels) Gaussians. The output HDF5 keeps
    one compressed chunk per sample, with names, labels and these settings. An interrupted run
    resumes where it stopped; --overwrite starts again.

    \b
    Examples:
      heatvol render --limb --size 56                       # poses.h5 -> volumes.h5
      heatvol render penn.h5 --split test --size 64 --num-clips 10 --out penn_test.h5
    """
    from .store import StoreError
    from .volumes import render_store

    if out is None:
        out = poses.with_name("volumes.h5")
    if not poses.exists() and not poses.with_name(poses.name + ".parts").exists():
        fail(f"{poses}: no such pose store (give its path, or run in a folder holding poses.h5)")
    if out.resolve() == poses.resolve():
        fail(f"{out}: the output would overwrite the pose store")
    try:
        res = render_store(poses, out, mode="limb" if limb else "joint", size=size,
                           clip_len=clip_len, num_clips=num_clips, sigma=sigma, split=split,
                           dtype=dtype, device=device, workers=workers, overwrite=overwrite,
                           progress=not quiet)
    except (StoreError, KeyError, ValueError, RuntimeError) as exc:
        fail(str(exc).strip("'\""))
    click.echo(f"{out}: rendered {res['rendered']} samples"
               + (f" ({res['skipped']} already there)" if res["skipped"] else "")
               + f", {res['total']} in all")


@main.command("show", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.argument("name")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Picture to write: .png (a strip of frames) or .gif (an animation).")
@click.option("--volume", is_flag=True, help="For a pose store: render the volume on the fly "
              "and show it instead of the skeleton.")
@click.option("--limb", is_flag=True, help="With --volume: limb heatmaps.")
@click.option("--size", default=64, show_default=True, help="With --volume: heatmap size.")
@click.option("--clip-len", default=48, show_default=True, help="With --volume: frames sampled.")
@click.option("--frames", "num_frames", default=None, type=int,
              help="Frames to show [default: 16 for .png, all for .gif].")
@click.option("--width", default=320, show_default=True, help="Width of a skeleton frame (px).")
@click.option("--video", type=click.Path(exists=True, path_type=Path), default=None,
              help="Draw the skeletons over this video's frames.")
def show_cmd(path, name, out, volume, limb, size, clip_len, num_frames, width, video):
    """Draw one sequence: its skeletons per frame, or its heatmap volume.

    PATH is a pose store (skeletons; limbs coloured by body side: left orange, right blue,
    trunk green; each person's index at its head) or a volume file (channels in distinct
    colours, combined by max). NAME is a sequence name.

    \b
    Examples:
      heatvol show penn.h5 0001 --out 0001.png
      heatvol show penn.h5 0001 --volume --limb --out 0001_limbs.gif
      heatvol show volumes.h5 0001 --out 0001_volume.png
    """
    import numpy as np

    from . import visualize as vis
    from .store import StoreError

    try:
        obj = _open_any(path)
    except StoreError as exc:
        fail(str(exc))
    gif = out.suffix.lower() == ".gif"
    if out.suffix.lower() not in (".png", ".gif"):
        fail(f"{out}: output must end in .png or .gif")
    with obj:
        if name not in obj:
            fail(f"{path}: no sequence named {name!r}")
        if hasattr(obj, "layout"):  # pose store
            rec = obj[name]
            if volume:
                from .volumes import _sample_volume
                from .transforms import Compose, Resize, SubjectCrop, UniformSample
                if obj.dims != 2:
                    fail(f"{path}: volumes need 2D keypoints; this store is {obj.dims}D")
                pipe = Compose([UniformSample(clip_len, train=False),
                                SubjectCrop(padding=0.25, threshold=10, hw_ratio=1.0),
                                Resize((size, size))])
                vol = _sample_volume(rec, pipeline=pipe, num_clips=1, clip_len=clip_len,
                                     render_kwargs=dict(size=size, mode="limb" if limb else "joint",
                                                        layout=obj.layout))[0]
                frames = vis.volume_frames(vol)
                title = f"{name}  {'limb' if limb else 'joint'} volume {list(vol.shape)}"
            else:
                if obj.dims != 2:
                    fail(f"{path}: showing skeletons needs 2D keypoints; this store is {obj.dims}D")
                background = _read_video(video) if video else None
                if background is not None and len(background) < rec.num_frames:
                    fail(f"{video}: has {len(background)} frames, the sequence {rec.num_frames}")
                frames = vis.draw_skeletons(rec.keypoints, rec.scores, obj.layout, rec.img_shape,
                                            width=width, background=background)
                label = obj.classes[rec.label] if 0 <= rec.label < len(obj.classes) else "(no label)"
                title = f"{name}  {label}  M={rec.num_persons} T={rec.num_frames}"
        else:
            vol = obj[name][0]
            frames = vis.volume_frames(vol)
            title = f"{name}  {obj.settings.get('mode')} volume {list(vol.shape)}"
    count = num_frames or (len(frames) if gif else 16)
    frames = [frames[i] for i in vis.pick_frames(len(frames), count)]
    vis.save_frames(frames, out, title=None if gif else title)
    click.echo(f"{out}: {len(frames)} frames")


def _read_video(path: Path):
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        fail(f"{path}: cannot read any frame")
    return np.stack(frames)


# --------------------------------------------------------------------------- extraction


@main.command("extract", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="VIDEOS_OR_FOLDERS...",
                type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Pose store to write (HDF5); an existing one is resumed.")
@click.option("--backend", type=click.Choice(["blazepose", "mmpose"]), default="blazepose",
              show_default=True, help="blazepose: MediaPipe 0.10.14's models, CPU, offline. "
              "mmpose: mmdet detector + HRNet (optional extra).")
@click.option("--layout", type=click.Choice(["coco17", "blazepose33"]), default="coco17",
              show_default=True, help="Keypoint layout to store (blazepose33: blazepose only).")
@click.option("--max-persons", default=2, show_default=True,
              help="People per frame, and tracks kept per video (highest total score).")
@click.option("--det-score-thr", type=float, default=None,
              help="Person detector score threshold [default: 0.5].")
@click.option("--det-interval", type=int, default=None,
              help="blazepose: run the detector at least every N frames; in between, people "
              "are followed from their landmarks [default: 4].")
@click.option("--workers", default=1, show_default=True,
              help="Videos processed in parallel (processes); results are written by the "
              "main process.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="mmpose: where to run (blazepose is CPU only).")
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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def extract_cmd(inputs, out, backend, layout, max_persons, det_score_thr, det_interval, workers,
                device, labels, det_config, det_checkpoint, pose_config, pose_checkpoint,
                overwrite, quiet):
    """Extract tracked 2D poses from videos into a pose store.

    Each video becomes one sequence named by its file stem, with T = its decoded frame
    count, keypoints in full-frame pixels with scores, its image shape and fps. People keep
    their index across frames; at most --max-persons tracks per video are kept. Videos
    already in the store are skipped (--overwrite redoes them), so a killed run resumes
    where it stopped. An unreadable, corrupt or zero-frame video is recorded as a failure
    (see `heatvol info`) and the run goes on; the exit status is then the number of failed
    videos (at most 100).

    \b
    Install the default backend (BlazePose, CPU, no downloads at run time):
      pip install --no-deps -r requirements-extract.txt

    \b
    Examples:
      heatvol extract ../shared/data/videos --out poses.h5
      heatvol extract videos/ --out poses.h5 --labels labels.csv --workers 2
      heatvol show poses.h5 S001C001P001R001A001_rgb --out p.png \\
          --video ../shared/data/videos/S001C001P001R001A001_rgb.avi
    """
    from .extract import BackendUnavailable, ExtractError, extract_videos
    from .store import StoreError

    if max_persons < 1:
        fail(f"--max-persons must be at least 1, got {max_persons}")
    if workers < 1:
        fail(f"--workers must be at least 1, got {workers}")
    if backend == "blazepose" and device == "cuda":
        fail("the blazepose backend runs on the CPU only; use --backend mmpose for --device cuda")
    if backend == "blazepose" and layout != "coco17" and layout != "blazepose33":
        fail(f"--layout {layout}: blazepose gives coco17 or blazepose33")
    if backend == "mmpose" and layout != "coco17":
        fail("--backend mmpose gives coco17 keypoints only")

    def on_failure(name, reason):
        click.echo(f"heatvol: failed {name}: {reason}", err=True)

    try:
        report = extract_videos(list(inputs), out, backend=backend, layout=layout,
                                max_persons=max_persons, det_score_thr=det_score_thr,
                                det_interval=det_interval, workers=workers, device=device,
                                labels=labels, overwrite=overwrite, progress=not quiet,
                                det_config=det_config, det_checkpoint=det_checkpoint,
                                pose_config=pose_config, pose_checkpoint=pose_checkpoint,
                                on_failure=on_failure)
    except BackendUnavailable as exc:
        fail(" ".join(str(exc).split()))
    except (ExtractError, StoreError, ValueError, FileNotFoundError) as exc:
        fail(" ".join(str(exc).split()))
    except KeyboardInterrupt:
        fail("interrupted; videos finished so far are in the store (run again to resume)", 130)
    click.echo(f"{out}: extracted {len(report.extracted)} videos"
               + (f" ({report.frames:,} frames, {report.fps:.1f} frames/s)"
                  if report.extracted else "")
               + (f", {len(report.skipped)} already there" if report.skipped else "")
               + (f", {len(report.failed)} failed" if report.failed else ""))
    if report.failed:
        sys.exit(min(len(report.failed), 100))


if __name__ == "__main__":
    main()
