"""Volume files: rendered heatmap volumes of many samples in one HDF5 file.

See ``docs/volumes.md``. One dataset ``volumes`` [N, clips, C, T, H, W] with one compressed
chunk per sample (volumes are mostly zeros and compress 20-50x), plus names, labels and the
render settings. Crash-safe and resumable the same way as the pose store: finished batches
become immutable part files (written under a temporary name, fsynced, renamed); ``close()``
merges the parts into the main file by copying their compressed chunks as they are (no
decompression), then replaces the main file atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from .store import StoreError, _fsync_dir, _fsync_file

__all__ = ["VolumeFile", "VolumeWriter", "is_volume_file"]

FORMAT_NAME = "heatvol-volumes"
FORMAT_VERSION = 1
_PART_RE = re.compile(r"^part-(\d{8})\.h5$")
_STR = h5py.string_dtype("utf-8")
_DEFLATE_LEVEL = 1  # volumes are mostly zeros: level 1 already compresses them 50-100x


def _parts(path: Path) -> list[tuple[int, Path]]:
    pdir = path.with_name(path.name + ".parts")
    if not pdir.is_dir():
        return []
    out = []
    for entry in pdir.iterdir():
        m = _PART_RE.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry))
    return sorted(out)


def is_volume_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    first = path if path.is_file() else next((p for _, p in _parts(path)), None)
    if first is None:
        return False
    try:
        with h5py.File(first, "r", locking=False) as f:
            return f.attrs.get("format") == FORMAT_NAME
    except OSError:
        return False


class VolumeFile:
    """Read a volume file (main file plus any parts an interrupted run left).

    ``vf[name]`` or ``vf[i]`` → array [clips, C, T, H, W] of the stored dtype.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        files = ([self.path] if self.path.is_file() else []) + [p for _, p in _parts(self.path)]
        if not files:
            raise StoreError(f"{self.path}: no such volume file")
        self._files: list[Path] = []
        self._handles: list[h5py.File] = []
        self.settings: dict | None = None
        names, labels, where = [], [], []
        merged_through = 0
        for fpath in files:
            m = _PART_RE.match(fpath.name)
            if m and fpath != self.path and int(m.group(1)) <= merged_through:
                continue
            try:
                f = h5py.File(fpath, "r", locking=False)
            except OSError as exc:
                raise StoreError(f"{fpath}: cannot open as HDF5 ({exc})") from None
            if f.attrs.get("format") != FORMAT_NAME:
                f.close()
                raise StoreError(f"{fpath}: not a heatvol volume file")
            if fpath == self.path:
                merged_through = int(f.attrs.get("merged_through", 0))
            self.settings = self.settings or json.loads(f.attrs["settings"])
            fi = len(self._files)
            self._files.append(fpath)
            self._handles.append(f)
            n = f["volumes"].shape[0]
            names += [s.decode("utf-8") for s in f["names"][()]]
            labels.append(f["labels"][()])
            where += [(fi, i) for i in range(n)]
        self._names = names
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        self._where = where
        self._position = {n: i for i, n in enumerate(names)}
        self.classes: list[str] = list(self.settings.get("classes", []))

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name) -> bool:
        return name in self._position

    def __getitem__(self, key: str | int) -> np.ndarray:
        i = self._position[key] if isinstance(key, str) else int(key)
        fi, row = self._where[i]
        return self._handles[fi]["volumes"][row]

    def label(self, key: str | int) -> int:
        i = self._position[key] if isinstance(key, str) else int(key)
        return int(self.labels[i])

    def summary(self) -> dict:
        s = self.settings or {}
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes)) \
            if len(self.labels) else np.zeros(len(self.classes), int)
        shape = None
        if self._handles:
            shape = list(self._handles[0]["volumes"].shape[1:])
        return {
            "path": str(self.path), "kind": "volumes", "format_version": FORMAT_VERSION,
            "samples": len(self),
            "settings": {"mode": s.get("mode"), "shape": shape, "dtype": s.get("dtype"),
                         "sigma": s.get("sigma"), "layout": s.get("layout"),
                         "clip_len": s.get("clip_len"), "num_clips": s.get("num_clips"),
                         "split": s.get("split"), "poses": s.get("poses")},
            "classes": {c: int(counts[i]) for i, c in enumerate(self.classes)},
            "unlabelled": int((self.labels < 0).sum()),
            "complete": not _parts(self.path) and self.path.is_file(),
        }

    def close(self) -> None:
        for h in self._handles:
            h.close()
        self._handles = []

    def __enter__(self) -> VolumeFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def deflate_chunk(volume: np.ndarray) -> bytes:
    """One sample's chunk exactly as HDF5's shuffle + deflate filters store it."""
    volume = np.ascontiguousarray(volume)
    data = volume.view(np.uint8)
    if volume.dtype.itemsize > 1:
        data = data.reshape(-1, volume.dtype.itemsize).T
    return zlib.compress(data.tobytes(), _DEFLATE_LEVEL)


