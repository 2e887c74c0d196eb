"""Volume files: rendered heatmap volumes of many samples in one HDF5 file.

See ``docs/volumes.md``. One dataset ``volumes`` [N, clips, C, T, H, W] with one compressed
chunk per sample (volumes are mostly zeros and compress 20-50x), plus names, labels and the
render settings. Crash-safe and resumable the same way as the pose store: finished batches
become immutable part files (written under a temporary name, fsynced, renamed); ``close()``
merges the parts into the main file by copying their compressed chunks as they are (no
decompression), then replaces the main file atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import hdf5plugin  # registers the Blosc filter with HDF5 (reading and writing blosc-lz4 files)
import numpy as np

from .parts import PART_RE, PartFiles, WriterBusy, WriterLock, is_disk_full, read_snapshot
from .store import StoreError

__all__ = ["VolumeFile", "VolumeWriter", "is_volume_file", "CODECS", "DEFAULT_CODEC",
           "encode_chunk"]

# A reader retries this many times when a writer's merge swaps files under it.

FORMAT_NAME = "heatvol-volumes"
FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")
_DEFLATE_LEVEL = 1  # volumes are mostly zeros: level 1 already compresses them 50-100x

# How sample chunks are compressed (the file's ``codec`` attribute; files without it are
# "deflate"). Chosen by measurement (docs/benchmarks.md, benchmarks/pipeline_vs_pyskl.py): on a
# Penn Action limb sample (13 x 48 x 56 x 56 float32, 7.8 MB) Blosc's LZ4 without shuffle is
# ~7x faster than HDF5's shuffle + deflate-1 and its chunks are smaller (182 vs 200 kB; the
# byte shuffle only helps dense data, these volumes are mostly exact zeros). Readers need the
# Blosc filter, which ``hdf5plugin`` provides (imported here; other programs: ``import
# hdf5plugin`` before opening the file with h5py). Lossless either way: the decompressed arrays
# are byte-equal; the file bytes differ between codecs.
CODECS = ("blosc-lz4", "deflate")
DEFAULT_CODEC = "blosc-lz4"
_BLOSC_LZ4 = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE)


def _check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")
    return codec


def _filter_kwargs(codec: str, dtype: np.dtype) -> dict:
    """h5py create_dataset arguments of a codec's filter pipeline."""
    if codec == "deflate":
        return dict(compression="gzip", compression_opts=_DEFLATE_LEVEL,
                    shuffle=np.dtype(dtype).itemsize > 1)
    return dict(_BLOSC_LZ4)


