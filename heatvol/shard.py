"""Sharded extraction and rendering across processes, machines or a SLURM array (docs/scale.md).

A job of many sequences is cut into N *shards* by expected work; shard K (counted from 0) does
its share into its own crash-safe output ``OUT.shard-K-of-N`` and records the names it was
given in ``OUT.shard-K-of-N.manifest.json``. When it has finished it writes
``OUT.shard-K-of-N.done``. The shard that finds every done marker present takes a lock
(``OUT.shard-merge.lock``, never waited for) and merges all shards into ``OUT``
(:func:`heatvol.merge.merge_parts`), then removes the shard files. Nothing waits for another
process and nothing talks to another process: no ``torch.distributed`` initialisation, no
barrier, no collective that could hang. A killed shard resumes on rerun (its writer skips what
it holds); the others are not redone.

Where K/N come from (:func:`resolve_shard`): ``--shard K/N``, else torchrun's ``RANK`` /
``WORLD_SIZE`` (and ``LOCAL_RANK`` picks the GPU), else a SLURM array's
``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` / ``SLURM_ARRAY_TASK_COUNT``.

The split (:func:`assign`) is greedy longest-processing-time: items sorted by expected work
(largest first, ties by name) each go to the shard with the least work so far (ties: the lower
shard). It depends only on the names and their work, so every process computes the same split.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The names of a shard's files belong to the merge (``heatvol merge`` reads manifests by hand).
from .merge import done_path, manifest_path, remove_part_files, shard_path

__all__ = ["Shard", "ShardError", "parse_shard", "shard_from_env", "resolve_shard", "assign",
           "pin_gpu", "shard_path", "manifest_path", "done_path", "shard_paths",
           "render_shard", "extract_shard", "finish_shard"]


class ShardError(Exception):
    """A shard cannot run or be merged; the message (one line) names the file and the problem."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``; ``local_rank`` is torchrun's LOCAL_RANK (GPU
    choice) when it was started by torchrun, else None. ``origin`` says where K/N came from."""

    index: int
    count: int
    local_rank: int | None = None
    origin: str = "--shard"

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count}: need 0 <= K < N "
                             f"(K counts from 0, like RANK)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N); ShardError (one line) for anything else."""
    try:
        k, n = (int(v) for v in str(text).strip().split("/"))
    except ValueError:
        raise ShardError(f"--shard {text!r}: expected K/N with whole numbers, e.g. 0/4 "
                         f"(K counts from 0)") from None
    return Shard(k, n)


def _env_int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ShardError(f"environment variable {key}={env[key]!r} is not a whole number"
                         ) from None


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard a launcher asked for through the environment, None when none did (or when
    it asked for a single process). torchrun: RANK, WORLD_SIZE, LOCAL_RANK. SLURM array:
    SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN (the first id; arrays
    may start at 1). Only variables are read: nothing is initialised, nothing can hang."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        world, rank = _env_int(env, "WORLD_SIZE"), _env_int(env, "RANK")
        if world <= 1:
            return None
        local = _env_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else None
        return Shard(rank, world, local, "torchrun (RANK/WORLD_SIZE)")
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        if count <= 1:
            return None
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        task = _env_int(env, "SLURM_ARRAY_TASK_ID")
        if not 0 <= task - first < count:
            raise ShardError(f"SLURM array task {task} is outside SLURM_ARRAY_TASK_MIN={first} .. "
                             f"+{count}: use a contiguous array (--array=0-{count - 1})")
        return Shard(task - first, count, None, "SLURM array")
    return None


