"""The ``heatvol`` command line: one sub-command per pipeline stage.

Heavy modules (Numba kernels, torch) are imported inside the commands that need them, so
``heatvol --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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


class _MultiValueOption(click.Option):
    """An option followed by several values (``--size 64 48``, ``--weights 2 2 1 1``): it takes
    the tokens after its first value while ``takes(token)`` holds, up to ``max_values`` in all,
    and hands them on joined by spaces; the rest stay arguments. Subclasses set ``takes``."""

    max_values: int | None = None
    takes: Callable[[str], bool]

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        opt = parser._long_opt.get(self.opts[0])
        if opt is None:
            return
        original = opt.process

        def process(value, state):
            values = [value]
            while (state.rargs and self.takes(state.rargs[0])
                   and (self.max_values is None or len(values) < self.max_values)):
                values.append(state.rargs.pop(0))
            original(" ".join(values), state)

        opt.process = process


class _SizeOption(_MultiValueOption):
    """``--size 56`` or ``--size 64 48`` (H W)."""

    max_values = 2
    takes = staticmethod(str.isdigit)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("type", int)
        super().__init__(*args, **kwargs)

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
                from .transforms import test_pipeline
                if obj.dims != 2:
                    fail(f"{path}: volumes need 2D keypoints; this store is {obj.dims}D")
                pipe = test_pipeline(clip_len, 1, size)
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
@click.argument("inputs", nargs=-1, required=True, metavar="VIDEOS_FRAMES_OR_IMAGES...",
                type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Pose store to write (HDF5); an existing one is resumed.")
@click.option("--backend", type=click.Choice(["topdown", "rtmpose", "blazepose", "mmpose"]),
              default="topdown", show_default=True,
              help="topdown: person detector (NanoDet) + pose model per person (MoveNet), "
              "ONNX, offline. rtmpose: YOLOX + RTMPose ONNX exports (downloaded to the cache "
              "on first use). blazepose: MediaPipe 0.10.14's models, CPU. mmpose: mmdet "
              "detector + HRNet (optional extra).")
@click.option("--preset", default=None,
              help="topdown: accurate (NanoDet + MoveNet Thunder, detector every frame; the "
              "default) or fast (NanoDet + MoveNet Lightning, detector every 3rd frame). "
              "rtmpose: rtmpose-m (default), rtmpose-s, rtmpose-x.")
@click.option("--models", "models_dir", type=click.Path(path_type=Path), default=None,
              help="topdown: folder holding the model files [default: $HEATVOL_MODELS, then "
              "~/.cache/heatvol/models].")
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
              show_default=True, help="topdown, mmpose: where to run (topdown's cuda needs "
              "onnxruntime-gpu; blazepose is CPU only).")
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
def extract_cmd(inputs, out, backend, preset, models_dir, layout, max_persons, det_score_thr,
                det_interval, workers, device, labels, det_config, det_checkpoint, pose_config,
                pose_checkpoint, overwrite, quiet):
    """Extract tracked 2D poses from videos, folders of frames and images into a pose store.

    Each video becomes one sequence named by its file stem, a folder of frames one sequence
    named by the folder (frames in name order), an image a one-frame sequence; T = the
    decoded frame count, keypoints in full-frame pixels with scores, image shape and fps.
    People keep
    their index across frames; at most --max-persons tracks per video are kept. Videos
    already in the store are skipped (--overwrite redoes them), so a killed run resumes
    where it stopped. An unreadable, corrupt or zero-frame video is recorded as a failure
    (see `heatvol info`) and the run goes on; the exit status is then the number of failed
    videos (at most 100).

    \b
    The default backend's model files (nanodet.onnx, movenet-thunder.onnx,
    movenet-lightning.onnx) are read from --models DIR, else $HEATVOL_MODELS, else
    ~/.cache/heatvol/models; nothing is downloaded when they are there.

    \b
    Examples:
      heatvol extract ../shared/data/videos --out poses.h5 --models ../shared/models
      HEATVOL_MODELS=../shared/models heatvol extract frames_folder/ image.jpg --out p.h5
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
    if backend in ("mmpose", "topdown", "rtmpose") and layout != "coco17":
        fail(f"--backend {backend} gives coco17 keypoints only")

    def on_failure(name, reason):
        click.echo(f"heatvol: failed {name}: {reason}", err=True)

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


# --------------------------------------------------------------------------- training


def _parse_sets(sets) -> dict:
    import yaml

    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


@main.command("train", context_settings=CONTEXT)
@click.argument("poses", required=False, type=click.Path(path_type=Path))
@click.option("--preset", default=None, help="Preset name (`heatvol presets`) or a .yaml file "
              "[default: default]; the options below override its settings.")
