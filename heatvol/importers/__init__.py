"""Import public skeleton datasets into a pose store, and export a store as a pyskl pickle.

>>> from heatvol.importers import import_dataset, export_pyskl
>>> report = import_dataset("penn-action", "data/penn_action", "penn.h5")
>>> report.imported, report.skipped_existing, report.problems
(2326, 0, [])
>>> export_pyskl("penn.h5", "penn.pkl")      # number of annotations written
2326

Formats (``FORMATS``; one module each, documented there):

================== ============================================= ========== ====
format             source                                        layout     dims
================== ============================================= ========== ====
penn-action        folder of Penn Action ``NNNN.mat``            penn13     2
nw-ucla            folder of NW-UCLA ``aXX_sYY_eZZ_vWW.json``    kinect20   3
pyskl              one pyskl / mmaction2 annotation pickle       from V     2/3
ntu                folder of NTU RGB+D ``.skeleton`` files       ntu25      3
kinetics-skeleton  ST-GCN Kinetics-skeleton JSON folder          openpose18 2
================== ============================================= ========== ====

Behaviour shared by every format (``import_dataset``):

- Sequence names are the source file stems (pyskl: ``frame_dir``).
- Resume: when ``out`` already holds a store (and ``overwrite`` is False), sequences whose
  name is in it are skipped without being read again, so re-running a killed import finishes
  the rest. ``overwrite=True`` empties the store first.
- A bad file never stops the import: it becomes one ``"FILE: problem"`` line in
  ``ImportReport.problems`` (and is passed to ``on_problem``, and recorded in the store's
  ``failures``), and the other files are imported. A file that loads but in which no joint is
  present in any frame (all coordinates NaN, or every score 0) is imported and listed in
  ``ImportReport.all_missing`` (and passed to ``on_notice``). ``strict=True`` raises
  :class:`ImportFailed` at the first problem instead; everything appended before it stays in
  the store (the writer is closed properly, with classes and splits set).
- Classes, splits, layout and dims are set on the store. Splits hold every sequence of the
  store, the skipped ones included; splits of an existing store are kept and extended.
- 3D formats without per-joint confidences (NW-UCLA, NTU, pyskl 3D) mark a joint as missing
  (score 0) exactly when its coordinates are (0, 0, 0), and present (score 1) otherwise: a
  Kinect joint at the camera centre is a hole in the data, and the rule makes a 3D store
  survive ``export_pyskl`` (whose 3D annotations carry no scores) and re-import unchanged.

- Sequences are committed to the store every 1,024 sequences, 64 MB or 30 s, whichever
  comes first (``COMMIT_EVERY_*``): a killed import loses at most that much work. Splits are
  written when the import ends (also on errors and Ctrl-C); after a hard kill, a resumed
  import takes the skipped sequences' splits from their names, or re-reads the file when the
  split is inside it (Penn Action's ``train`` flag).

Errors: ``ValueError`` for an unknown format or an unusable ``layout``; :class:`ImportFailed`
when the source cannot be read at all (missing folder, no files, unreadable pickle), when an
existing store holds another dataset's classes, or, with ``strict``, at the first bad file;
``heatvol.store.StoreError`` when ``out`` cannot be written (another writer holds it, it
holds a different layout / dimensionality, or the disk is full: then the message says how many
sequences are kept, and a rerun continues from them).

A format module provides ``open_source(src: Path, *, layout: str | None) -> Source``: the
entries (name, file, payload) it offers, its layout, dims, classes and splits, and a ``load``
function turning one entry into a :class:`~heatvol.store.PoseRecord` (raising :class:`SourceProblem`, or any
parser error, for a bad file). The driver here does resume, problems, commits and metadata.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..store import PoseRecord

__all__ = ["FORMATS", "ImportReport", "ImportFailed", "import_dataset", "export_pyskl",
           "Entry", "Source", "SourceProblem"]

#: format name -> one-line description (the CLI lists these).
FORMATS: dict[str, str] = {
    "penn-action": "Penn Action: folder of NNNN.mat files (2D, 13 joints, 15 classes, train/test)",
    "nw-ucla": "Northwestern-UCLA: folder of aXX_sYY_eZZ_vWW.json skeletons (3D Kinect, 20 joints, "
               "10 classes, cross-view train/test)",
    "pyskl": "pyskl / mmaction2 annotation pickle, incl. the compressed Kinetics form (2D or 3D; "
             "pickle runs code: only load files you trust)",
    "ntu": "NTU RGB+D 60/120: folder of .skeleton files (3D, 25 joints, xsub/xview[/xset] splits)",
    "kinetics-skeleton": "ST-GCN Kinetics-skeleton: folder of per-video JSON (2D OpenPose, "
                         "18 joints; kinetics_train/ + kinetics_val/ give train/val splits)",
}

_MODULES = {"penn-action": "penn_action", "nw-ucla": "nw_ucla", "pyskl": "pyskl", "ntu": "ntu",
            "kinetics-skeleton": "kinetics_skeleton"}

# Commit a part file every this many sequences, buffered bytes or seconds, whichever comes
# first: parts are cheap (one HDF5 file each), so this bounds both the work a killed import
# loses and the writer's memory, without making a 2,326-file import pay for many fsyncs.
COMMIT_EVERY_SEQUENCES = 1024
COMMIT_EVERY_BYTES = 64 << 20
COMMIT_EVERY_SECONDS = 30.0


class ImportFailed(Exception):
    """An import stopped; ``str()`` is one line ``"FILE: problem"``."""

    def __init__(self, line: str):
        super().__init__(_one_line(line))


class SourceProblem(Exception):
    """Raised by a format's loader for a bad file; the message is the problem (no file name)."""