class VolumeWriter:
    """Append rendered samples; resumable and crash-safe.

    ``settings`` (JSON-serialisable, must include ``shape`` [clips, C, T, H, W] and ``dtype``)
    are stored with the file; resuming with different settings is refused.
    """

    def __init__(self, path: str | os.PathLike, settings: dict, *, overwrite: bool = False,
                 commit_every: int = 32):
        self.path = Path(path)
        self.settings = dict(settings)
        self.shape = tuple(int(v) for v in settings["shape"])
        self.dtype = np.dtype(settings["dtype"])
        self.commit_every = commit_every
        self.pdir = self.path.with_name(self.path.name + ".parts")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for tmp in list(self.path.parent.glob(self.path.name + ".tmp-*")) + \
                list(self.pdir.glob("*.tmp")):
            tmp.unlink(missing_ok=True)
        if overwrite:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.pdir, ignore_errors=True)
        self.done: set[str] = set()
        if self.path.is_file() or _parts(self.path):
            with VolumeFile(self.path) as old:
                if old.settings != json.loads(json.dumps(self.settings)):
                    diff = {k: (old.settings.get(k), self.settings.get(k))
                            for k in set(old.settings) | set(self.settings)
                            if old.settings.get(k) != self.settings.get(k)}
                    raise StoreError(
                        f"{self.path}: holds volumes rendered with other settings "
                        f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                        f"use --overwrite or another --out")
                self.done = set(old.names())
        self._next = max([pid for pid, _ in _parts(self.path)] + [self._merged_through()]) + 1
        self._buf_names: list[str] = []
        self._buf_labels: list[int] = []
        self._buf_vols: list = []  # compressed chunks, or futures of them
        self._pool: ThreadPoolExecutor | None = None

    def _merged_through(self) -> int:
        if not self.path.is_file():
            return 0
        with h5py.File(self.path, "r", locking=False) as f:
            return int(f.attrs.get("merged_through", 0))

    def _create(self, f: h5py.File, n: int, merged_through: int | None = None) -> h5py.Dataset:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["settings"] = json.dumps(self.settings)
        if merged_through is not None:
            f.attrs["merged_through"] = merged_through
        return f.create_dataset("volumes", shape=(n,) + self.shape, dtype=self.dtype,
                                chunks=(1,) + self.shape, compression="gzip",
                                compression_opts=_DEFLATE_LEVEL, shuffle=self.dtype.itemsize > 1)

    def append(self, name: str, volume: np.ndarray | bytes, label: int) -> None:
        """volume [clips, C, T, H, W] of the writer's dtype, or that volume already compressed
        by :func:`deflate_chunk` (rendering processes compress their own samples).

        Compression runs on a small thread pool (zlib releases the GIL), so it overlaps with
        rendering and uses every core; the part file receives the finished chunks as they are.
        """
        if isinstance(volume, bytes):
            chunk = volume
        else:
            if volume.shape != self.shape:
                raise ValueError(f"{name}: volume shape {volume.shape} != {self.shape}")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1),
                                                thread_name_prefix="heatvol-deflate")
            chunk = self._pool.submit(deflate_chunk, np.array(volume, self.dtype))
        self._buf_names.append(name)
        self._buf_labels.append(int(label))
        self._buf_vols.append(chunk)
        if len(self._buf_names) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if not self._buf_names:
            return
        self.pdir.mkdir(exist_ok=True)
        final = self.pdir / f"part-{self._next:08d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        with h5py.File(tmp, "w", locking=False) as f:
            ds = self._create(f, len(self._buf_names))
            zero = (0,) * len(self.shape)
            for i, chunk in enumerate(self._buf_vols):
                chunk = chunk if isinstance(chunk, bytes) else chunk.result()
                ds.id.write_direct_chunk((i,) + zero, chunk, 0)
            f.create_dataset("names", data=np.array(self._buf_names, dtype=object), dtype=_STR)
            f.create_dataset("labels", data=np.array(self._buf_labels, np.int32))
        _fsync_file(tmp)
        os.rename(tmp, final)
        _fsync_dir(self.pdir)
        self._next += 1
        self.done.update(self._buf_names)
        self._buf_names, self._buf_labels, self._buf_vols = [], [], []

    def close(self) -> None:
        """Commit, then merge every part into the main file (raw compressed chunk copies)."""
        self.commit()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        parts = _parts(self.path)
        if not parts:
            if not self.path.is_file():  # nothing rendered: still leave a valid, empty file
                tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
                with h5py.File(tmp, "w", locking=False) as f:
                    self._create(f, 0, 0)
                    f.create_dataset("names", shape=(0,), dtype=_STR)
                    f.create_dataset("labels", shape=(0,), dtype=np.int32)
                os.replace(tmp, self.path)
            return
        with VolumeFile(self.path) as src:
            names, labels = src.names(), src.labels
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            merged_through = parts[-1][0]
            with h5py.File(tmp, "w", locking=False) as dst:
                ds = self._create(dst, len(names), merged_through)
                zero = (0,) * len(self.shape)
                for j, (fi, row) in enumerate(src._where):
                    sds = src._handles[fi]["volumes"]
                    mask, chunk = sds.id.read_direct_chunk((row,) + zero)
                    ds.id.write_direct_chunk((j,) + zero, chunk, mask)
                dst.create_dataset("names", data=np.array(names, dtype=object), dtype=_STR)
                dst.create_dataset("labels", data=labels.astype(np.int32))
        _fsync_file(tmp)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        shutil.rmtree(self.pdir, ignore_errors=True)

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- rendering a store

