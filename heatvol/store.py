"""The pose store: (x, y, score) triplets of many sequences in one HDF5 file.

The store is the contract between extraction, rendering and training. See
``docs/pose-store.md`` for the on-disk format; in short:

- every sequence's rows ([M*T] persons x frames) are concatenated into two ragged arrays,
  ``keypoints`` float32 [R, K, C] and ``scores`` float32 [R, K], chunked and compressed;
  an ``index`` table (one row per sequence) holds name, row offset, M, T, label, image shape,
  fps and source. Reading one sequence is two HDF5 reads.
- writes are crash-safe: a writer never modifies an existing file. Appends are buffered and
  committed as immutable *part* files (``poses.h5.parts/part-00000007.h5``), each written
  under a temporary name, fsynced and renamed into place. Closing the writer *compacts*:
  the main file and the parts are merged into a new main file that atomically replaces
  the old one. A reader sees the main file plus every part not yet merged into it, so a
  writer killed at any instant leaves a store holding exactly the committed sequences.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .layouts import Layout, layout as get_layout
from .parts import PartFiles, WriterBusy, WriterLock, is_disk_full, read_snapshot

__all__ = ["PoseRecord", "PoseStore", "PoseWriter", "StoreError", "FORMAT_VERSION",
           "COORD_LIMIT"]

FORMAT_NAME = "heatvol-posestore"
FORMAT_VERSION = 1
_ROWS_PER_CHUNK = 2048
_STR = h5py.string_dtype("utf-8")

#: Every stored coordinate is finite with |value| <= COORD_LIMIT (pixels for 2D, the source's
#: unit for 3D): far beyond any real frame, and small enough that the renderer's squared
#: distances and a picture's pixel positions stay far from float32 / int32 overflow.
COORD_LIMIT = 1e6
# A reader retries this many times when a writer's merge swaps files under it.
# What h5py raises for a damaged file or chunk (bad checksum, inflate error, bad metadata).
_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError)


class StoreError(Exception):
    """A pose store cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class PoseRecord:
    """One sequence: what a store returns and what an importer loads.

    keypoints:  float32 [M, T, K, C] (C = 2 pixels x, y for 2D; 3 for 3D)
    scores:     float32 [M, T, K] in [0, 1]; 0 marks a missing joint
    label:      int class index, -1 when unknown
    img_shape:  (H, W) of the source frames for 2D data, None for 3D
    source:     what the sequence came from (a file name, a video path...)
    class_name: the name of class ``label`` when known (a store fills it from its classes)
    splits:     the splits the source file itself names (importers); empty when read from a
                store, whose splits are :meth:`PoseStore.split`
    """

    name: str
    keypoints: np.ndarray
    scores: np.ndarray
    label: int = -1
    img_shape: tuple[int, int] | None = None
    fps: float = 0.0
    source: str = ""
    class_name: str | None = None
    splits: tuple[str, ...] = ()

    @property
    def num_persons(self) -> int:
        return self.keypoints.shape[0]

    @property
    def num_frames(self) -> int:
        return self.keypoints.shape[1]


# --------------------------------------------------------------------------- file helpers


def _open_h5(path: Path) -> h5py.File:
    try:
        # No HDF5 file locking: files are immutable once renamed into place.
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open as HDF5 ({exc})") from None


def _read_meta(f: h5py.File) -> dict | None:
    if "meta" not in f:
        return None
    return json.loads(bytes(f["meta"][()]).decode("utf-8"))


def _why(exc: BaseException) -> str:
    """An h5py / json error as a short phrase for a one-line message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_values(where: str, kp: np.ndarray, sc: np.ndarray) -> str | None:
    """What is wrong with stored values (None when they keep the store's invariants)."""
    # NaN propagates through max/min and fails every comparison; inf fails the bound: no
    # separate isfinite pass (this runs on every read).
    if kp.size and not np.abs(kp).max() <= COORD_LIMIT:
        return f"{where}: coordinates outside [-{COORD_LIMIT:g}, {COORD_LIMIT:g}] or not finite"
    if sc.size and not (sc.min() >= 0 and sc.max() <= 1):
        return f"{where}: scores outside [0, 1]"
    return None


def _write_meta(f: h5py.File, meta: dict) -> None:
    blob = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode("utf-8"), dtype=np.uint8)
    f.create_dataset("meta", data=blob, compression="gzip" if blob.size > 4096 else None)