def is_volume_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    first = path if path.is_file() else next((p for _, p in PartFiles(path).list()), None)
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
        self._handles: list[h5py.File] = []
        # A writer's merge replaces the main file and then deletes the merged parts: a file
        # listed a moment ago can be gone. Take the snapshot again.
        names, labels, where = read_snapshot(self.path, self._open_snapshot, self.close,
                                             vanished=(FileNotFoundError,), error=StoreError)
        self._names = names
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        self._where = where
        self._position = {n: i for i, n in enumerate(names)}
        self.classes: list[str] = list(self.settings.get("classes", []))

    def _open_snapshot(self) -> tuple[list[str], list[np.ndarray], list[tuple[int, int]]]:
        files = ([self.path] if self.path.is_file() else []) + \
            [p for _, p in PartFiles(self.path).list()]
        if not files:
            raise StoreError(f"{self.path}: no such volume file")
        self._files: list[Path] = []
        self.settings: dict | None = None
        #: how the chunks are compressed (see CODECS; files written before codecs: "deflate")
        self.codec = "deflate"
        names, labels, where = [], [], []
        merged_through = 0
        for fpath in files:
            m = PART_RE.match(fpath.name)
            if m and fpath != self.path and int(m.group(1)) <= merged_through:
                continue
            try:
                f = h5py.File(fpath, "r", locking=False)
            except OSError as exc:
                if not fpath.exists():
                    raise FileNotFoundError(fpath) from None
                raise StoreError(f"{fpath}: cannot open as HDF5 ({exc})") from None
            if f.attrs.get("format") != FORMAT_NAME:
                f.close()
                raise StoreError(f"{fpath}: not a heatvol volume file")
            if fpath == self.path:
                merged_through = int(f.attrs.get("merged_through", 0))
            fi = len(self._files)
            self._files.append(fpath)
            self._handles.append(f)
            try:
                self.settings = self.settings or json.loads(f.attrs["settings"])
                if fi == 0:  # one codec per file: the writer keeps the first part's
                    self.codec = str(f.attrs.get("codec", "deflate"))
                n = f["volumes"].shape[0]
                names += [s.decode("utf-8") for s in f["names"][()]]
                labels.append(f["labels"][()])
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise StoreError(f"{fpath}: damaged volume file ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())})") from None
            where += [(fi, i) for i in range(n)]
        return names, labels, where

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name) -> bool:
        return name in self._position

    def __getitem__(self, key: str | int) -> np.ndarray:
        i = self._position[key] if isinstance(key, str) else int(key)
        fi, row = self._where[i]
        try:
            return self._handles[fi]["volumes"][row]
        except (OSError, ValueError, RuntimeError) as exc:
            raise StoreError(f"{self._files[fi]}: sample {self._names[i]!r} is damaged, cannot "
                             f"be read ({type(exc).__name__}: {' '.join(str(exc).split())})"
                             ) from None

    def raw_chunk(self, key: str | int) -> tuple[int, bytes]:
        """(filter mask, bytes) of one sample's chunk exactly as stored (shuffle + deflate;
        mask 0 when every filter applied): for copying a sample without recompressing it."""
        i = self._position[key] if isinstance(key, str) else int(key)
        fi, row = self._where[i]
        ds = self._handles[fi]["volumes"]
        try:
            return ds.id.read_direct_chunk((row,) + (0,) * (ds.ndim - 1))
        except (OSError, ValueError, RuntimeError) as exc:
            raise StoreError(f"{self._files[fi]}: sample {self._names[i]!r} is damaged, cannot "
                             f"be read ({type(exc).__name__}: {' '.join(str(exc).split())})"
                             ) from None

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
            "complete": not PartFiles(self.path).list() and self.path.is_file(),
        }

    def close(self) -> None:
        for h in self._handles:
            h.close()
        self._handles = []

    def __enter__(self) -> VolumeFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_chunk(volume: np.ndarray, codec: str = DEFAULT_CODEC) -> bytes:
    """One sample's chunk [clips, C, T, H, W] exactly as the codec's HDF5 filters store it.

    "deflate": shuffle + zlib in Python. "blosc-lz4": python-blosc's ``compress_ptr`` with the
    Blosc filter's settings (typesize = itemsize, clevel 5, no shuffle, LZ4, automatic block
    size; one Blosc thread): the bytes hdf5plugin's filter writes (tested against
    :func:`filter_chunk`), 4x faster than running the filter through h5py, and, like zlib,
    without the GIL, so the writer's thread pool compresses several samples at once."""
    if _check_codec(codec) == "deflate":
        return deflate_chunk(volume)
    import blosc

    # One Blosc thread: with several, c-blosc's output bytes can vary from call to call
    # (seen with 2 threads: a different but valid stream, not the filter's), and the writer
    # and worker processes are parallel already. (A process-wide setting of python-blosc;
    # heatvol is its only user here.)
    if blosc.nthreads != 1:
        blosc.set_nthreads(1)
    volume = np.ascontiguousarray(volume)
    return blosc.compress_ptr(volume.__array_interface__["data"][0], volume.size,
                              typesize=volume.dtype.itemsize, clevel=5,
                              shuffle=blosc.NOSHUFFLE, cname="lz4")


