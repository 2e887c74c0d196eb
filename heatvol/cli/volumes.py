"""Commands on volumes: ``render`` (a pose store -> a volume file) and ``show`` (pictures).

Exit codes as every command (docs/cli.md): 0 done, 1 an error (one line), 2 a usage error,
130 interrupted.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from .common import (CONTEXT, EXIT_USAGE, SizeOption, deprecated, fail, interruptible, one_line,
                     os_error_line, require_store, warn)
from .poses import open_any
from .shards import SHARD_ERRORS, SHARD_HELP, report_shard, shard_option


@click.command("render", context_settings=CONTEXT)
@click.argument("poses", required=False, default="poses.h5", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Volume file to write [default: volumes.h5 beside POSES].")
@click.option("--limb", is_flag=True, help="Render limb heatmaps (one channel per limb) instead "
              "of joint heatmaps.")
@click.option("--size", cls=SizeOption, default="56", show_default=True,
              help="Heatmap size: one number (square) or two (H W).")
@click.option("--clip-len", default=48, show_default=True, help="Frames per clip (uniform sampling).")
@click.option("--num-clips", default=1, show_default=True, help="Clips per sample (test-mode "
              "uniform sampling, deterministic).")
@click.option("--sigma", default=0.6, show_default=True, help="Gaussian std in heatmap pixels.")
@click.option("--split", default=None, help="Render only this split of the store.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "uint8"]), default="float32",
              show_default=True, help="Volume dtype (uint8 = value x 255, rounded).")
@click.option("--render-device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where to render: cpu (Numba kernels), cuda (a GPU; an error without one) or "
              "auto (cuda when a GPU is usable) [default: auto].")
@click.option("--device", "old_device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              hidden=True, help="Deprecated spelling of --render-device.")
@click.option("--workers", default=1, show_default=True, help="Rendering processes (each with "
              "cores/workers Numba threads).")
@click.option("--overwrite", is_flag=True, help="Start the volume file afresh instead of resuming.")
@click.option("--shard", "shard_opt", default=None, metavar="K/N", help=SHARD_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@interruptible("samples rendered so far are kept (run the same command again to resume)")
def render_cmd(poses, out, limb, size, clip_len, num_clips, sigma, split, dtype, render_device,
               old_device, workers, overwrite, shard_opt, quiet):
    """Render K x T x H x W heatmap volumes from a pose store (PoseC3D's pseudo-heatmaps).

    Each sequence goes through PoseC3D's test pipeline (uniform sampling of --num-clips clips
    of --clip-len frames, one subject-centred square box over the clip, resize to --size)
    and is rendered as joint (K channels) or limb (L channels) Gaussians. The output HDF5 keeps
    one compressed chunk per sample, with names, labels and these settings. An interrupted run
    (Ctrl-C, a full disk, a kill) keeps what was rendered and resumes where it stopped;
    --overwrite starts again. One render at a time writes a volume file.

    \b
    Examples:
      heatvol render --limb --size 56                       # poses.h5 -> volumes.h5
      heatvol render penn.h5 --split test --size 64 --num-clips 10 --out penn_test.h5
    """
    from ..render import render_store
    from ..shard import render_shard
    from ..store import StoreError

    if old_device is not None:
        deprecated("heatvol render --device", "--render-device")
        render_device = render_device or old_device
    if out is None:
        out = poses.with_name("volumes.h5")
    require_store(poses)
    if out.resolve() == poses.resolve():
        fail(f"{out}: the output would overwrite the pose store", EXIT_USAGE)
    shard = shard_option(shard_opt)
    run = render_store if shard is None else functools.partial(render_shard, shard=shard)
    try:
        res = run(poses, out, mode="limb" if limb else "joint", size=size,
                           clip_len=clip_len, num_clips=num_clips, sigma=sigma, split=split,
                           dtype=dtype, render_device=render_device or "auto", workers=workers, overwrite=overwrite,
                           progress=not quiet)
    except (StoreError, KeyError, ValueError, RuntimeError, *SHARD_ERRORS) as exc:
        fail(exc)
    except OSError as exc:  # the output folder cannot be written, ...
        fail(os_error_line(exc, out))
    if res.get("note"):
        warn(res["note"])
    if shard is not None:
        report_shard(out, res)
        return
    click.echo(f"{out}: rendered {res['rendered']} samples"
               + (f" ({res['skipped']} already there)" if res["skipped"] else "")
               + f", {res['total']} in all")


@click.command("show", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.argument("name")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Picture to write: .png (a strip of frames) or .gif (an animation).")
@click.option("--volume", is_flag=True, help="For a pose store: render the volume on the fly "
              "and show it instead of the skeleton.")
@click.option("--limb", is_flag=True, help="With --volume: limb heatmaps.")
@click.option("--size", cls=SizeOption, default="64", show_default=True,
              help="With --volume: heatmap size, one number (square) or two (H W).")
@click.option("--clip-len", default=48, show_default=True, help="With --volume: frames sampled.")
@click.option("--frames", "num_frames", default=None, type=int,
              help="Frames to show [default: 16 for .png, all for .gif].")
@click.option("--width", default=320, show_default=True, help="Width of a skeleton frame (px).")
@click.option("--video", type=click.Path(exists=True, path_type=Path), default=None,
              help="Draw the skeletons over this video's frames.")
@interruptible("nothing was written")
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

    from .. import visualize as vis
    from ..store import StoreError

    gif = out.suffix.lower() == ".gif"
    if out.suffix.lower() not in (".png", ".gif"):
        fail(f"{out}: output must end in .png or .gif", EXIT_USAGE)
    try:
        obj = open_any(path)
    except StoreError as exc:
        fail(exc)
    try:
        frames, title = _frames(obj, path, name, volume, limb, size, clip_len, width, video)
    except StoreError as exc:  # a damaged sequence: one line naming the file and the sequence
        fail(exc)
    finally:
        obj.close()
    count = num_frames or (len(frames) if gif else 16)
    frames = [frames[i] for i in vis.pick_frames(len(frames), count)]
    try:
        vis.save_frames(frames, out, title=None if gif else title)
    except OSError as exc:
        out.unlink(missing_ok=True)  # never a half-written picture
        fail(f"{out}: cannot write ({exc.strerror or exc})")
    click.echo(f"{out}: {len(frames)} frames")


def _frames(obj, path, name, volume, limb, size, clip_len, width, video):
    """The picture's frames and title for sequence ``name`` of a store or volume file."""
    from .. import visualize as vis

    if name not in obj:
        fail(f"{path}: no sequence named {name!r}")
    if hasattr(obj, "layout"):  # pose store
        rec = obj[name]
        if volume:
            from ..render.pipeline import sample_volume
            from ..transforms import test_pipeline
            if obj.dims != 2:
                fail(f"{path}: volumes need 2D keypoints; this store is {obj.dims}D")
            pipe = test_pipeline(clip_len, 1, size)
            vol = sample_volume(rec, pipeline=pipe, num_clips=1,
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
    return frames, title


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