@dataclass
class ImportReport:
    """What ``import_dataset`` did. ``problems``: one ``"FILE: problem"`` line per bad file."""

    imported: int = 0
    skipped_existing: int = 0
    problems: list[str] = field(default_factory=list)
    #: ``"FILE: what is missing"`` per imported sequence in which no joint is present in any
    #: frame (e.g. a Penn Action file whose x is all NaN): imported, but worth a look.
    all_missing: list[str] = field(default_factory=list)
    #: a line for the user when the store's parts could not be merged (a full disk), else None
    note: str | None = None


@dataclass(frozen=True)
class Entry:
    """One sequence a source offers, known before reading it.

    name:    the sequence name in the store (file stem; pyskl: frame_dir)
    where:   the file (and, for a pickle, the annotation) named in problem lines
    splits:  the splits it belongs to when that follows from the name, else None (the loader
             tells, in ``PoseRecord.splits``)
    payload: whatever the format's loader needs (a path, an annotation dict)
    """

    name: str
    where: str
    splits: tuple[str, ...] | None = None
    payload: Any = None


@dataclass
class Source:
    """What a format module's ``open_source(src, layout)`` returns.

    classes:     the class names, or None when they are learnt from the files while loading
                 (``PoseRecord.class_name``).
    split_names: the splits this source defines, in order (created even when empty).
    problems:    lines found while listing the source (bad file names, dangling split members).
    """

    layout: str
    dims: int
    entries: list[Entry]
    load: Callable[[Entry], PoseRecord]
    classes: list[str] | None
    split_names: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    unit: str = "file"


# --------------------------------------------------------------------------- helpers for formats


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n")).replace("\r", " ").strip()


def problem_line(where: str, exc: BaseException) -> str:
    """``"FILE: problem"`` for an exception raised while loading ``where``."""
    if isinstance(exc, SourceProblem):
        return _one_line(f"{where}: {exc}")
    # Parsers' own errors (scipy, json, numpy) are kept, with their type for context.
    return _one_line(f"{where}: {type(exc).__name__}: {exc}")


def scores_from_zero_rule(keypoints: np.ndarray) -> np.ndarray:
    """Scores for 3D keypoints without confidences: float32 [..., K] from [..., K, 3];
    0 where all three coordinates are exactly 0 (a hole in the data), else 1."""
    return np.any(keypoints != 0, axis=-1).astype(np.float32)