def _sample_volume(record, *, pipeline, num_clips: int, clip_len: int, render_kwargs: dict):
    """One pose record → [clips, C, T, H, W]: the test pipeline, then the renderer."""
    from .render import render_batch
    from .transforms import Clip

    clip = pipeline(Clip(record.keypoints, record.scores, record.img_shape), None)
    m, _, k, _ = clip.keypoints.shape
    # [M, clips*T, K, 2] -> [clips, M, T, K, 2]: clips are back to back along the frame axis
    kp = clip.keypoints.reshape(m, num_clips, clip_len, k, 2).transpose(1, 0, 2, 3, 4)
    sc = clip.scores.reshape(m, num_clips, clip_len, k).transpose(1, 0, 2, 3)
    return render_batch(np.ascontiguousarray(kp), np.ascontiguousarray(sc), **render_kwargs)


_worker_state: dict = {}


def _worker_init(poses: str, threads: int, kwargs: dict) -> None:
    import numba

    from .store import PoseStore
    numba.set_num_threads(threads)
    _worker_state.update(store=PoseStore(poses), **kwargs)


def _worker_render(name: str):
    s = _worker_state
    rec = s["store"][name]
    vol = _sample_volume(rec, pipeline=s["pipeline"], num_clips=s["num_clips"],
                         clip_len=s["clip_len"], render_kwargs=s["render_kwargs"])
    return name, rec.label, deflate_chunk(vol)  # compressed here: ~100x less to send back


