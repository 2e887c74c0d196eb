"""Commands on models: ``train``, ``test``, ``ensemble``, ``presets``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (CONTEXT, EXIT_INTERRUPTED, LazyChoice, SizeOption, WeightsOption, deprecated,
                     fail, one_line, require_store)


def _model_names():
    from ..models import MODELS

    return MODELS


def _modalities():
    from ..skeleton import MODALITIES

    return MODALITIES


def _parse_sets(sets) -> dict:
    import yaml

    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


@click.command("train", context_settings=CONTEXT)
@click.argument("poses", required=False, type=click.Path(path_type=Path))
@click.option("--preset", default=None, help="Preset name (`heatvol presets`) or a .yaml file "
              "[default: default]; the options below override its settings.")
@click.option("--model", type=LazyChoice(_model_names), default=None,
              help="PoseConv3D backbone (slowonly, c3d, x3d: heatmap volumes) or graph model "
              "(stgcn, msg3d, dualhead: joint coordinates).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Checkpoints and logs [default: runs/PRESET].")
@click.option("--epochs", type=int, default=None, help="Passes over the training split.")
@click.option("--batch-size", type=int, default=None, help="Samples per step (per process).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (SGD).")
@click.option("--clip-len", type=int, default=None, help="Frames per sampled clip.")
@click.option("--size", cls=SizeOption, default=None,
              help="Heatmap size for training: H [W] (one number: square).")
@click.option("--limb/--joint", "limb", default=None, help="Limb or joint heatmaps (3D CNNs).")
@click.option("--modality", type=LazyChoice(_modalities), default=None, help="Graph models: the "
              "input stream (fuse streams with `heatvol ensemble`).")
@click.option("--render-device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where volumes are rendered: cpu (Numba kernels in the DataLoader workers), "
              "cuda (keypoints only in the workers, each batch rendered on the GPU inside the "
              "step) or auto (cuda on a usable CUDA GPU, else cpu) [default: the preset's].")
@click.option("--render", "old_render", type=click.Choice(["cpu", "gpu", "auto"]), default=None,
              hidden=True, help="Deprecated: --render-device (gpu is cuda).")
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
              modality, render_device, old_render, max_steps, seed, resume, device, workers,
              sets, quiet):
    """Train a PoseConv3D model on heatmap volumes rendered on the fly from a pose store, or
    a graph model (ST-GCN, MS-G3D, DualHead-Net) on its joint coordinates.

    Settings come from a preset (`heatvol presets`), then the options given here. With no
    arguments, in a folder holding poses.h5, a plain `heatvol train` trains on it with the
    preset `default` (SlowOnly) on a CUDA GPU, or `penn-x3d-cpu` (a slim X3D) without one.
    Checkpoints (every epoch, best.pt, last.pt also when stopped by --max-steps or Ctrl-C),
    log.csv and train.log go to --work-dir, and TensorBoard logs when TensorBoard is installed
    (`pip install heatvol[tensorboard]`). Several processes or GPUs: run under torchrun (see
    docs/training.md).

    \b
    Examples:
      heatvol train                                          # poses.h5, preset by hardware
      heatvol train penn.h5 --preset penn-x3d-cpu --work-dir runs/penn
      heatvol train penn.h5 --model x3d --size 32 --clip-len 32 --epochs 30 --limb
      heatvol train ucla.h5 --preset ucla-dualhead-cpu --modality bone --work-dir runs/ucla-b
      heatvol train --work-dir runs/penn --resume            # continue where it stopped
      torchrun --standalone --nproc-per-node 2 -m heatvol.cli train penn.h5 --preset tiny
    """
    from ..presets import PresetError
    from ..store import StoreError
    from ..training import ConfigError, RunError, train
    from ..training.settings import train_settings

    if old_render is not None:
        deprecated("--render", "--render-device" + (" cuda" if old_render == "gpu" else ""))
        render_device = render_device or ("cuda" if old_render == "gpu" else old_render)
    overrides = {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "clip_len": clip_len, "size": size, "render_device": render_device,
                 "max_steps": max_steps, "seed": seed, "device": device, "workers": workers,
                 "modality": modality}
    if limb is not None:
        overrides["mode"] = "limb" if limb else "joint"
    overrides.update(_parse_sets(sets))
    if quiet:
        overrides["progress"] = False
    try:
        chosen = train_settings(poses=None if poses is None else str(poses), preset=preset,
                                work_dir=None if work_dir is None else str(work_dir),
                                resume=resume, overrides=overrides)
        for old, new in chosen.renamed:
            deprecated(old if old.startswith("preset ") else f"--set {old}", new)
        summary = train(chosen.config, notes=chosen.notes)
    except (ConfigError, PresetError, RunError, StoreError) as exc:
        fail(exc)
    except RuntimeError as exc:  # e.g. the CUDA renderer: one line
        fail(exc)
    best = summary["best"]
    click.echo(f"{summary['work_dir']}: {summary['steps']} of {summary['total_steps']} steps "
               f"({summary['stopped']})"
               + (f", best val top-1 {best['top1']:.2%} at epoch {best['epoch']}" if best else "")
               + f"; checkpoint {summary['last']}")
    if summary["stopped"] == "interrupted":
        sys.exit(EXIT_INTERRUPTED)


@click.command("test", context_settings=CONTEXT)
@click.argument("poses", required=False, default="poses.h5", type=click.Path(path_type=Path))
@click.option("--checkpoint", "-c", required=True, type=click.Path(path_type=Path),
              help="A checkpoint of `heatvol train` (best.pt, last.pt, epoch_NNN.pt).")
@click.option("--split", default=None, help="Split to evaluate [default: the run's validation "
              "split, else test].")
@click.option("--num-clips", default=10, show_default=True, help="Clips per sequence "
              "(deterministic uniform sampling); softmax averaged.")
@click.option("--flip", is_flag=True, help="Also average over the horizontally flipped volumes.")
@click.option("--size", cls=SizeOption, default=None,
              help="Test heatmap size: H [W] (one number: square) [default: the run's "
              "test_size, else its training size].")
@click.option("--batch-size", default=4, show_default=True, help="Sequences per forward pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--render-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where to render the test volumes: cpu (Numba kernels), "
              "cuda (on the GPU) or auto (cuda on a usable CUDA GPU).")
@click.option("--render", "old_render", type=click.Choice(["cpu", "gpu", "auto"]), default=None,
              hidden=True, help="Deprecated: --render-device (gpu is cuda).")
@click.option("--workers", default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--confusion", type=click.Path(path_type=Path), default=None,
              help="Confusion-matrix PNG [default: beside the checkpoint].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (with the "
              "per-sample scores that `heatvol ensemble` fuses).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the JSON results to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def test_cmd(poses, checkpoint, split, num_clips, flip, size, batch_size, device, render_device,
             old_render, workers, confusion, as_json, out, quiet):
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
    from ..store import StoreError
    from ..training import ConfigError, evaluate_checkpoint

    if old_render is not None:
        deprecated("--render", "--render-device" + (" cuda" if old_render == "gpu" else ""))
        render_device = "cuda" if old_render == "gpu" else old_render
    if not poses.exists() and not poses.with_name(poses.name + ".parts").exists():
        fail(f"{poses}: no such pose store")
    try:
        res = evaluate_checkpoint(poses, checkpoint, split=split, num_clips=num_clips, flip=flip,
                                  size=size, batch_size=batch_size, device=device,
                                  render_device=render_device, workers=workers,
                                  confusion_png=confusion, progress=not quiet and not as_json)
    except (ConfigError, StoreError, ValueError, RuntimeError) as exc:
        fail(exc)
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
               f" at {'x'.join(map(str, res['size']))}"
               f"{' + flip' if res['flip'] else ''}):")
    click.echo(f"  top-1 {res['top1']:.2%}   top-5 {res['top5']:.2%}   mean-class "
               f"{res['mean_class']:.2%}")
    width = max((len(c) for c in res["per_class"]), default=5)
    for name, acc in res["per_class"].items():
        click.echo(f"  {name:<{width}}  " + ("-" if acc is None else f"{acc:.2%}"))
    click.echo(f"  confusion matrix: {res['confusion_png']}")


@click.command("ensemble", context_settings=CONTEXT)
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...",
                type=click.Path(path_type=Path))
@click.option("--weights", cls=WeightsOption, default=None, metavar="W...",
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
    from ..training import ConfigError, fuse_results, load_result, save_confusion_png

    try:
        loaded = [load_result(p) for p in results]
        res = fuse_results(loaded, None if weights is None else list(weights),
                           sources=[str(p) for p in results])
    except ConfigError as exc:
        fail(exc)
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


@click.command("presets", context_settings=CONTEXT)
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

    from ..presets import PresetError, list_presets, load_preset, preset_path

    if name:
        try:
            settings = load_preset(name)
            path = preset_path(name)
        except PresetError as exc:
            fail(exc)
        click.echo(f"# {path}")
        click.echo(yaml.safe_dump(settings, sort_keys=False).rstrip())
        return
    from ..training.settings import default_preset

    presets = list_presets()
    plain, why = default_preset()
    width = max((len(n) for n in presets), default=4)
    for preset, description in presets.items():
        mark = "*" if preset == plain else " "
        click.echo(f"{mark} {preset:<{width}}  {description}")
    click.echo(f"(* = used by a plain `heatvol train` here: {why}; `heatvol presets NAME` shows "
               f"one)")
