"""Crash-safe part files: how the pose store and the volume files make appends durable.

A file ``X.h5`` that is appended to is never modified in place. Each batch of appends becomes an
immutable *part* ``X.h5.parts/part-00000007.h5``: written under a temporary name, fsynced, then
renamed into place (a rename is atomic), and the folder fsynced. A reader sees the main file
plus every part not yet merged into it. Merging writes a new main file under a temporary name
(``X.h5.tmp-PID``) that records ``merged_through`` (the last part id it holds) and atomically
replaces the old one; the merged parts are removed afterwards. A process killed at any instant
therefore leaves the committed batches readable, and the next writer cleans up what it left.

One writer per file: :class:`WriterLock` is an advisory lock file beside it (``X.h5.lock``).

A full disk never reaches libhdf5 (which can crash the process when a write fails): a part is
built as an in-memory HDF5 image (:func:`h5_image`) and written with plain Python I/O, so a full
disk is a clean ``OSError`` (:func:`is_disk_full`) and the temporary file is removed. A merge
builds the new main file in memory too when it is small (``IN_MEMORY_MERGE_BYTES``); a larger
one is written by libhdf5 only after :func:`has_space` found room for it, otherwise the caller
leaves the parts as they are (readers read them) and says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["PartFiles", "WriterLock", "WriterBusy", "read_snapshot", "fsync_file", "fsync_dir",
           "h5_image", "write_bytes", "is_disk_full", "has_space", "IN_MEMORY_MERGE_BYTES"]

PART_RE = re.compile(r"^part-(\d{8})\.h5$")

#: A merged main file up to this size is built in memory and written with plain I/O.
IN_MEMORY_MERGE_BYTES = 512 << 20

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_disk_full(exc: BaseException) -> bool:
    """True for the OSErrors of a full disk, an exhausted quota or a file-size limit."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def has_space(folder: Path, nbytes: int) -> bool:
    """Whether ``folder``'s file system has ``nbytes`` free, with 10% + 1 MiB to spare."""
    return shutil.disk_usage(folder).free >= int(nbytes * 1.1) + (1 << 20)