@dataclass
class _Index:
    """Per-sequence columns of one file (or of the merged view)."""

    name: list
    offset: np.ndarray      # int64, row offset into that file's arrays
    num_persons: np.ndarray  # int32
    num_frames: np.ndarray  # int32
    label: np.ndarray       # int32
    img_shape: np.ndarray   # int32 [N, 2]; (0, 0) when unknown / 3D
    fps: np.ndarray         # float32
    source: list

    COLUMNS = ("offset", "num_persons", "num_frames", "label", "img_shape", "fps")

    @classmethod
    def read(cls, f: h5py.File) -> _Index:
        g = f["index"]
        return cls(name=[s.decode("utf-8") for s in g["name"][()]],
                   source=[s.decode("utf-8") for s in g["source"][()]],
                   **{c: g[c][()] for c in cls.COLUMNS})

    def write(self, f: h5py.File) -> None:
        g = f.create_group("index")
        n = len(self.name)
        text = {"compression": "gzip", "shuffle": True} if n > 256 else {}
        # (Fletcher-32 checksums need fixed-size values: numbers only)
        gz = dict(text, fletcher32=True) if n > 256 else {}
        g.create_dataset("name", data=np.array(self.name, dtype=object), dtype=_STR, **text)
        g.create_dataset("source", data=np.array(self.source, dtype=object), dtype=_STR, **text)
        g.create_dataset("offset", data=self.offset.astype(np.int64), **gz)
        g.create_dataset("num_persons", data=self.num_persons.astype(np.int32), **gz)
        g.create_dataset("num_frames", data=self.num_frames.astype(np.int32), **gz)
        g.create_dataset("label", data=self.label.astype(np.int32), **gz)
        g.create_dataset("img_shape", data=self.img_shape.astype(np.int32).reshape(n, 2), **gz)
        g.create_dataset("fps", data=self.fps.astype(np.float32), **gz)

    def take(self, rows: np.ndarray) -> _Index:
        return _Index(name=[self.name[i] for i in rows], source=[self.source[i] for i in rows],
                      **{c: getattr(self, c)[rows] for c in self.COLUMNS})

    @classmethod
    def concat(cls, parts: list[_Index]) -> _Index:
        if not parts:
            return cls.empty()
        return cls(name=[n for p in parts for n in p.name],
                   source=[s for p in parts for s in p.source],
                   **{c: np.concatenate([getattr(p, c) for p in parts]) for c in cls.COLUMNS})

    @classmethod
    def empty(cls) -> _Index:
        return cls(name=[], source=[], offset=np.zeros(0, np.int64),
                   num_persons=np.zeros(0, np.int32), num_frames=np.zeros(0, np.int32),
                   label=np.zeros(0, np.int32), img_shape=np.zeros((0, 2), np.int32),
                   fps=np.zeros(0, np.float32))


def _create_rows(f: h5py.File, name: str, data: np.ndarray) -> None:
    # A fixed chunk height: datasets grow by appends, and tiny chunks make merged files slow.
    chunk = (_ROWS_PER_CHUNK,) + data.shape[1:]
    # Fletcher-32: a flipped byte in a chunk is an error on read, never silently wrong values.
    f.create_dataset(name, data=data, maxshape=(None,) + data.shape[1:], chunks=chunk,
                     compression="gzip", compression_opts=4, shuffle=True, fletcher32=True)


# --------------------------------------------------------------------------- reader