def render_store(poses: str | os.PathLike, out: str | os.PathLike, *, mode: str = "joint",
                 size=(56, 56), clip_len: int = 48, num_clips: int = 1, sigma: float = 0.6,
                 split: str | None = None, dtype="float32", device: str = "auto",
                 workers: int = 1, overwrite: bool = False, progress: bool = True,
                 commit_every: int = 32, gpu_batch: int = 32) -> dict:
    """Render every sequence (or a split's) of a pose store into a volume file; resumable.

    Each sample goes through PoseC3D's test pipeline (deterministic uniform sampling of
    ``num_clips`` x ``clip_len`` frames, subject-centred square crop, resize to ``size``) and the
    renderer. Every ``commit_every`` samples become durable, so a killed run loses at most that.
    Compressed writes run on a writer thread behind a bounded queue, overlapping rendering.
    ``device="cuda"`` (or "auto" with a usable GPU) renders ``gpu_batch`` samples per launch with
    pinned staging buffers, one stream and asynchronous copies back (docs/gpu.md);
    ``device="cuda-simulator"`` runs that pipeline under Numba's simulator (tests). Returns {"rendered": n, "skipped": already done, "total": n in the selection}.
    """
    from .render import _cuda_usable, render_batch
    from .store import PoseStore
    from .transforms import test_pipeline

    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    backend = {"cpu": "cpu", "cuda": "cuda", "auto": "auto",
               "cuda-simulator": "cuda-simulator"}[device]
    dtype = np.dtype(dtype).name
    store = PoseStore(poses)
    if store.dims != 2:
        raise StoreError(f"{poses}: holds {store.dims}D keypoints ({store.layout.name}); "
                         f"heatmap volumes need 2D pixel coordinates")
    names = store.split(split) if split else store.names()
    lay = store.layout
    channels = list(lay.joints) if mode == "joint" else \
        [f"{lay.joints[a]}-{lay.joints[b]}" for a, b in lay.limbs]
    render_kwargs = dict(size=(height, width), sigma=sigma, mode=mode, layout=lay, dtype=dtype,
                         backend=backend)
    # Fail before touching the output if the backend is unusable (e.g. --device cuda, no GPU).
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
    pipeline = test_pipeline(clip_len, num_clips, (height, width))
    writer = VolumeWriter(out, settings, overwrite=overwrite, commit_every=commit_every)
    todo = [n for n in names if n not in writer.done]
    skipped = len(names) - len(todo)
    kwargs = dict(pipeline=pipeline, num_clips=num_clips, clip_len=clip_len,
                  render_kwargs=render_kwargs)
    from tqdm import tqdm
    bar = tqdm(total=len(names), initial=skipped, unit="sample", disable=not progress,
               desc="render", dynamic_ncols=True)
    rendered = 0
    sink = _WriterThread(writer, bar)  # compression + part files off the rendering thread
    try:
        if backend in ("cuda", "cuda-simulator") or (backend == "auto" and _cuda_usable()):
            _render_on_gpu(store, todo, sink, kwargs, batch_size=gpu_batch,
                           allow_simulator=backend == "cuda-simulator")
        elif workers <= 1:
            for name in todo:
                rec = store[name]
                sink.put([(name, _sample_volume(rec, **kwargs), rec.label)])
        else:
            import multiprocessing as mp
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = mp.get_context("spawn")  # no forked Numba thread pools or HDF5 handles
            with ctx.Pool(workers, _worker_init, (str(poses), threads, kwargs)) as pool:
                for name, label, vol in pool.imap(_worker_render, todo, chunksize=4):
                    sink.put([(name, vol, label)])
    finally:
        try:
            rendered = sink.close()  # drains the queue; re-raises a writer error
        finally:
            bar.close()
            writer.close()  # keeps everything finished, also on Ctrl-C or an error
            store.close()
    return {"rendered": rendered, "skipped": skipped, "total": len(names)}


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


def _pipeline_inputs(record, *, pipeline, num_clips: int, clip_len: int):
    """One record -> (keypoints [clips, M, T, K, 2], scores [clips, M, T, K]) float32."""
    from .transforms import Clip

    clip = pipeline(Clip(record.keypoints, record.scores, record.img_shape), None)
    m, _, k, _ = clip.keypoints.shape
    kp = clip.keypoints.reshape(m, num_clips, clip_len, k, 2).transpose(1, 0, 2, 3, 4)
    sc = clip.scores.reshape(m, num_clips, clip_len, k).transpose(1, 0, 2, 3)
    return kp, sc