def h5_image(build: Callable) -> bytes:
    """The bytes of an HDF5 file that ``build(f)`` fills, made in memory (libhdf5's core
    driver, nothing on disk). The image is byte-identical to the file libhdf5 would write."""
    import h5py

    f = h5py.File(f"heatvol-image-{os.getpid()}-{id(build)}.h5", "w", driver="core",
                  backing_store=False, locking=False)
    try:
        build(f)
        f.flush()
        return f.id.get_file_image()
    finally:
        f.close()


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` with plain I/O (a full disk is an OSError)."""
    with open(path, "wb") as out:
        view = memoryview(data)
        while view:
            view = view[out.write(view):]


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fsync_file(path)  # a folder is fsynced through a read-only descriptor, like a file


class PartFiles:
    """The part files of ``path`` (``path.parts/part-NNNNNNNN.h5``) and their life cycle."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.dir = self.path.with_name(self.path.name + ".parts")

    def list(self) -> list[tuple[int, Path]]:
        """(part id, path) of every finished part, in id order."""
        if not self.dir.is_dir():
            return []
        found = []
        for entry in self.dir.iterdir():
            match = PART_RE.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def next_id(self, merged_through: int) -> int:
        """The id of the next part: after every part and after what the main file holds."""
        return max([pid for pid, _ in self.list()] + [int(merged_through)]) + 1

    @contextlib.contextmanager
    def new_part(self, part_id: int) -> Iterator[Path]:
        """Yield a temporary path to write part ``part_id`` to; on success it becomes durable
        under its final name. On an error (a full disk...) the temporary file is removed."""
        self.dir.mkdir(exist_ok=True)
        final = self.dir / f"part-{part_id:08d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        try:
            yield tmp
            fsync_file(tmp)
            os.rename(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.dir)

    @contextlib.contextmanager
    def new_main(self) -> Iterator[Path]:
        """Yield a temporary path for a new main file; on success it atomically replaces the old
        one. On an error the temporary file is removed and the old main file stays."""
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            yield tmp
            fsync_file(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)

    def write_part(self, part_id: int, build: Callable) -> Path:
        """Build part ``part_id`` in memory with ``build(h5py.File)`` and make it durable;
        a full disk raises OSError (see :func:`is_disk_full`) and leaves nothing behind."""
        image = h5_image(build)
        with self.new_part(part_id) as tmp:
            write_bytes(tmp, image)
        return self.dir / f"part-{part_id:08d}.h5"

    def write_main(self, build: Callable, size_hint: int) -> bool:
        """Build a new main file with ``build(h5py.File)`` and atomically replace the old one.

        ``size_hint``: about how large it will be (the files it merges). Up to
        ``IN_MEMORY_MERGE_BYTES`` it is built in memory and written with plain I/O; a larger
        one is written by libhdf5 once :func:`has_space` found room. Returns False, changing
        nothing, when the disk is too full (the caller keeps its parts)."""
        if size_hint <= IN_MEMORY_MERGE_BYTES:
            image = h5_image(build)
            try:
                with self.new_main() as tmp:
                    write_bytes(tmp, image)
            except OSError as exc:
                if is_disk_full(exc):
                    return False
                raise
            return True
        if not has_space(self.path.parent, size_hint):
            return False
        import h5py

        with self.new_main() as tmp, h5py.File(tmp, "w", locking=False) as f:
            build(f)
        return True

    def size(self) -> int:
        """Bytes of the main file and every part (what a merge reads)."""
        total = self.path.stat().st_size if self.path.is_file() else 0
        for _, part in self.list():
            with contextlib.suppress(OSError):
                total += part.stat().st_size
        return total

    def remove_temporaries(self) -> None:
        """Remove the temporary files a killed writer left (main ``.tmp-PID``, parts ``.tmp``)."""
        for tmp in self.path.parent.glob(self.path.name + ".tmp-*"):
            tmp.unlink(missing_ok=True)
        if self.dir.is_dir():
            for tmp in self.dir.glob("*.tmp"):
                tmp.unlink(missing_ok=True)

    def remove_merged(self, merged_through: int) -> None:
        """Remove the parts the main file already holds, and the folder once it is empty."""
        for pid, part in self.list():
            if pid <= merged_through:
                part.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def remove_all(self) -> None:
        """Remove the main file and every part (an overwrite)."""
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class WriterBusy(Exception):
    """Another process holds the writer lock of this file."""


class WriterLock:
    """An exclusive advisory lock ``path.lock``: one writer per file at a time.

    ``acquire()`` raises :class:`WriterBusy` at once (it never waits) when another process
    holds it. The lock file is removed on release, while still held."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise WriterBusy(f"{self.path}: another process is writing this file; wait for "
                                 f"it to finish") from None
            try:
                if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                    self._fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)  # the previous holder removed that lock file meanwhile: take the new one

    def release(self) -> None:
        if self._fd is not None:
            self.lock_path.unlink(missing_ok=True)  # while still holding it
            os.close(self._fd)
            self._fd = None


#: How often a reader takes its snapshot of the files again when a writer's merge swaps them.
OPEN_ATTEMPTS = 5


def read_snapshot(path: Path, take, close, *, vanished: tuple[type[BaseException], ...],
                  error: type[Exception]):
    """``take()`` (open the main file and every part, read their index), retried: a writer's
    merge replaces the main file and then deletes the parts it merged, so a reader listing the
    files in between finds one gone (``vanished``). ``close()`` runs after every failed try;
    after OPEN_ATTEMPTS an ``error`` names the file."""
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return take()
        except vanished:
            close()
            if attempt == OPEN_ATTEMPTS - 1:
                raise error(f"{path}: files kept changing while opening (a writer is merging); "
                            f"try again") from None
            time.sleep(0.05 * (attempt + 1))
        except BaseException:
            close()
            raise