class _DamagedRows(StoreError):
    """One sequence's rows cannot be read; ``reason`` says why (without file and name)."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.reason = reason

    def __reduce__(self):  # crosses process boundaries (render workers) as a plain StoreError
        return StoreError, (str(self),)


class _Vanished(Exception):
    """A file of the store disappeared while it was being opened (a writer's merge)."""


class PoseStore:
    """Read a pose store.

    >>> with PoseStore("poses.h5") as store:
    ...     rec = store["0001"]            # PoseRecord; rec.keypoints float32 [M, T, K, C]
    ...     train = store.split("train")   # list of names

    ``in_memory=True`` loads every array into RAM in one read per file (for training).
    The store is a snapshot taken when it is opened; it is safe to use from DataLoader
    workers (HDF5 handles are reopened after a fork).
    """

    def __init__(self, path: str | os.PathLike, *, in_memory: bool = False):
        self.path = Path(path)
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        # A writer's merge replaces the main file and then deletes the parts it merged: a
        # reader listing the files in between finds one gone. Take the snapshot again.
        indices, meta = read_snapshot(self.path, self._open_snapshot, self.close,
                                      vanished=(_Vanished,), error=StoreError)
        self._meta = meta
        try:
            self.layout: Layout = get_layout(meta["layout"])
            self.dims: int = int(meta["dims"])
            self.classes: list[str] = [str(c) for c in meta.get("classes", [])]
            self.splits: dict[str, list[str]] = {str(k): [str(n) for n in v]
                                                 for k, v in meta.get("splits", {}).items()}
            self.failures: dict[str, str] = dict(meta.get("failures", {}))
            self.attrs: dict = dict(meta.get("attrs", {}))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self.close()
            raise StoreError(f"{self.path}: damaged metadata ({_why(exc)})") from None

        # Merge the per-file indices; a later file's entry supersedes an earlier one by name.
        file_of = np.concatenate([np.full(len(ix.name), i, np.int32)
                                  for i, ix in enumerate(indices)]) if indices else np.zeros(0, np.int32)
        merged = _Index.concat(indices)
        last: dict[str, int] = {}
        for i, n in enumerate(merged.name):
            last[n] = i
        keep = np.fromiter(sorted(last.values()), dtype=np.int64, count=len(last))
        self._index = merged.take(keep)
        self._file_of = file_of[keep]
        self._superseded = len(merged.name) - len(keep)
        self._position = {n: i for i, n in enumerate(self._index.name)}
        self._memory: list[tuple[np.ndarray, np.ndarray]] | None = None
        if in_memory:
            self.load()

    def _open_snapshot(self) -> tuple[list[_Index], dict]:
        """Open the main file and the unmerged parts (handles kept open, so the snapshot
        holds even when a writer replaces the files); returns their indices and metadata."""
        main_exists = self.path.is_file()
        if not main_exists and not PartFiles(self.path).dir.is_dir():
            raise StoreError(f"{self.path}: no such pose store (create one with `heatvol import` "
                             f"or `heatvol extract`)")
        self._files: list[Path] = []
        self._inodes: list[int] = []
        indices, meta, merged_through = [], None, 0
        self.format_version = FORMAT_VERSION
        candidates = ([(None, self.path)] if main_exists else []) + PartFiles(self.path).list()
        for part_id, fpath in candidates:
            if part_id is not None and part_id <= merged_through:
                continue  # already merged; a compaction was killed before deleting it
            try:
                f = _open_h5(fpath)
            except StoreError:
                if not fpath.exists():
                    raise _Vanished() from None
                raise
            self._handles[len(self._files)] = f
            self._files.append(fpath)
            self._inodes.append(os.fstat(f.id.get_vfd_handle()).st_ino)
            try:
                version = self._check_format(f, fpath)
                if part_id is None:
                    self.format_version = version
                    merged_through = int(f.attrs.get("merged_through", 0))
                meta = _read_meta(f) or meta
                indices.append(_Index.read(f))
            except StoreError:
                raise
            except _READ_ERRORS as exc:
                raise StoreError(f"{fpath}: damaged pose store file: index or metadata cannot "
                                 f"be read ({_why(exc)})") from None
        if meta is None:
            raise StoreError(f"{self.path}: store holds no metadata (not a heatvol pose store?)")
        try:
            get_layout(meta["layout"])
            int(meta["dims"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.path}: damaged metadata ({_why(exc)})") from None
        return indices, meta

    @staticmethod
    def _check_format(f: h5py.File, path: Path) -> int:
        fmt = f.attrs.get("format")
        if fmt != FORMAT_NAME:
            raise StoreError(f"{path}: not a heatvol pose store (format attribute {fmt!r})")
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise StoreError(f"{path}: pose store format version {version} is newer than this "
                             f"heatvol understands ({FORMAT_VERSION}); upgrade heatvol")
        return version

    # -- handles ------------------------------------------------------------------------
    def _handle(self, i: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked (DataLoader worker): never share HDF5 handles
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(i)
        if h is None:
            h = _open_h5(self._files[i])
            if os.fstat(h.id.get_vfd_handle()).st_ino != self._inodes[i]:
                h.close()
                raise StoreError(f"{self._files[i]}: a writer replaced this file after the "
                                 f"store was opened; open the store again")
            self._handles[i] = h
        return h

    def load(self) -> PoseStore:
        """Read every file's arrays into memory (one read per array per file)."""
        if self._memory is None:
            self._memory = []
            for i in range(len(self._files)):
                f = self._handle(i)
                try:
                    self._memory.append((f["keypoints"][()], f["scores"][()]))
                except _READ_ERRORS as exc:
                    self._memory = None
                    raise StoreError(f"{self._files[i]}: damaged pose store file: its arrays "
                                     f"cannot be read ({_why(exc)}); `heatvol check` names the "
                                     f"sequences") from None
        return self

    def close(self) -> None:
        for h in getattr(self, "_handles", {}).values():
            h.close()
        self._handles = {}

    def __enter__(self) -> PoseStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index.name)

    def __contains__(self, name: object) -> bool:
        return name in self._position

    def __iter__(self) -> Iterator[PoseRecord]:
        for i in range(len(self)):
            yield self._record(i)

    def names(self) -> list[str]:
        return list(self._index.name)

    def __getitem__(self, key: str | int) -> PoseRecord:
        if isinstance(key, (int, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"{self.path}: index {key} out of range for {len(self)} sequences")
            return self._record(int(key) % len(self))
        try:
            return self._record(self._position[key])
        except KeyError:
            raise KeyError(f"{self.path}: no sequence named {key!r}") from None

    def _where(self, i: int) -> str:
        return f"{self._files[int(self._file_of[i])]}: sequence {self._index.name[i]!r}"

    def _read_rows(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sequence i's stored rows as they are: keypoints [M*T, K, C], scores [M*T, K];
        StoreError (file and sequence named) when they cannot be read."""
        ix, fi = self._index, int(self._file_of[i])
        m, t, off = int(ix.num_persons[i]), int(ix.num_frames[i]), int(ix.offset[i])
        k = self.layout.num_joints
        rows = slice(off, off + m * t)
        where = self._where(i)
        try:
            if self._memory is not None:
                kp, sc = self._memory[fi][0][rows], self._memory[fi][1][rows]
            elif m * t:
                f = self._handle(fi)
                kp, sc = f["keypoints"][rows], f["scores"][rows]
            else:
                kp, sc = np.zeros((0, k, self.dims), np.float32), np.zeros((0, k), np.float32)
            if kp.shape != (m * t, k, self.dims) or sc.shape != (m * t, k):
                raise ValueError(f"rows [{off}, {off + m * t}) do not fit the arrays")
        except StoreError:
            raise
        except _READ_ERRORS as exc:
            raise _DamagedRows(where, f"damaged, cannot be read ({_why(exc)})") from None
        return kp, sc

    def _record(self, i: int) -> PoseRecord:
        ix = self._index
        m, t, k = int(ix.num_persons[i]), int(ix.num_frames[i]), self.layout.num_joints
        kp, sc = self._read_rows(i)
        where = self._where(i)
        # Values written behind the writer's back (or damaged in a way the checksum misses)
        # must not reach a renderer or a picture: refuse them like a damaged chunk.
        bad = _check_values(where, kp, sc)
        if bad:
            raise StoreError(f"{bad} (damaged or written without heatvol; `heatvol check` "
                             f"lists every such sequence)")
        h, w = (int(v) for v in ix.img_shape[i])
        label = int(ix.label[i])
        classes = self._meta["classes"]
        return PoseRecord(name=ix.name[i], keypoints=kp.reshape(m, t, k, self.dims),
                          scores=sc.reshape(m, t, k), label=label,
                          img_shape=(h, w) if h > 0 and w > 0 else None,
                          fps=float(ix.fps[i]), source=ix.source[i],
                          class_name=classes[label] if 0 <= label < len(classes) else None)

    # -- columns (no array reads) -------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """int32 [N], -1 where unknown."""
        return self._index.label.copy()

    @property
    def num_frames(self) -> np.ndarray:
        return self._index.num_frames.copy()

    @property
    def num_persons(self) -> np.ndarray:
        return self._index.num_persons.copy()

    def split(self, name: str) -> list[str]:
        try:
            return list(self.splits[name])
        except KeyError:
            known = ", ".join(self.splits) or "none"
            raise KeyError(f"{self.path}: no split named {name!r} (splits: {known})") from None

    def summary(self) -> dict:
        """Everything ``heatvol info`` prints, as plain Python values."""
        ix = self._index
        counts = np.bincount(ix.label[ix.label >= 0], minlength=len(self.classes)) \
            if len(ix.label) else np.zeros(len(self.classes), int)
        persons = ix.num_persons
        return {
            "path": str(self.path),
            "kind": "poses",
            "format_version": self.format_version,
            "layout": self.layout.name,
            "joints": self.layout.num_joints,
            "dims": self.dims,
            "sequences": len(self),
            "frames": int(ix.num_frames.sum()),
            "frames_per_sequence": _stats(ix.num_frames),
            "persons_per_sequence": {str(int(m)): int(c) for m, c in
                                     zip(*np.unique(persons, return_counts=True))},
            "unlabelled": int((ix.label < 0).sum()),
            "classes": {name: int(counts[i]) for i, name in enumerate(self.classes)},
            "splits": {k: len(v) for k, v in self.splits.items()},
            "failures": dict(self.failures),
            "files": len(self._files),
        }

    def check(self) -> list[str]:
        """Validate every invariant; returns one line per problem (empty when the store is sound)."""
        problems: list[str] = []
        ix = self._index
        k, c = self.layout.num_joints, self.dims
        if c not in (2, 3):
            problems.append(f"dims is {c}, expected 2 or 3")
        seen = set(ix.name)
        for split, members in self.splits.items():
            missing = [n for n in members if n not in seen]
            if missing:
                problems.append(f"split {split!r}: {len(missing)} members not in the store "
                                f"(first: {missing[0]!r})")
            if len(set(members)) != len(members):
                problems.append(f"split {split!r}: duplicate members")
        bad_labels = ix.label < -1
        if self.classes:
            bad_labels |= ix.label >= len(self.classes)
        for i in np.flatnonzero(bad_labels)[:20]:
            problems.append(f"{ix.name[i]}: label {ix.label[i]} outside [-1, {len(self.classes)})")
        row_counts: dict[int, int] = {}
        for fi, fpath in enumerate(self._files):
            try:
                f = self._handle(fi)
                kp_ds, sc_ds = f["keypoints"], f["scores"]
                kp_shape, sc_shape = kp_ds.shape, sc_ds.shape
            except _READ_ERRORS as exc:
                problems.append(f"{fpath}: damaged, its arrays cannot be opened ({_why(exc)})")
                continue
            if kp_shape[1:] != (k, c) or sc_shape[1:] != (k,):
                problems.append(f"{fpath}: array shapes {kp_shape} / {sc_shape} do not "
                                f"match K={k}, C={c}")
                continue
            if kp_shape[0] != sc_shape[0]:
                problems.append(f"{fpath}: keypoints and scores row counts differ")
            row_counts[fi] = int(min(kp_shape[0], sc_shape[0]))
        for i in range(len(self)):
            name = ix.name[i]
            m, t = int(ix.num_persons[i]), int(ix.num_frames[i])
            if m < 0 or t < 1:
                problems.append(f"{name}: bad shape M={m}, T={t}")
                continue
            if int(self._file_of[i]) not in row_counts:
                problems.append(f"{name}: in a damaged file ({self._files[self._file_of[i]]})")
                continue
            rows = row_counts[int(self._file_of[i])]
            if ix.offset[i] < 0 or ix.offset[i] + m * t > rows:
                problems.append(f"{name}: rows [{ix.offset[i]}, {ix.offset[i] + m * t}) outside "
                                f"the array ({rows} rows)")
                continue
            try:
                kp, sc = self._read_rows(i)
            except _DamagedRows as exc:  # a damaged chunk: name the sequence and go on
                problems.append(f"{name}: {exc.reason}")
                continue
            if not np.isfinite(kp).all():
                problems.append(f"{name}: non-finite keypoints")
            elif kp.size and np.abs(kp).max() > COORD_LIMIT:
                problems.append(f"{name}: coordinates outside [-{COORD_LIMIT:g}, "
                                f"{COORD_LIMIT:g}] (max |value| {np.abs(kp).max():.3g})")
            if not (np.isfinite(sc).all() and (sc >= 0).all() and (sc <= 1).all()):
                problems.append(f"{name}: scores outside [0, 1]")
            img_shape = ix.img_shape[i]
            if c == 2 and not (img_shape > 0).all():
                problems.append(f"{name}: 2D sequence without img_shape")
            if not np.isfinite(ix.fps[i]) or ix.fps[i] < 0:
                problems.append(f"{name}: bad fps {ix.fps[i]}")
        return problems


def _stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {"min": int(values.min()), "median": float(np.median(values)),
            "mean": round(float(values.mean()), 2), "max": int(values.max())}


# --------------------------------------------------------------------------- writer


class PoseWriter:
    """Append sequences to a pose store, crash-safely. Importers and extraction share it.

    >>> with PoseWriter("poses.h5", layout="coco17", classes=["wave", "jump"]) as w:
    ...     w.append("clip01", keypoints, scores, label=0, img_shape=(1080, 1920), fps=30)
    ...     w.set_splits({"train": ["clip01"]})

    ``dims`` is 2 (pixels, the default for a new store) or 3. mode "a" (default) opens an existing store (or creates one); mode "w" starts an empty one,
    discarding what the path held. Appends are buffered; every ``commit_every`` sequences (and on
    ``commit()`` / ``close()``) the buffer becomes a durable part file. A sequence is in the
    store once the commit holding it returned: a process killed at any instant leaves a store
    that opens and holds exactly the committed sequences. ``close()`` merges the parts into the
    main file. Appending a name that exists replaces that sequence.

    Non-finite coordinates are stored as 0 with score 0 (missing), so every stored coordinate
    is finite. Only one writer may hold a store at a time (an advisory lock file beside it).
    """

    def __init__(self, path: str | os.PathLike, *, layout: str | Layout | None = None,
                 dims: int | None = None, classes: Iterable[str] | None = None,
                 mode: str = "a", commit_every: int = 256, compact_on_close: bool = True):
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        self.commit_every = max(1, int(commit_every))
        self.compact_on_close = compact_on_close
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parts = PartFiles(self.path)
        try:
            self._lock = WriterLock(self.path).acquire()
        except WriterBusy as exc:
            raise StoreError(f"{self.path}: another process is writing this store; wait for it "
                             f"to finish") from exc
        try:
            self._clean_leftovers()
            exists = self.path.is_file() or bool(self._parts.list())
            if exists and mode == "w":
                self._parts.remove_all()
                exists = False
            if exists:
                with PoseStore(self.path) as old:
                    meta = dict(old._meta)
                    self._names = set(old.names())
                    self._needs_compaction = bool(old._files[1:]) or not self.path.is_file()
                if layout is not None and get_layout(layout).name != meta["layout"]:
                    raise StoreError(f"{self.path}: store has layout {meta['layout']!r}, "
                                     f"not {get_layout(layout).name!r}")
                if dims is not None and int(dims) != int(meta["dims"]):
                    raise StoreError(f"{self.path}: store holds {meta['dims']}D keypoints, not {dims}D")
                self._meta_dirty = False
            else:
                if layout is None:
                    raise StoreError(f"{self.path}: a new store needs a layout")
                dims = 2 if dims is None else int(dims)
                if dims not in (2, 3):
                    raise ValueError(f"dims must be 2 or 3, got {dims}")
                meta = {"layout": get_layout(layout).name, "dims": int(dims), "classes": [],
                        "splits": {}, "failures": {}, "attrs": {}}
                self._names = set()
                self._needs_compaction = True
                self._meta_dirty = True
            self._meta = meta
            self.layout = get_layout(meta["layout"])
            if classes is not None:
                self.set_classes(classes)
            self._next_part = self._parts.next_id(self._merged_through())
            self._buffer: dict[str, tuple] = {}
            self._closed = False
            self._disk_full = False
            #: a line for the user when close() could not merge (a full disk), else None
            self.note: str | None = None
        except BaseException:
            self._lock.release()
            raise

    # -- locking and recovery ---------------------------------------------------------------
    def _merged_through(self) -> int:
        if not self.path.is_file():
            return 0
        with _open_h5(self.path) as f:
            return int(f.attrs.get("merged_through", 0))

    def _clean_leftovers(self) -> None:
        """Remove what a killed writer may have left: temporary files and merged parts."""
        self._parts.remove_temporaries()
        if self._parts.dir.is_dir():
            merged = self._merged_through()
            for pid, ppath in self._parts.list():
                if pid <= merged:
                    ppath.unlink(missing_ok=True)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self._meta["classes"])

    def set_classes(self, classes: Iterable[str]) -> None:
        classes = [str(c) for c in classes]
        if classes != self._meta["classes"]:
            self._meta["classes"] = classes
            self._meta_dirty = True

    def set_splits(self, splits: Mapping[str, Iterable[str]]) -> None:
        """Replace the named splits ({name: [sequence names]})."""
        new = {str(k): [str(n) for n in v] for k, v in splits.items()}
        if new != self._meta["splits"]:
            self._meta["splits"] = new
            self._meta_dirty = True

    def add_failure(self, name: str, reason: str) -> None:
        """Record that ``name`` could not be processed (shown by ``heatvol info``)."""
        self._meta["failures"][str(name)] = str(reason)
        self._meta_dirty = True

    def set_attrs(self, **attrs) -> None:
        self._meta["attrs"].update(attrs)
        self._meta_dirty = True

    def __contains__(self, name: str) -> bool:
        return name in self._names or name in self._buffer

    def names(self) -> set[str]:
        return self._names | set(self._buffer)

    # -- appending --------------------------------------------------------------------------
    def append(self, name: str, keypoints, scores=None, *, label: int = -1,
               img_shape: tuple[int, int] | None = None, fps: float = 0.0,
               source: str = "") -> None:
        """Add one sequence. keypoints [M, T, K, C] (float, pixels for 2D), scores [M, T, K] in
        [0, 1] (None: ones, for 3D data without scores). Raises ValueError naming the problem."""
        if self._closed:
            raise StoreError(f"{self.path}: writer is closed")
        if not isinstance(name, str) or not name:
            raise ValueError(f"sequence name must be a non-empty string, got {name!r}")
        kp = np.asarray(keypoints, dtype=np.float32)
        k = self.layout.num_joints
        if kp.ndim != 4 or kp.shape[2] != k or kp.shape[3] not in (2, 3):
            raise ValueError(f"{name}: keypoints must be [M, T, {k}, 2 or 3], got {list(kp.shape)}")
        m, t, _, c = kp.shape
        if t < 1:
            raise ValueError(f"{name}: sequence has no frames")
        dims = self._meta["dims"]
        if c != dims:
            raise ValueError(f"{name}: keypoints have C={c}, the store holds {dims}D keypoints")
        if scores is None:
            if c == 2:
                raise ValueError(f"{name}: 2D keypoints need scores")
            sc = np.ones((m, t, k), np.float32)
        else:
            sc = np.asarray(scores, dtype=np.float32)
        if sc.shape != (m, t, k):
            raise ValueError(f"{name}: scores must be {[m, t, k]}, got {list(sc.shape)}")
        if not np.isfinite(sc).all() or (sc < 0).any() or (sc > 1).any():
            raise ValueError(f"{name}: scores must be finite and in [0, 1]")
        if c == 2:
            if img_shape is None or len(img_shape) != 2 or min(img_shape) <= 0:
                raise ValueError(f"{name}: 2D keypoints need img_shape (H, W) > 0, got {img_shape!r}")
        ncls = len(self._meta["classes"])
        label = int(label)
        if label < -1 or (ncls and label >= ncls):
            raise ValueError(f"{name}: label {label} outside [-1, {ncls})")
        bad = ~np.isfinite(kp).all(axis=-1)
        finite = kp[~bad]
        if finite.size and np.abs(finite).max() > COORD_LIMIT:
            raise ValueError(f"{name}: coordinates must lie in [-{COORD_LIMIT:g}, "
                             f"{COORD_LIMIT:g}] (NaN marks a missing joint); got "
                             f"{finite.flat[np.abs(finite).argmax()]:.3g}")
        if bad.any():
            kp = kp.copy()
            sc = sc.copy()
            kp[bad] = 0.0
            sc[bad] = 0.0
        if self._meta["failures"].pop(name, None) is not None:  # it worked this time
            self._meta_dirty = True
        self._buffer.pop(name, None)  # re-appending within a batch keeps the newest
        self._buffer[name] = (kp, sc, label, tuple(img_shape) if img_shape else (0, 0),
                              float(fps), str(source))
        if len(self._buffer) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Make everything appended so far durable (one new part file)."""
        if not self._buffer and not self._meta_dirty:
            return
        names = list(self._buffer)
        entries = [self._buffer[n] for n in names]
        k, c = self.layout.num_joints, self._meta["dims"]
        kp = np.concatenate([e[0].reshape(-1, k, c) for e in entries]) if entries \
            else np.zeros((0, k, c), np.float32)
        sc = np.concatenate([e[1].reshape(-1, k) for e in entries]) if entries \
            else np.zeros((0, k), np.float32)
        rows = np.array([e[0].shape[0] * e[0].shape[1] for e in entries], np.int64)
        index = _Index(
            name=names, source=[e[5] for e in entries],
            offset=np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64) if entries
            else np.zeros(0, np.int64),
            num_persons=np.array([e[0].shape[0] for e in entries], np.int32),
            num_frames=np.array([e[0].shape[1] for e in entries], np.int32),
            label=np.array([e[2] for e in entries], np.int32),
            img_shape=np.array([e[3] for e in entries], np.int32).reshape(-1, 2),
            fps=np.array([e[4] for e in entries], np.float32))
        def build(f: h5py.File) -> None:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["part_id"] = self._next_part
            _create_rows(f, "keypoints", kp)
            _create_rows(f, "scores", sc)
            index.write(f)
            if self._meta_dirty:
                _write_meta(f, self._meta)

        try:
            self._parts.write_part(self._next_part, build)
        except OSError as exc:
            if not is_disk_full(exc):
                raise StoreError(f"{self.path}: cannot write ({exc})") from None
            # What is buffered is lost (a rerun redoes it); nothing committed is touched.
            self._disk_full = True
            self._buffer.clear()
            raise StoreError(f"{self.path}: no space left on device; {len(self._names)} "
                             f"sequences kept, rerun to continue") from None
        self._next_part += 1
        self._names.update(names)
        self._buffer.clear()
        self._meta_dirty = False
        self._needs_compaction = True

    def compact(self) -> None:
        """Merge the main file and all parts into a new main file, replacing it atomically."""
        self.commit()
        if not self._needs_compaction:
            return
        merged_through = self._next_part - 1
        with PoseStore(self.path) as src:
            merged = self._parts.write_main(lambda dst: self._build_main(dst, src, merged_through),
                                            size_hint=self._parts.size())
        if not merged:
            self.note = (f"{self.path}: parts not merged (no space left on device for the merge); "
                         f"the store is complete and readable as it is, the next write merges it")
            return
        self._parts.remove_merged(merged_through)
        self._needs_compaction = False

    def _build_main(self, dst: h5py.File, src: PoseStore, merged_through: int) -> None:
        """Fill a new main file ``dst`` with every sequence of ``src`` (the main file's arrays
        copied chunk by chunk without recompression, then the parts' rows appended)."""
        dst.attrs["format"] = FORMAT_NAME
        dst.attrs["format_version"] = FORMAT_VERSION
        dst.attrs["merged_through"] = merged_through
        k, c = src.layout.num_joints, src.dims
        keep_all_of_main = bool(src._files) and src._files[0] == self.path
        new_offsets = np.zeros(len(src), np.int64)
        start_row = 0
        if keep_all_of_main:
            # Fast path: copy the old main arrays chunk by chunk without recompressing;
            # rows of superseded sequences stay behind as unreferenced rows.
            fmain = src._handle(0)
            dst.copy(fmain["keypoints"], "keypoints")
            dst.copy(fmain["scores"], "scores")
            in_main = src._file_of == 0
            new_offsets[in_main] = src._index.offset[in_main]
            start_row = dst["keypoints"].shape[0]
        else:
            _create_rows(dst, "keypoints", np.zeros((0, k, c), np.float32))
            _create_rows(dst, "scores", np.zeros((0, k), np.float32))
        row = start_row
        for fi in range(1 if keep_all_of_main else 0, len(src._files)):
            sel = np.flatnonzero(src._file_of == fi)
            if not len(sel):
                continue
            f = src._handle(fi)
            kp_all, sc_all = f["keypoints"][()], f["scores"][()]
            pieces_kp, pieces_sc = [], []
            for i in sel:
                off = int(src._index.offset[i])
                n = int(src._index.num_persons[i]) * int(src._index.num_frames[i])
                pieces_kp.append(kp_all[off:off + n])
                pieces_sc.append(sc_all[off:off + n])
                new_offsets[i] = row
                row += n
            kp_new, sc_new = np.concatenate(pieces_kp), np.concatenate(pieces_sc)
            for ds_name, data in (("keypoints", kp_new), ("scores", sc_new)):
                ds = dst[ds_name]
                old = ds.shape[0]
                ds.resize(old + len(data), axis=0)
                ds[old:] = data
        index = src._index.take(np.arange(len(src)))
        index.offset = new_offsets
        index.write(dst)
        _write_meta(dst, self._meta)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if not self._disk_full:
                self.commit()
                if self.compact_on_close:
                    self.compact()
        finally:
            self._closed = True
            if not self.path.is_file():  # nothing ever committed (a full disk): no empty folder
                with contextlib.suppress(OSError):
                    self._parts.dir.rmdir()
            self._lock.release()

    def __enter__(self) -> PoseWriter:
        return self

    def __exit__(self, *exc) -> None:
        # Also on errors and Ctrl-C: the buffer holds only fully appended sequences, keep them.
        self.close()