def filter_chunk(volume: np.ndarray, codec: str = DEFAULT_CODEC) -> bytes:
    """The chunk as the codec's HDF5 filter pipeline itself stores it (an in-memory HDF5 file;
    h5py serialises this within a process): the oracle for :func:`encode_chunk`."""
    volume = np.ascontiguousarray(volume)
    with h5py.File(f"heatvol-chunk-{id(volume)}.h5", "w", driver="core",
                   backing_store=False) as f:
        ds = f.create_dataset("v", data=volume[None], chunks=(1,) + volume.shape,
                              **_filter_kwargs(_check_codec(codec), volume.dtype))
        mask, chunk = ds.id.read_direct_chunk((0,) * (volume.ndim + 1))
    if mask:  # the filter declined the chunk (never for Blosc, which stores raw on its own)
        raise StoreError(f"{codec} filter skipped a chunk (mask {mask})")
    return bytes(chunk)


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
    are stored with the file; resuming with different settings is refused. One writer per file
    (:class:`~heatvol.parts.WriterLock`; a second one raises StoreError at once). Parts are built
    in memory and written with plain I/O, so a full disk is a StoreError saying how many samples
    are kept; a merge the disk has no room for leaves the parts (``note`` says so).
    """

    def __init__(self, path: str | os.PathLike, settings: dict, *, overwrite: bool = False,
                 commit_every: int = 32, codec: str = DEFAULT_CODEC):
        self.path = Path(path)
        #: the chunks' codec: ``codec`` for a new file; a resumed file keeps its own
        self.codec = _check_codec(codec)
        self.settings = dict(settings)
        self.shape = tuple(int(v) for v in settings["shape"])
        self.dtype = np.dtype(settings["dtype"])
        self.commit_every = commit_every
        self._parts = PartFiles(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = WriterLock(self.path).acquire()
        except WriterBusy:
            raise StoreError(f"{self.path}: another process is writing this volume file; wait "
                             f"for it to finish") from None
        try:
            self._open(overwrite)
        except BaseException:
            self._lock.release()
            raise
        #: a line for the user when close() could not merge (a full disk), else None
        self.note: str | None = None

    def _open(self, overwrite: bool) -> None:
        self._parts.remove_temporaries()  # under the lock: no other writer's files
        if overwrite:
            self._parts.remove_all()
        self.done: set[str] = set()
        if self.path.is_file() or self._parts.list():
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
                self.codec = old.codec  # parts are merged by raw chunk copies: one codec
        self._next = self._parts.next_id(self._merged_through())
        self._buf_names: list[str] = []
        self._buf_labels: list[int] = []
        self._buf_vols: list = []  # compressed chunks, or futures of them
        self._pool: ThreadPoolExecutor | None = None
        self._disk_full = False

    def _merged_through(self) -> int:
        if not self.path.is_file():
            return 0
        with h5py.File(self.path, "r", locking=False) as f:
            return int(f.attrs.get("merged_through", 0))

    def _create_attrs(self, f: h5py.File, merged_through: int | None = None) -> None:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["settings"] = json.dumps(self.settings)
        f.attrs["codec"] = self.codec
        if merged_through is not None:
            f.attrs["merged_through"] = merged_through

    def _create(self, f: h5py.File, n: int, merged_through: int | None = None) -> h5py.Dataset:
        self._create_attrs(f, merged_through)
        return f.create_dataset("volumes", shape=(n,) + self.shape, dtype=self.dtype,
                                chunks=(1,) + self.shape,
                                **_filter_kwargs(self.codec, self.dtype))

    def append(self, name: str, volume: np.ndarray | bytes, label: int) -> None:
        """volume [clips, C, T, H, W] of the writer's dtype, or that volume already compressed
        by :func:`encode_chunk` with the writer's ``codec`` (rendering processes compress their
        own samples).

        Compression runs on a small thread pool (zlib and Blosc release the GIL), so it
        overlaps with rendering and uses every core; the part file receives the finished
        chunks as they are.
        """
        if isinstance(volume, bytes):
            chunk = volume
        else:
            if volume.shape != self.shape:
                raise ValueError(f"{name}: volume shape {volume.shape} != {self.shape}")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1),
                                                thread_name_prefix="heatvol-deflate")
            chunk = self._pool.submit(encode_chunk, np.array(volume, self.dtype), self.codec)
        self._buf_names.append(name)
        self._buf_labels.append(int(label))
        self._buf_vols.append(chunk)
        if len(self._buf_names) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if not self._buf_names:
            return
        chunks = [c if isinstance(c, bytes) else c.result() for c in self._buf_vols]

        def build(f: h5py.File) -> None:
            ds = self._create(f, len(self._buf_names))
            zero = (0,) * len(self.shape)
            for i, chunk in enumerate(chunks):
                ds.id.write_direct_chunk((i,) + zero, chunk, 0)
            f.create_dataset("names", data=np.array(self._buf_names, dtype=object), dtype=_STR)
            f.create_dataset("labels", data=np.array(self._buf_labels, np.int32))

        try:
            self._parts.write_part(self._next, build)
        except OSError as exc:
            if not is_disk_full(exc):
                raise StoreError(f"{self.path}: cannot write ({exc})") from None
            self._disk_full = True  # the buffered samples are lost; a rerun renders them
            self._buf_names, self._buf_labels, self._buf_vols = [], [], []
            raise StoreError(f"{self.path}: no space left on device; {len(self.done)} samples "
                             f"kept, rerun to continue") from None
        self._next += 1
        self.done.update(self._buf_names)
        self._buf_names, self._buf_labels, self._buf_vols = [], [], []

    def close(self, *, finished: bool = True) -> None:
        """Commit, then merge every part into the main file (raw compressed chunk copies).

        ``finished=False`` (the run failed or was interrupted): what was rendered is kept and
        merged, but no empty file is created when nothing was. After a full disk nothing more
        is written: the parts committed so far stay, and a rerun resumes from them."""
        if self._lock is None:
            return
        try:
            if not self._disk_full:
                self.commit()
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if not self._disk_full:
                self._merge(create_empty=finished)
        finally:
            if not self.path.is_file():  # nothing committed (an error, a full disk): no folder
                with contextlib.suppress(OSError):
                    self._parts.dir.rmdir()
            self._lock.release()
            self._lock = None

    def _merge(self, *, create_empty: bool) -> None:
        parts = self._parts.list()
        if not parts:
            if not self.path.is_file() and create_empty:
                # nothing rendered: still leave a valid, empty file
                def build_empty(f: h5py.File) -> None:
                    self._create_attrs(f, 0)
                    # (chunks may not exceed a fixed zero-length shape: an extensible one)
                    f.create_dataset("volumes", shape=(0,) + self.shape, dtype=self.dtype,
                                     chunks=(1,) + self.shape, maxshape=(None,) + self.shape)
                    f.create_dataset("names", shape=(0,), dtype=_STR)
                    f.create_dataset("labels", shape=(0,), dtype=np.int32)

                if not self._parts.write_main(build_empty, size_hint=0):
                    raise StoreError(f"{self.path}: no space left on device")
            return
        merged_through = parts[-1][0]
        with VolumeFile(self.path) as src:
            names, labels = src.names(), src.labels

            def build(dst: h5py.File) -> None:
                ds = self._create(dst, len(names), merged_through)
                zero = (0,) * len(self.shape)
                for j, (fi, row) in enumerate(src._where):
                    sds = src._handles[fi]["volumes"]
                    mask, chunk = sds.id.read_direct_chunk((row,) + zero)
                    ds.id.write_direct_chunk((j,) + zero, chunk, mask)
                dst.create_dataset("names", data=np.array(names, dtype=object), dtype=_STR)
                dst.create_dataset("labels", data=labels.astype(np.int32))

            merged = self._parts.write_main(build, size_hint=self._parts.size())
        if not merged:
            self.note = (f"{self.path}: parts not merged (no space left on device for the "
                         f"merge); the file is complete and readable as it is, rerunning the "
                         f"same command merges it")
            return
        self._parts.remove_merged(merged_through)

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