def list_files(folder: Path, pattern: str) -> list[Path]:
    """Files in ``folder`` matching ``pattern``, sorted by name (so imports are reproducible);
    raises ImportFailed when the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportFailed(f"{folder}: no such folder")
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise ImportFailed(f"{folder}: no {pattern} files")
    return files


def check_layout(fmt: str, native: str, requested: str | None) -> str:
    """Formats with a fixed skeleton accept ``layout`` only when it names that skeleton."""
    if requested is not None:
        from ..layouts import layout as get_layout
        if get_layout(requested).name != native:
            raise ValueError(f"{fmt} data is always in the {native!r} layout, not {requested!r}")
    return native


def _is_placeholder(index: int, name: str) -> bool:
    return name == f"class_{index}"


# --------------------------------------------------------------------------- the import driver


def import_dataset(fmt: str, src: str | Path, out: str | Path, *, strict: bool = False,
                   overwrite: bool = False, progress: bool = True,
                   on_problem: Callable[[str], None] | None = None,
                   layout: str | None = None,
                   on_notice: Callable[[str], None] | None = None) -> ImportReport:
    """Import the dataset at ``src`` (format ``fmt``, a key of ``FORMATS``) into the pose
    store ``out``; see the module docstring for resume, problems and ``strict``.

    layout: for ``pyskl``, the skeleton layout name when it is not the one inferred from the
    joint count V; other formats accept only their own layout.
    on_problem: called with each problem line as it is found (not with ``strict``, which
    raises ImportFailed with that line instead).
    on_notice: called with each ``all_missing`` line.
    """
    from ..progress import progress as progress_display
    from ..store import PoseStore, PoseWriter

    fmt_key = str(fmt).strip().lower().replace("_", "-")
    if fmt_key not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r}; known: {', '.join(FORMATS)}")
    module = importlib.import_module(f"{__name__}.{_MODULES[fmt_key]}")
    source: Source = module.open_source(Path(src), layout=layout)

    report = ImportReport()
    failures: dict[str, str] = {}
    bar = progress_display(source.entries, desc=f"import {fmt_key}", unit=source.unit,
                           enabled=progress)

    def say(callback, line: str) -> None:
        if callback is not None:
            with bar.external_write():  # keep a progress bar intact while the callback prints
                callback(line)

    def notice(line: str) -> None:
        report.all_missing.append(line)
        say(on_notice, line)

    def problem(line: str, name: str | None = None) -> None:
        line = _one_line(line)
        if strict:
            raise ImportFailed(line)
        report.problems.append(line)
        if name is not None:
            failures[name] = line.partition(": ")[2] or line
        say(on_problem, line)

    for line in source.problems:
        problem(line)

    writer = PoseWriter(out, layout=source.layout, dims=source.dims,
                        mode="w" if overwrite else "a",
                        commit_every=1 << 62)  # committed below, by count, bytes and time
    # What the store already holds (resume): names, split membership and classes.
    membership: dict[str, tuple[str, ...]] = {}
    split_names: list[str] = []
    existing_names: set[str] = set(writer.names())
    try:
        if existing_names:
            with PoseStore(out) as old:
                split_sets = {s: set(v) for s, v in old.splits.items()}
                split_names = list(old.splits)
                for name in old.names():
                    membership[name] = tuple(s for s in split_names if name in split_sets[s])
        split_names += [s for s in source.split_names if s not in split_names]
        classes = _Classes(writer, source.classes, out)
        with bar:
            _run(source, writer, classes, existing_names, membership, report, problem,
                 notice, bar)
    finally:
        # Also on ImportFailed, other errors and Ctrl-C: what was appended stays, with
        # metadata that matches it (splits list only sequences that are in the store).
        try:
            in_store = writer.names()
            splits: dict[str, list[str]] = {s: [] for s in split_names}
            for name, member_of in membership.items():
                if name in in_store:
                    for s in member_of:
                        if s in splits:
                            splits[s].append(name)
            writer.set_splits(splits)
            for name, reason in failures.items():
                writer.add_failure(name, reason)
        finally:
            writer.close()
    report.note = writer.note
    return report


def _run(source: Source, writer, classes: _Classes, existing_names: set[str],
         membership: dict[str, tuple[str, ...]], report: ImportReport,
         problem: Callable[..., None], notice: Callable[[str], None], entries) -> None:
    """Load and append every entry of ``entries`` (the source's, through a progress
    display); fills ``membership`` and ``report``."""
    seen_where: dict[str, str] = {}
    pending_count = pending_bytes = 0
    last_commit = time.monotonic()
    for entry in entries:
        if entry.name in seen_where:
            problem(f"{entry.where}: duplicate sequence name {entry.name!r} "
                    f"(also {seen_where[entry.name]}); skipped")
            continue
        seen_where[entry.name] = entry.where

        if entry.name in existing_names:
            report.skipped_existing += 1
            if entry.splits is not None:
                membership[entry.name] = entry.splits
            elif not membership.get(entry.name):
                # The split is inside the file and the store does not know it (a killed
                # import commits sequences before it writes splits): read the file again.
                try:
                    membership[entry.name] = source.load(entry).splits
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
                    problem(problem_line(entry.where, exc))
            continue

        try:
            seq = source.load(entry)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            problem(problem_line(entry.where, exc), entry.name)
            continue
        conflict = classes.learn(seq)
        if conflict:
            problem(f"{entry.where}: {conflict}", entry.name)
            continue
        try:
            writer.append(entry.name, seq.keypoints, seq.scores, label=seq.label,
                          img_shape=seq.img_shape, fps=seq.fps, source=seq.source)
        except ValueError as exc:  # the store's own checks (score range, shapes, label)
            problem(f"{entry.where}: {exc}", entry.name)
            continue
        membership[entry.name] = entry.splits if entry.splits is not None else seq.splits
        report.imported += 1
        missing = _nothing_present(seq)
        if missing:
            notice(f"{entry.where}: {missing}; imported with every joint missing")

        pending_count += 1
        pending_bytes += seq.keypoints.nbytes + seq.scores.nbytes
        if (pending_count >= COMMIT_EVERY_SEQUENCES or pending_bytes >= COMMIT_EVERY_BYTES
                or time.monotonic() - last_commit >= COMMIT_EVERY_SECONDS):
            writer.commit()
            pending_count = pending_bytes = 0
            last_commit = time.monotonic()


def _nothing_present(seq: PoseRecord) -> str | None:
    """Why no joint of ``seq`` is present in any frame (in words), or None when one is."""
    kp, sc = np.asarray(seq.keypoints), np.asarray(seq.scores)
    if kp.shape[0] == 0:
        return None  # nobody in it: a legitimate empty sequence (M = 0)
    finite = np.isfinite(kp).all(axis=-1)
    if ((sc > 0) & finite).any():
        return None
    if not finite.any():
        return "no joint has finite coordinates in any frame (all NaN or infinite)"
    if not (sc > 0).any():
        return "every score is 0"
    return "no joint has both finite coordinates and a score above 0"


class _Classes:
    """The store's class list: fixed by the format, or learnt from (index, name) pairs."""

    def __init__(self, writer, fixed: list[str] | None, out):
        self.writer = writer
        existing = writer.classes
        if fixed is not None:
            fixed = list(fixed)
            # Growing (NTU60 -> NTU120, pyskl labels) is fine; anything else is another dataset.
            if existing and existing[:len(fixed)] == fixed:
                fixed = existing
            elif existing and fixed[:len(existing)] != existing:
                raise ImportFailed(f"{out}: the store's classes ({len(existing)}: "
                                   f"{', '.join(existing[:3])}, ...) are not this dataset's; "
                                   f"import into a new store or overwrite")
            writer.set_classes(fixed)
            self.names = None
        else:
            self.names = {i: n for i, n in enumerate(existing) if not _is_placeholder(i, n)}
            self.count = len(existing)

    def learn(self, seq: PoseRecord) -> str | None:
        """Record the sequence's class; returns a problem text on a name conflict."""
        if self.names is None or seq.label < 0:
            return None
        known = self.names.get(seq.label)
        if seq.class_name is not None and known is not None and known != seq.class_name:
            return (f"label index {seq.label} is named {seq.class_name!r} here but {known!r} "
                    f"in other files")
        changed = False
        if seq.class_name is not None and known is None:
            self.names[seq.label] = seq.class_name
            changed = True
        if seq.label >= self.count:
            self.count = seq.label + 1
            changed = True
        if changed:
            self.writer.set_classes(self.names.get(i, f"class_{i}") for i in range(self.count))
        return None


# --------------------------------------------------------------------------- export


def export_pyskl(store: str | Path, out: str | Path) -> int:
    """Write the store as a pyskl annotation pickle; returns the number of annotations.
    See :func:`heatvol.importers.pyskl.export_pyskl`."""
    from .pyskl import export_pyskl as _export

    return _export(store, out)