@click.option("--model", type=click.Choice(["slowonly", "c3d", "x3d", "stgcn", "msg3d",
                                           "dualhead"]), default=None,
              help="PoseConv3D backbone (slowonly, c3d, x3d: heatmap volumes) or graph model "
              "(stgcn, msg3d, dualhead: joint coordinates).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Checkpoints and logs [default: runs/PRESET].")
@click.option("--epochs", type=int, default=None, help="Passes over the training split.")
@click.option("--batch-size", type=int, default=None, help="Samples per step (per process).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (SGD).")
@click.option("--clip-len", type=int, default=None, help="Frames per sampled clip.")
@click.option("--size", type=int, default=None, help="Heatmap size (square) for training.")
@click.option("--limb/--joint", "limb", default=None, help="Limb or joint heatmaps (3D CNNs).")
@click.option("--modality", type=click.Choice(["joint", "bone", "joint-motion", "bone-motion"]),
              default=None, help="Graph models: the input stream (fuse streams with `heatvol "
              "ensemble`).")
@click.option("--render", type=click.Choice(["cpu", "gpu", "auto"]), default=None,
              help="cpu: Numba kernels in the DataLoader workers; gpu: keypoints only in the "
              "workers, each batch rendered on the GPU inside the step; auto: gpu on a usable "
              "CUDA GPU, else cpu.")
@click.option("--max-steps", type=int, default=None, help="Stop after N optimiser steps in all "
              "(a resumed run counts the steps already taken); a checkpoint is written.")
@click.option("--seed", type=int, default=None, help="Seed of the data order, augmentation "
              "and initialisation.")
@click.option("--resume", is_flag=False, flag_value="auto", default=None, metavar="[CKPT]",
              help="Continue a run exactly: from CKPT, or (bare --resume) WORK_DIR/last.pt. "
              "Its saved settings are used; options given here override them.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto [default: auto].")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any other setting (e.g. --set weight_decay=0.0005); repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_cmd(poses, preset, model, work_dir, epochs, batch_size, lr, clip_len, size, limb,
              modality, render, max_steps, seed, resume, device, workers, sets, quiet):
    """Train a PoseConv3D model on heatmap volumes rendered on the fly from a pose store, or
    a graph model (ST-GCN, MS-G3D, DualHead-Net) on its joint coordinates.

    Settings come from a preset (`heatvol presets`), then the options given here. With no
    arguments, in a folder holding poses.h5, the default preset trains on it. Checkpoints
    (every epoch, best.pt, last.pt also when stopped by --max-steps or Ctrl-C), log.csv,
    train.log and TensorBoard logs go to --work-dir. Several processes or GPUs: run under
    torchrun (see docs/training.md).

    \b
    Examples:
      heatvol train                                          # poses.h5, default preset
      heatvol train penn.h5 --preset penn-x3d-cpu --work-dir runs/penn
      heatvol train penn.h5 --model x3d --size 32 --clip-len 32 --epochs 30 --limb
      heatvol train ucla.h5 --preset ucla-dualhead-cpu --modality bone --work-dir runs/ucla-b
      heatvol train --work-dir runs/penn --resume            # continue where it stopped
      torchrun --standalone --nproc-per-node 2 -m heatvol.cli train penn.h5 --preset tiny
    """
    from .engine import ConfigError, TrainConfig, load_checkpoint, train
    from .presets import DEFAULT, PresetError, load_preset

    given = {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "clip_len": clip_len, "size": size, "render": render, "max_steps": max_steps,
             "seed": seed, "device": device, "workers": workers, "modality": modality}
    overrides = {k: v for k, v in given.items() if v is not None}
    if limb is not None:
        overrides["mode"] = "limb" if limb else "joint"
    if poses is not None:
        overrides["poses"] = str(poses)
    overrides.update(_parse_sets(sets))
    if quiet:
        overrides["progress"] = False
    try:
        if resume is not None:
            if resume == "auto":
                if work_dir is None:
                    name = preset or DEFAULT
                    work_dir = Path("runs") / Path(name).stem
                ckpt_path = work_dir / "last.pt"
            else:
                ckpt_path = Path(resume)
                work_dir = work_dir or ckpt_path.parent
            settings = dict(load_checkpoint(ckpt_path)["config"])
            settings.pop("max_steps", None)  # a new stopping point, or none, unless given
            settings["resume"] = str(ckpt_path)
        else:
            settings = load_preset(preset or DEFAULT)
            settings["resume"] = None
        settings.update(overrides)
        if work_dir is not None:
            settings["work_dir"] = str(work_dir)
        elif not settings.get("work_dir"):
            settings["work_dir"] = str(Path("runs") / str(settings.get("preset") or DEFAULT))
        poses_path = Path(settings.get("poses") or "poses.h5")
        if not poses_path.exists() and not poses_path.with_name(poses_path.name + ".parts").exists():
            fail(f"{poses_path}: no such pose store (give its path, or run in a folder holding "
                 f"poses.h5)")
        cfg = TrainConfig.from_dict(settings)
        summary = train(cfg)
    except (ConfigError, PresetError) as exc:
        fail(" ".join(str(exc).split()))
    except RuntimeError as exc:  # e.g. the CUDA renderer: one line
        fail(" ".join(str(exc).split()))
    best = summary["best"]
    click.echo(f"{summary['work_dir']}: {summary['steps']} of {summary['total_steps']} steps "
               f"({summary['stopped']})"
               + (f", best val top-1 {best['top1']:.2%} at epoch {best['epoch']}" if best else "")
               + f"; checkpoint {summary['last']}")
    if summary["stopped"] == "interrupted":
        sys.exit(130)