def resolve_shard(option: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard`` when given (it wins over the environment), else :func:`shard_from_env`."""
    return parse_shard(option) if option is not None else shard_from_env(env)


def assign(names: Sequence[str], work: Sequence[float], count: int) -> list[list[int]]:
    """Greedy longest-processing-time split of ``names`` into ``count`` shards by ``work``.

    Returns, per shard, the positions (into ``names``) it gets, ascending. Deterministic: the
    order of work is (work descending, name ascending) and a tie between shards goes to the
    lower one. The largest shard's work is at most 4/3 of the best split's (Graham's bound)."""
    if len(names) != len(work):
        raise ValueError(f"{len(names)} names but {len(work)} work figures")
    order = sorted(range(len(names)), key=lambda i: (-float(work[i]), names[i]))
    heap = [(0.0, k) for k in range(count)]
    out: list[list[int]] = [[] for _ in range(count)]
    for i in order:
        load, k = heapq.heappop(heap)
        out[k].append(i)
        heapq.heappush(heap, (load + float(work[i]), k))
    return [sorted(o) for o in out]


def pin_gpu(shard: Shard | None, env: dict | None = None) -> str | None:
    """Give a torchrun rank its own GPU: ``CUDA_VISIBLE_DEVICES`` is set to the LOCAL_RANK-th
    GPU (of those already visible, or of the machine's, counted without initialising CUDA).
    Must run before anything touches CUDA. Returns a line to show when ranks share a GPU,
    else None. Without LOCAL_RANK (``--shard``, SLURM arrays: SLURM hands each task its own
    devices) nothing is changed."""
    env = os.environ if env is None else env
    if shard is None or shard.local_rank is None:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        devices = [str(i) for i in range(_count_gpus())]
    if len(devices) <= 1:
        return None  # none, or the launcher already gave this process exactly one
    env["CUDA_VISIBLE_DEVICES"] = devices[shard.local_rank % len(devices)]
    if shard.local_rank >= len(devices):
        return (f"LOCAL_RANK {shard.local_rank} shares GPU {env['CUDA_VISIBLE_DEVICES']} "
                f"(only {len(devices)} visible); use --nproc-per-node {len(devices)}")
    return None


def _count_gpus() -> int:
    """NVIDIA GPUs this process may use, counted without initialising CUDA (which would fix
    the device list before CUDA_VISIBLE_DEVICES is set): the device nodes ``/dev/nvidiaN`` (a
    container holds only those it was given) and the driver's ``/proc/driver/nvidia/gpus``;
    the smaller count when both exist, 0 without a driver."""
    counts = []
    try:
        counts.append(sum(1 for n in os.listdir("/dev") if n.startswith("nvidia")
                          and n[6:].isdigit()))
    except OSError:
        pass
    try:
        counts.append(len(os.listdir("/proc/driver/nvidia/gpus")))
    except OSError:
        return 0  # no NVIDIA driver
    return min(counts)


# --------------------------------------------------------------------------- files


def shard_paths(out: str | os.PathLike, count: int) -> list[Path]:
    return [shard_path(out, k, count) for k in range(count)]


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (the part-file mechanism's new_main)."""
    from .parts import PartFiles

    with PartFiles(path).new_main() as tmp:
        tmp.write_text(text, encoding="utf-8")


def job_id(kind: str, names: Sequence[str], settings: object = None) -> str:
    """A fingerprint of the whole job (every name in order, and the settings), so shards of
    different jobs are never merged and a rerun with other inputs is refused."""
    h = hashlib.sha256(kind.encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for n in names:
        h.update(b"\0" + n.encode("utf-8"))
    return h.hexdigest()[:16]


def _write_manifest(part: Path, shard: Shard, kind: str, job: str, names: Sequence[str],
                    positions: Sequence[int], total: int, out: Path) -> None:
    path = manifest_path(part)
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ShardError(f"{path}: unreadable shard manifest ({exc}); remove the shard "
                             f"files of {out} to start again") from None
        if old.get("job") != job:
            raise ShardError(f"{path}: this shard was started with other inputs or settings; "
                             f"finish that job, or remove {part.name}* to start again")
        return
    _atomic_write(path, json.dumps({
        "kind": kind, "job": job, "shard": shard.index, "count": shard.count, "total": total,
        "out": out.name, "names": list(names), "positions": [int(p) for p in positions]}))


def _already_merged(out: Path, names: Sequence[str], part: Path, kind: str,
                    expect: Mapping | None = None) -> bool:
    """Whether ``out`` is a finished merge holding every name of this shard (a rerun after
    the job is complete), checked only when this shard's files are gone. ``expect``: settings
    a volume file must have been rendered with (else the rerun is refused, as without shards)."""
    if manifest_path(part).exists() or not out.exists():
        return False
    from .merge import output_names

    if expect:
        from .volumes import VolumeFile

        with VolumeFile(out) as vf:
            have = {k: list(vf.settings.get("shape", [])[-2:]) if k == "size"
                    else vf.settings.get(k) for k in expect}
        if have != dict(expect):
            diff = ", ".join(f"{k}: {have[k]!r} there, {v!r} now"
                             for k, v in expect.items() if have[k] != v)
            raise ShardError(f"{out}: holds volumes rendered with other settings ({diff}); use "
                             f"--overwrite or another --out")

    have = output_names(out, kind)
    missing = [n for n in names if n not in have]
    if missing:
        raise ShardError(f"{out}: exists and lacks {len(missing)} of shard {part.name}'s "
                         f"sequences (first: {missing[0]!r}); a sharded run writes a new "
                         f"{out.name}: move it away or pass --overwrite")
    return True


def finish_shard(out: str | os.PathLike, shard: Shard, *, merge: bool = True) -> dict:
    """Mark shard ``shard`` done; if every shard is done, merge them into ``out`` unless
    another process is merging right now. Returns {"merged": bool, "waiting": [shards not
    done yet], "note": line or None}. Never waits for anything."""
    out = Path(out)
    part = shard_path(out, shard.index, shard.count)
    _atomic_write(done_path(part), json.dumps({"shard": shard.index, "count": shard.count}))
    waiting = [k for k, p in enumerate(shard_paths(out, shard.count)) if not done_path(p).exists()]
    result = {"merged": False, "waiting": waiting, "note": None}
    if waiting or not merge:
        return result
    from .parts import WriterBusy, WriterLock

    try:  # a lock file that is never waited for: busy means another shard is merging
        lock = WriterLock(out.with_name(out.name + ".shard-merge")).acquire()
    except WriterBusy:
        result["note"] = f"{out}: another shard is merging"
        return result
    try:
        parts = shard_paths(out, shard.count)
        if not all(manifest_path(p).exists() for p in parts):
            result["note"] = f"{out}: already merged by another shard"
            return result
        from .merge import merge_parts

        merge_parts(out, parts, overwrite=True)
        remove_shard_files(out, shard.count)
        result["merged"] = True
        return result
    finally:
        lock.release()


def remove_shard_files(out: str | os.PathLike, count: int) -> None:
    """Remove every shard's output, manifest and done marker (after a successful merge)."""
    remove_part_files(shard_paths(out, count))


# --------------------------------------------------------------------------- runners


@dataclass
class _Plan:
    part: Path
    names: list[str]
    positions: list[int]
    job: str


def _plan(out: Path, shard: Shard, kind: str, names: Sequence[str], work: Sequence[float],
          settings: object, overwrite: bool, expect: Mapping | None = None) -> _Plan | None:
    """This shard's names and part path; writes the manifest. None: the job is already merged."""
    positions = assign(names, work, shard.count)[shard.index]
    mine = [names[i] for i in positions]
    part = shard_path(out, shard.index, shard.count)
    job = job_id(kind, names, settings)
    if overwrite:
        from .parts import PartFiles

        PartFiles(part).remove_all()
        manifest_path(part).unlink(missing_ok=True)
        done_path(part).unlink(missing_ok=True)
    elif _already_merged(out, mine, part, kind, expect):
        return None
    done_path(part).unlink(missing_ok=True)  # running again: not done until it finishes
    _write_manifest(part, shard, kind, job, mine, positions, len(names), out)
    return _Plan(part, mine, positions, job)


def render_shard(poses: str | os.PathLike, out: str | os.PathLike, shard: Shard, *,
                 split: str | None = None, overwrite: bool = False, merge: bool = True,
                 **render_kwargs) -> dict:
    """Render this shard's share of ``poses`` into ``OUT.shard-K-of-N``, mark it done, and
    merge all shards into ``out`` when it is the last to finish. Work per sequence: its rows
    in the store (persons x frames, from the index; nothing is read). ``render_kwargs`` as
    :func:`heatvol.render.render_store`. Returns render_store's dict plus "shard", "part",
    "merged", "waiting" (shards not done yet) and "note"."""
    import inspect

    import numpy as np

    from .params import parse_size
    from .render import render_store
    from .store import PoseStore

    out = Path(out)
    given = {k: p.default for k, p in inspect.signature(render_store).parameters.items()
             if p.default is not inspect.Parameter.empty}
    given.update(render_kwargs, split=split)
    expect = {k: given[k] for k in ("mode", "clip_len", "num_clips", "sigma", "split")}
    expect["dtype"] = np.dtype(given["dtype"]).name
    expect["size"] = list(parse_size(given["size"]))
    with PoseStore(poses) as store:
        names = store.split(split) if split else store.names()
        pos = {n: i for i, n in enumerate(store.names())}
        rows = store.num_frames.astype(float) * store.num_persons
        work = [float(max(rows[pos[n]], 1.0)) for n in names]
    settings = {"poses": str(Path(poses).resolve()), "split": split,
                **{k: v for k, v in render_kwargs.items()
                   if k not in ("progress", "workers", "render_device", "gpu_batch",
                                "commit_every")}}
    plan = _plan(out, shard, "volumes", names, work, settings, overwrite, expect)
    base = {"shard": str(shard), "part": None, "rendered": 0, "skipped": 0}
    if plan is None:
        return {**base, "total": 0, "merged": True, "waiting": [], "note": None}
    base["part"] = str(plan.part)
    if plan.names:
        res = render_store(poses, plan.part, split=split, names=plan.names, **render_kwargs)
    else:
        res = {"rendered": 0, "skipped": 0, "total": 0}
    fin = finish_shard(out, shard, merge=merge)
    note = "; ".join(n for n in (res.get("note"), fin["note"]) if n) or None
    return {**base, **res, "merged": fin["merged"], "waiting": fin["waiting"], "note": note}


def _work_of_input(path: Path) -> float:
    """Expected extraction work of one input: its bytes (a folder of frames: its files')."""
    try:
        if path.is_dir():
            return float(sum(p.stat().st_size for p in path.iterdir() if p.is_file())) or 1.0
        return float(path.stat().st_size) or 1.0
    except OSError:
        return 1.0  # unreadable: the extraction records it as a failure


def extract_shard(inputs, out: str | os.PathLike, shard: Shard, *, overwrite: bool = False,
                  merge: bool = True, extract: Callable | None = None, **extract_kwargs):
    """Extract this shard's share of ``inputs`` into ``OUT.shard-K-of-N``, mark it done, and
    merge all shards into ``out`` when it is the last to finish. Work per input: its size in
    bytes (frame counts would need every video opened by every process). Every shard sees
    every input, so class indices from folders or labels.csv agree. Returns (ExtractReport of
    this shard, {"shard", "part", "merged", "waiting", "note"})."""
    from .extract import ExtractReport, extract_videos, find_videos

    extract = extract or extract_videos
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    out = Path(out)
    items = find_videos(inputs)
    names = [it.name for it in items]
    work = [_work_of_input(Path(it.path)) for it in items]
    settings = {"inputs": [str(it.path) for it in items],
                **{k: v for k, v in extract_kwargs.items()
                   if k not in ("progress", "workers", "on_failure", "device")}}
    plan = _plan(out, shard, "poses", names, work, settings, overwrite)
    info = {"shard": str(shard), "part": None}
    if plan is None:
        return ExtractReport(), {**info, "merged": True, "waiting": [], "note": None}
    info["part"] = str(plan.part)
    if plan.names:
        report = extract(inputs, plan.part, only=set(plan.names), **extract_kwargs)
    else:
        report = ExtractReport()
    fin = finish_shard(out, shard, merge=merge)
    return report, {**info, "merged": fin["merged"], "waiting": fin["waiting"],
                    "note": fin["note"]}
