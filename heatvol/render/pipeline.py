"""Rendering a pose store into a volume file (``heatvol render``): the test pipeline per
sample, the renderer (CPU kernels, worker processes, or batches on the GPU), and a writer thread
that compresses and appends while the next samples render. The volume file format itself is
:mod:`heatvol.volumes`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..fused import FusedPipeline
from ..params import check_render_device, parse_size
from ..progress import progress as progress_display
from ..store import PoseStore, StoreError
from ..transforms import Clip, clips_first, test_pipeline
from ..volumes import DEFAULT_CODEC, VolumeWriter, encode_chunk
from .backends import gpu_available
from .gpu_batches import render_on_gpu
from .volume import render_batch

__all__ = ["render_store", "sample_volume", "pipeline_inputs"]


def pipeline_inputs(record, *, pipeline, num_clips: int):
    """One pose record -> the test pipeline's (keypoints [clips, M, T, K, 2], scores
    [clips, M, T, K]) float32, C-contiguous."""
    clip = pipeline(Clip(record.keypoints, record.scores, record.img_shape), None)
    return (np.ascontiguousarray(clips_first(clip.keypoints, num_clips)),
            np.ascontiguousarray(clips_first(clip.scores, num_clips)))


def sample_volume(record, *, pipeline, num_clips: int, render_kwargs: dict) -> np.ndarray:
    """One pose record -> [clips, C, T, H, W]: the test pipeline, then the renderer."""
    kp, sc = pipeline_inputs(record, pipeline=pipeline, num_clips=num_clips)
    return render_batch(kp, sc, **render_kwargs)


_worker_state: dict = {}


def _worker_init(poses: str, threads: int, kwargs: dict) -> None:
    import signal

    import numba

    # Ctrl-C reaches the whole process group: the main process stops the pool and keeps what
    # is finished; workers stay quiet (no traceback per worker).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    numba.set_num_threads(threads)
    try:
        _worker_state.update(store=PoseStore(poses), **kwargs)
    except Exception as exc:  # noqa: BLE001 - an initializer that raises makes Pool respawn
        _worker_state["error"] = exc  # workers forever: hand the error to the first task


def _worker_render(name: str):
    s = _worker_state
    if "error" in s:
        raise s["error"]
    rec = s["store"][name]
    vol = sample_volume(rec, pipeline=s["pipeline"], num_clips=s["num_clips"],
                        render_kwargs=s["render_kwargs"])
    # compressed here: ~40x less to send back, and each process compresses its own
    return name, rec.label, encode_chunk(vol, s["codec"])


def render_store(poses: str | os.PathLike, out: str | os.PathLike, *, mode: str = "joint",
                 size=(56, 56), clip_len: int = 48, num_clips: int = 1, sigma: float = 0.6,
                 split: str | None = None, dtype="float32", render_device: str = "auto",
                 workers: int = 1, overwrite: bool = False, progress: bool = True,
                 commit_every: int = 32, gpu_batch: int = 32, codec: str = DEFAULT_CODEC,
                 names: list[str] | None = None) -> dict:
    """Render every sequence (or a split's) of a pose store into a volume file; resumable.

    Each sample goes through PoseC3D's test pipeline (deterministic uniform sampling of
    ``num_clips`` x ``clip_len`` frames, subject-centred square crop, resize to ``size``) and the
    renderer. Every ``commit_every`` samples become durable, so a killed run loses at most that.
    Compressed writes run on a writer thread behind a bounded queue, overlapping rendering.
    ``render_device="cuda"`` (or "auto" with a usable GPU) renders ``gpu_batch`` samples per
    launch with pinned staging buffers, one stream and asynchronous copies back (docs/gpu.md,
    :mod:`heatvol.render.gpu_batches`); ``render_device="cuda-simulator"`` runs that pipeline
    under Numba's simulator (tests). Returns {"rendered": n, "skipped": already done, "total":
    n in the selection}, plus "note" (a line for the user) when the parts could not be merged.

    ``codec``: how sample chunks are compressed (:data:`heatvol.volumes.CODECS`; default
    Blosc LZ4 without shuffle, chosen by measurement; a resumed file keeps its own codec). The
    decompressed volumes are the same whatever the codec; the file bytes are not.

    Errors are :class:`StoreError` naming the file (and the sequence) and the real cause: an
    empty store or split, a damaged or vanished store, a full disk (with the samples kept), a
    second writer on ``out``. What was rendered before an error is kept; no temporary file stays.

    ``names``: render only these sequences of the selection, in this order (a shard's share,
    :mod:`heatvol.shard`); the settings stored are those of the whole selection.
    """
    height, width = parse_size(size)
    check_render_device(render_device, extra=("cuda-simulator",))
    dtype = np.dtype(dtype).name
    store = PoseStore(poses)
    try:
        return _render(store, poses, out, mode=mode, height=height, width=width,
                       clip_len=clip_len, num_clips=num_clips, sigma=sigma, split=split,
                       dtype=dtype, render_device=render_device, workers=workers,
                       overwrite=overwrite, progress=progress, commit_every=commit_every,
                       gpu_batch=gpu_batch, codec=codec, only=names)
    finally:
        store.close()


def _render(store: PoseStore, poses, out, *, mode, height, width, clip_len, num_clips, sigma,
            split, dtype, render_device, workers, overwrite, progress, commit_every,
            gpu_batch, codec=DEFAULT_CODEC, only=None) -> dict:
    if store.dims != 2:
        raise StoreError(f"{poses}: holds {store.dims}D keypoints ({store.layout.name}); "
                         f"heatmap volumes need 2D pixel coordinates")
    names = store.split(split) if split else store.names()
    if not names:
        raise StoreError(f"{poses}: split {split!r} is empty; nothing to render" if split
                         else f"{poses}: the store holds no sequences; nothing to render")
    if only is not None:
        known = set(names)
        unknown = [n for n in only if n not in known]
        if unknown:
            raise StoreError(f"{poses}: no sequence named {unknown[0]!r} in the selection")
        names = list(only)
    lay = store.layout
    channels = lay.channel_names(mode)
    render_kwargs = dict(size=(height, width), sigma=sigma, mode=mode, layout=lay, dtype=dtype,
                         render_device=render_device)
    # Fail before touching the output if rendering is impossible (e.g. cuda without a GPU).
    render_batch(np.zeros((1, 0, 1, lay.num_joints, 2), np.float32),
                 np.zeros((1, 0, 1, lay.num_joints), np.float32), **render_kwargs)
    settings = {
        "mode": mode, "shape": [num_clips, len(channels), clip_len, height, width],
        "dtype": dtype, "sigma": sigma, "layout": lay.name, "channels": channels,
        "clip_len": clip_len, "num_clips": num_clips, "split": split,
        "classes": store.classes, "poses": str(Path(poses).resolve()),
        "pipeline": "uniform sampling (test mode, seed 255) -> subject crop (padding 0.25, "
                    "square) -> resize -> render",
    }
    # the test pipeline's transforms in one pass per sample (bit-equal to the Compose)
    pipeline = FusedPipeline(test_pipeline(clip_len, num_clips, (height, width)))
    writer = VolumeWriter(out, settings, overwrite=overwrite, commit_every=commit_every,
                          codec=codec)
    todo = [n for n in names if n not in writer.done]
    skipped = len(names) - len(todo)
    kwargs = dict(pipeline=pipeline, num_clips=num_clips, render_kwargs=render_kwargs)
    bar = progress_display(total=len(names), initial=skipped, unit="sample", enabled=progress,
                           desc="render")
    rendered = 0
    sink = _WriterThread(writer, bar)  # compression + part files off the rendering thread
    try:
        if render_device in ("cuda", "cuda-simulator") or (render_device == "auto"
                                                            and gpu_available()):
            render_on_gpu(store, todo, sink.put,
                          lambda rec: pipeline_inputs(rec, pipeline=pipeline, num_clips=num_clips),
                          render_kwargs, num_clips=num_clips, clip_len=clip_len,
                          batch_size=gpu_batch, allow_simulator=render_device == "cuda-simulator")
        elif workers <= 1:
            for name in todo:
                rec = store[name]
                sink.put([(name, sample_volume(rec, **kwargs), rec.label)])
        else:
            import multiprocessing as mp
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = mp.get_context("spawn")  # no forked Numba thread pools or HDF5 handles
            with ctx.Pool(workers, _worker_init,
                          (str(poses), threads, dict(kwargs, codec=writer.codec))) as pool:
                for name, label, vol in pool.imap(_worker_render, todo, chunksize=4):
                    sink.put([(name, vol, label)])
        rendered = sink.close()  # drains the queue; re-raises a writer error
    except BaseException:
        # Keep everything finished, also on Ctrl-C or an error, and let the error that
        # stopped the run be the one shown (closing after it must not replace it).
        _close_quietly(sink, bar, writer)
        raise
    bar.close()
    writer.close()
    result = {"rendered": rendered, "skipped": skipped, "total": len(names)}
    if writer.note:
        result["note"] = writer.note
    return result


def _close_quietly(*objects) -> None:
    """Close after an error: keep what is finished, but let the first error be the one shown."""
    for obj in objects:
        try:
            if isinstance(obj, VolumeWriter):
                obj.close(finished=False)
            else:
                obj.close()
        except Exception:  # noqa: BLE001 - the error already being raised is the cause
            pass


# --------------------------------------------------------------------------- overlap machinery

class _WriterThread:
    """Appends rendered samples to a VolumeWriter on its own thread, behind a bounded queue.

    ``put(items)``: items = [(name, volume, label)], or a callable returning such a list (called
    on the writer thread: used to wait for a GPU batch's copy before reading its buffer).
    A writer error stops the thread and is re-raised by the next ``put`` or by ``close``."""

    def __init__(self, writer: VolumeWriter, bar=None, depth: int = 4):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=depth)
        self._writer, self._bar = writer, bar
        self._error: BaseException | None = None
        self.count = 0
        self._thread = threading.Thread(target=self._run, name="heatvol-volume-writer",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue  # drain without writing after a failure
            try:
                for name, vol, label in (job() if callable(job) else job):
                    self._writer.append(name, vol, label)
                    self.count += 1
                    if self._bar is not None:
                        self._bar.update()
            except BaseException as exc:  # noqa: BLE001  (re-raised on the main thread)
                self._error = exc

    def put(self, job) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(job)

    def close(self) -> int:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.count