@main.command("test", context_settings=CONTEXT)
@click.argument("poses", required=False, default="poses.h5", type=click.Path(path_type=Path))
@click.option("--checkpoint", "-c", required=True, type=click.Path(path_type=Path),
              help="A checkpoint of `heatvol train` (best.pt, last.pt, epoch_NNN.pt).")
@click.option("--split", default=None, help="Split to evaluate [default: the run's validation "
              "split, else test].")
@click.option("--num-clips", default=10, show_default=True, help="Clips per sequence "
              "(deterministic uniform sampling); softmax averaged.")
@click.option("--flip", is_flag=True, help="Also average over the horizontally flipped volumes.")
@click.option("--batch-size", default=4, show_default=True, help="Sequences per forward pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--render", type=click.Choice(["cpu", "gpu", "auto"]), default="auto",
              show_default=True, help="Where to render the test volumes.")
@click.option("--workers", default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--confusion", type=click.Path(path_type=Path), default=None,
              help="Confusion-matrix PNG [default: beside the checkpoint].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (with the "
              "per-sample scores that `heatvol ensemble` fuses).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the JSON results to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def test_cmd(poses, checkpoint, split, num_clips, flip, batch_size, device, render, workers,
             confusion, as_json, out, quiet):
    """Evaluate a checkpoint: top-1, top-5, mean-class and per-class accuracy.

    PoseC3D's protocol: --num-clips clips per sequence, subject-centred crop, test size;
    with --flip also the mirrored volumes (or skeletons); softmax averaged over clips and
    flips. Writes a confusion-matrix PNG; --out / --json keep the per-sample scores for
    `heatvol ensemble`.

    \b
    Examples:
      heatvol test penn.h5 --checkpoint runs/penn/best.pt --split test --num-clips 10 --flip
      heatvol test penn.h5 -c runs/penn/last.pt --num-clips 1 --json
      heatvol test ucla.h5 -c runs/ucla-b/last.pt --out results/ucla-b.json
    """
    from .engine import ConfigError
    from .evaluate import evaluate_checkpoint

    if not poses.exists() and not poses.with_name(poses.name + ".parts").exists():
        fail(f"{poses}: no such pose store")
    try:
        res = evaluate_checkpoint(poses, checkpoint, split=split, num_clips=num_clips, flip=flip,
                                  batch_size=batch_size, device=device, render=render,
                                  workers=workers, confusion_png=confusion,
                                  progress=not quiet and not as_json)
    except (ConfigError, ValueError, RuntimeError) as exc:
        fail(" ".join(str(exc).split()))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(res))
        tmp.replace(out)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"{res['checkpoint']} on {res['poses']} ({res['split'] or 'all'}, "
               f"{res['num_samples']} sequences, {res['num_clips']} clip(s)"
               f"{' + flip' if res['flip'] else ''}):")
    click.echo(f"  top-1 {res['top1']:.2%}   top-5 {res['top5']:.2%}   mean-class "
               f"{res['mean_class']:.2%}")
    width = max((len(c) for c in res["per_class"]), default=5)
    for name, acc in res["per_class"].items():
        click.echo(f"  {name:<{width}}  " + ("-" if acc is None else f"{acc:.2%}"))
    click.echo(f"  confusion matrix: {res['confusion_png']}")


def _is_weights_token(token: str) -> bool:
    """'2', '0.5', '1e-1' or '2,2,1,1': numbers only (so a file named 'x.json' never is)."""
    pieces = [p for p in token.replace(",", " ").split() if p]
    if not pieces:
        return False
    for p in pieces:
        if not all(ch in "0123456789.+-eE" for ch in p):
            return False
        try:
            float(p)
        except ValueError:
            return False
    return True