def _render_on_gpu(store, todo, sink: _WriterThread, kwargs: dict, *, batch_size: int,
                   allow_simulator: bool) -> None:
    """Batches of samples: pose pipeline on the CPU, staging into pinned memory, H2D copy,
    render and D2H copy queued on one stream; the writer thread waits for each batch's event
    and compresses while the next batches are prepared and rendered.

    Persons are padded to the batch's largest M with score 0 (missing: nothing drawn), which
    leaves every volume unchanged. Three pinned output buffers rotate: a batch waits for a
    free one, so at most three batches are in flight."""
    import queue

    from numba import cuda

    from .kernels import cuda as kernels
    from .kernels.cpu import kernel_scalars  # noqa: F401  (same scalars as every backend)
    from .render import _check

    rk = kwargs["render_kwargs"]
    num_clips, clip_len = kwargs["num_clips"], kwargs["clip_len"]
    lay = rk["layout"]
    limbs, height, width, channels, sigma, dtype = _check(
        (1, 0, clip_len, lay.num_joints, 2), (1, 0, clip_len, lay.num_joints), np.float32,
        np.float32, batched=True, size=rk["size"], sigma=rk["sigma"], mode=rk["mode"],
        layout=lay, dtype=rk["dtype"])
    bits = dtype == np.float16
    store_dtype = np.uint16 if bits else dtype
    out_kind = kernels.out_kind_for(dtype)
    vol_shape = (num_clips, channels, clip_len, height, width)
    stream = cuda.stream()
    d_limbs = cuda.to_device(limbs, stream=stream) if limbs is not None else None
    free = queue.Queue()
    for _ in range(3):
        free.put(cuda.pinned_array((batch_size * num_clips,) + vol_shape[1:], store_dtype))
    staging = [None, None]  # (pinned kp, pinned sc, event) per slot, reused alternately
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        recs = [store[name] for name in chunk]
        inputs = [_pipeline_inputs(r, pipeline=kwargs["pipeline"], num_clips=num_clips,
                                   clip_len=clip_len) for r in recs]
        persons = max(1, max(kp.shape[1] for kp, _ in inputs))
        n = len(chunk) * num_clips
        slot = (start // batch_size) % 2
        held = staging[slot]
        if held is not None:
            held[2].synchronize()  # its previous H2D copy is done: the buffer may be rewritten
        if held is None or held[0].shape[1] < persons or held[0].shape[0] < n:
            cap = max(persons, held[0].shape[1] if held else 0)
            held = [cuda.pinned_array((batch_size * num_clips, cap, clip_len, lay.num_joints, 2),
                                      np.float32),
                    cuda.pinned_array((batch_size * num_clips, cap, clip_len, lay.num_joints),
                                      np.float32), None]
        kp_host, sc_host = held[0][:n, :persons], held[1][:n, :persons]
        sc_host[...] = 0  # padded persons: missing
        for i, (kp, sc) in enumerate(inputs):
            m = kp.shape[1]
            kp_host[i * num_clips:(i + 1) * num_clips, :m] = kp
            sc_host[i * num_clips:(i + 1) * num_clips, :m] = sc
        d_kp = cuda.to_device(np.ascontiguousarray(kp_host), stream=stream)
        d_sc = cuda.to_device(np.ascontiguousarray(sc_host), stream=stream)
        held[2] = cuda.event()
        held[2].record(stream)
        staging[slot] = held
        out_host = free.get()  # blocks while three batches are being written
        d_out = cuda.device_array((n,) + vol_shape[1:], store_dtype, stream=stream)
        kernels.render_into(d_kp, d_sc, d_limbs, d_out, sigma, bool(rk.get("use_score", True)),
                            out_kind=out_kind, stream=stream, allow_simulator=allow_simulator)
        d_out.copy_to_host(out_host[:n], stream=stream)
        done = cuda.event()
        done.record(stream)

        def job(out_host=out_host, done=done, chunk=chunk, recs=recs, n=n):
            done.synchronize()
            view = out_host[:n].view(np.float16) if bits else out_host[:n]
            items = [(name, view[i * num_clips:(i + 1) * num_clips].copy(), rec.label)
                     for i, (name, rec) in enumerate(zip(chunk, recs))]
            free.put(out_host)
            return items

        sink.put(job)