class _WeightsOption(_MultiValueOption):
    """``--weights 2 2 1 1`` (or ``2,2,1,1``): takes the numbers that follow it, so result
    files before or after the option stay arguments."""

    takes = staticmethod(_is_weights_token)

    def type_cast_value(self, ctx, value):
        if not isinstance(value, str):
            return None
        try:
            return tuple(float(v) for v in value.replace(",", " ").split())
        except ValueError:
            raise click.BadParameter(f"{value!r}: not numbers (give one weight per file, "
                                     f"e.g. --weights 2 2 1 1)", param_hint="--weights") from None


@main.command("ensemble", context_settings=CONTEXT)
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...",
                type=click.Path(path_type=Path))
@click.option("--weights", cls=_WeightsOption, default=None, metavar="W...",
              help="One weight per result file, in their order: --weights 2 2 1 1 (or 2,2,1,1) "
              "[default: all 1].")
@click.option("--json", "as_json", is_flag=True, help="Print the fused result as JSON (all but "
              "the per-sample scores).")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the full fused result (with scores) as JSON; it can be fused again.")
@click.option("--confusion", type=click.Path(path_type=Path), default=None,
              help="Write the fused confusion matrix as a PNG.")
def ensemble_cmd(results, weights, as_json, out, confusion):
    """Fuse the saved test scores of several streams: top-1, top-5, mean-class accuracy.

    Each RESULT.json comes from `heatvol test ... --json > r.json` (or --out r.json). All
    must cover the same classes and sequences (aligned by name). Fused scores: the weighted
    sum of the streams' class probabilities (pyskl's 2:2:1:1 joint, bone, joint-motion,
    bone-motion fusion).

    \b
    Examples:
      heatvol ensemble j.json b.json jm.json bm.json --weights 2 2 1 1
      heatvol ensemble joint.json limb.json --out fused.json --confusion fused.png
      heatvol ensemble j.json b.json --json | jq .top1
    """
    from .engine import ConfigError
    from .ensemble import fuse_results, load_result
    from .evaluate import save_confusion_png

    try:
        loaded = [load_result(p) for p in results]
        res = fuse_results(loaded, None if weights is None else list(weights),
                           sources=[str(p) for p in results])
    except ConfigError as exc:
        fail(" ".join(str(exc).split()))
    try:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res) + "\n", encoding="utf-8")
        if confusion is not None:
            save_confusion_png(res["confusion"], res["classes"], confusion,
                               title=f"ensemble of {len(results)}: top-1 {res['top1']:.2%}")
    except OSError as exc:
        fail(f"{exc.filename or out}: cannot write ({exc.strerror or exc})")
    if as_json:
        click.echo(json.dumps({k: v for k, v in res.items() if k != "scores"}, indent=2))
        return
    rows = [("stream", "model", "modality", "weight", "top-1")]
    for s in res["streams"]:
        rows.append((s["source"], s["model"] or "-", s["modality"] or s["mode"] or "-",
                     f"{s['weight']:g}", f"{s['top1']:.2%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  " + "  ".join(f"{v:<{w}}" if i < 3 else f"{v:>{w}}"
                                    for i, (v, w) in enumerate(zip(r, widths))))
    click.echo(f"fused ({len(res['streams'])} streams, {res['num_samples']:,} sequences): "
               f"top-1 {res['top1']:.2%}   top-5 {res['top5']:.2%}   mean-class "
               f"{res['mean_class']:.2%}")
    if out is not None:
        click.echo(f"  fused scores: {out}")
    if confusion is not None:
        click.echo(f"  confusion matrix: {confusion}")


@main.command("presets", context_settings=CONTEXT)
@click.argument("name", required=False)
def presets_cmd(name):
    """List the training presets, or show one's settings.

    Presets are YAML files bundled in heatvol/presets/; directories in HEATVOL_PRESET_PATH
    are searched first (they may add presets or replace bundled ones).

    \b
    Examples:
      heatvol presets
      heatvol presets penn-x3d-cpu
    """
    import yaml

    from .presets import DEFAULT, PresetError, list_presets, load_preset, preset_path

    if name:
        try:
            settings = load_preset(name)
            path = preset_path(name)
        except PresetError as exc:
            fail(" ".join(str(exc).split()))
        click.echo(f"# {path}")
        click.echo(yaml.safe_dump(settings, sort_keys=False).rstrip())
        return
    presets = list_presets()
    width = max((len(n) for n in presets), default=4)
    for preset, description in presets.items():
        mark = "*" if preset == DEFAULT else " "
        click.echo(f"{mark} {preset:<{width}}  {description}")
    click.echo("(* = used by a plain `heatvol train`; `heatvol presets NAME` shows one)")


if __name__ == "__main__":
    main()
