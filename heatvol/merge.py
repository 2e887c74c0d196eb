"""Join pose stores, or volume files, into one (``heatvol merge OUT PARTS...``).

Used by the last shard of a sharded run (:mod:`heatvol.shard`) and by hand. The parts must
agree on what they are (layout, dimensions, classes, splits, extractor for stores; every render
setting for volume files); a sequence must be in exactly one part; with the shard manifests
(``PART.manifest.json``) every name a shard was given must be in its part (as a sequence, or
as a failure recorded by extraction) and every shard of the job must be there. Anything else
stops the merge with one line naming the file and the sequence, before ``OUT`` is touched.

The merged output equals what one process makes: sequences in the order one process writes
them (the job's order recorded in the manifests; without manifests, the parts' order as given,
then each part's own order), the same arrays, index columns and metadata for stores, and the
same compressed chunks (copied as they are, never recompressed) for volume files. It is built
under ``OUT.merging`` and renamed into place, so a killed merge leaves ``OUT`` as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MergeError", "merge_parts", "output_names", "remove_part_files", "shard_path",
           "manifest_path", "done_path"]


def shard_path(out: str | os.PathLike, index: int, count: int) -> Path:
    """Where shard ``index`` (from 0) of ``count`` writes: ``OUT.shard-K-of-N``."""
    out = Path(out)
    return out.with_name(f"{out.name}.shard-{index}-of-{count}")


def manifest_path(part: str | os.PathLike) -> Path:
    """The names a shard was given, their places in the job, the job's fingerprint."""
    part = Path(part)
    return part.with_name(part.name + ".manifest.json")


def done_path(part: str | os.PathLike) -> Path:
    """Present once the shard has finished."""
    part = Path(part)
    return part.with_name(part.name + ".done")


class MergeError(Exception):
    """Parts that cannot be merged; the message (one line) names the file and the sequence."""


def remove_part_files(parts: Sequence[str | os.PathLike]) -> None:
    """Remove merged parts: each file with its unmerged parts, shard manifest and done marker
    (the done marker first, so a half-removed shard never counts as done)."""
    from .parts import PartFiles

    for part in parts:
        done_path(part).unlink(missing_ok=True)
        PartFiles(part).remove_all()
        manifest_path(part).unlink(missing_ok=True)


def _exists(path: Path) -> bool:
    from .parts import PartFiles

    return path.exists() or PartFiles(path).dir.is_dir()


def _kind(path: Path) -> str:
    from .volumes import is_volume_file

    return "volumes" if is_volume_file(path) else "poses"


def output_names(path: str | os.PathLike, kind: str | None = None) -> set[str]:
    """Names a store (sequences and recorded failures) or a volume file holds."""
    from .store import PoseStore
    from .volumes import VolumeFile

    path = Path(path)
    if (kind or _kind(path)) == "volumes":
        with VolumeFile(path) as vf:
            return set(vf.names())
    with PoseStore(path) as store:
        return set(store.names()) | set(store.failures)


def _manifests(parts: list[Path]) -> list[dict] | None:
    found = []
    for p in parts:
        m = manifest_path(p)
        if not m.is_file():
            found.append(None)
            continue
        try:
            found.append(json.loads(m.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise MergeError(f"{m}: unreadable shard manifest ({exc})") from None
    if all(m is None for m in found):
        return None
    if any(m is None for m in found):
        p = parts[found.index(None)]
        raise MergeError(f"{p}: has no shard manifest ({manifest_path(p).name}) while other "
                         f"parts have one; merge the shards of one job together")
    first = found[0]
    shards: dict[int, Path] = {}
    for p, m in zip(parts, found):
        if m.get("job") != first.get("job") or m.get("count") != first.get("count"):
            raise MergeError(f"{p}: shard of another job than {parts[0]} (other inputs, "
                             f"settings or shard count)")
        k = int(m["shard"])
        if k in shards:
            raise MergeError(f"{p}: shard {k}/{m['count']} given twice (also {shards[k]})")
        shards[k] = p
    count = int(first["count"])
    for k in range(count):
        if k not in shards:
            out = parts[0].with_name(first.get("out", "OUT"))
            raise MergeError(f"{shard_path(out, k, count)}: shard {k}/{count} is missing from "
                             f"the merge")
    return found


def merge_parts(out: str | os.PathLike, parts: Sequence[str | os.PathLike], *,
                overwrite: bool = False) -> dict:
    """Merge ``parts`` (pose stores, or volume files) into ``out``; see the module docstring.
    Returns {"kind", "sequences", "failures", "parts"}. Raises MergeError (one line)."""
    from .store import StoreError

    out = Path(out)
    parts = [Path(p) for p in parts]
    if not parts:
        raise MergeError("no parts to merge")
    if out.resolve() in {p.resolve() for p in parts}:
        raise MergeError(f"{out}: is one of the parts; merge into another file")
    if _exists(out) and not overwrite:
        raise MergeError(f"{out}: exists; remove it or pass --overwrite")
    manifests = _manifests(parts)
    present: list[tuple[Path, dict | None]] = []
    for i, p in enumerate(parts):
        m = manifests[i] if manifests else None
        if not _exists(p):
            if m is not None and not m["names"]:
                continue  # a shard given nothing writes nothing
            raise MergeError(f"{p}: no such pose store or volume file")
        present.append((p, m))
    if not present:
        raise MergeError(f"{parts[0]}: the parts hold nothing to merge")
    kinds = {p: _kind(p) for p, _ in present}
    kind = kinds[present[0][0]]
    for p, k in kinds.items():
        if k != kind:
            raise MergeError(f"{p}: is a {'volume file' if k == 'volumes' else 'pose store'}, "
                             f"{present[0][0]} is not; merge one kind at a time")
    try:
        if kind == "volumes":
            return _merge_volumes(out, present, overwrite)
        return _merge_stores(out, present, overwrite)
    except StoreError as exc:
        raise MergeError(str(exc)) from None


def _owner_and_order(present, names_of) -> tuple[list[tuple[str, int]], dict]:
    """[(name, part index)] in the single-process order; checks doubles and misses."""
    owner: dict[str, int] = {}
    for i, (p, _) in enumerate(present):
        for n in names_of(i):
            if n in owner:
                raise MergeError(f"sequence {n!r} is in both {present[owner[n]][0]} and {p}")
            owner[n] = i
    position: dict[str, int] = {}
    for i, (p, m) in enumerate(present):
        if m is None:
            continue
        given = m["names"]
        have = set(names_of(i))
        for n, pos in zip(given, m["positions"]):
            if n not in have:
                raise MergeError(f"sequence {n!r} of shard {m['shard']}/{m['count']} is missing "
                                 f"from {p} (rerun that shard to finish it)")
            position[n] = int(pos)
        extra = have - set(given)
        if extra:
            raise MergeError(f"{p}: holds sequence {sorted(extra)[0]!r}, which shard "
                             f"{m['shard']}/{m['count']} was not given")
    order = list(owner.items())  # parts' order as given, then each part's own order
    if position:
        order.sort(key=lambda item: position[item[0]])
    return order, owner


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished merge ``tmp`` into place as ``out``."""
    from .parts import PartFiles, fsync_dir

    if PartFiles(tmp).list():
        raise MergeError(f"{out}: the merge could not be compacted (no space left on device?); "
                         f"{tmp} holds it as parts")
    if overwrite:
        PartFiles(out).remove_all()  # an old store's parts must not be read with the new file
    os.replace(tmp, out)
    fsync_dir(out.parent)


def _merge_stores(out: Path, present, overwrite: bool) -> dict:
    from .store import PoseStore, PoseWriter

    stores = [PoseStore(p) for p, _ in present]
    try:
        first, fpath = stores[0], present[0][0]
        attrs: dict = {}
        failures: dict[str, str] = {}
        for s, (p, _) in zip(stores, present):
            for what, a, b in (("layout", s.layout.name, first.layout.name),
                               ("dimensions", s.dims, first.dims),
                               ("classes", s.classes, first.classes)):
                if a != b:
                    raise MergeError(f"{p}: {what} {a!r} differ from {fpath}'s {b!r}")
            for split in sorted(set(s.splits) | set(first.splits)):
                if s.splits.get(split) != first.splits.get(split):
                    raise MergeError(f"{p}: split {split!r} differs from {fpath}'s")
            for key, value in s.attrs.items():
                if key not in attrs:
                    attrs[key] = value
                elif isinstance(value, dict) and isinstance(attrs[key], dict):
                    # per-sequence tables join; a key both parts hold must agree (settings)
                    clash = next((k for k in value if k in attrs[key]
                                  and value[k] != attrs[key][k]), None)
                    if clash is not None:
                        raise MergeError(f"{p}: attribute {key}[{clash!r}] = {value[clash]!r} "
                                         f"differs from the other parts' "
                                         f"{attrs[key][clash]!r}")
                    attrs[key] = {**attrs[key], **value}
                elif value != attrs[key]:
                    raise MergeError(f"{p}: attribute {key!r} = {value!r} differs from the "
                                     f"other parts' {attrs[key]!r}")
            failures.update(s.failures)

        def names_of(i):
            return list(stores[i].names()) + [n for n in stores[i].failures
                                              if n not in stores[i]]

        order, _ = _owner_and_order(present, names_of)
        tmp = out.with_name(out.name + ".merging")
        sequences = 0
        with PoseWriter(tmp, layout=first.layout.name, dims=first.dims, classes=first.classes,
                        mode="w", commit_every=1024) as w:  # "w": drops a killed merge's files
            w.set_splits(first.splits)
            if attrs:
                w.set_attrs(**attrs)
            for name, i in order:
                s = stores[i]
                if name not in s:
                    w.add_failure(name, failures[name])
                    continue
                rec = s[name]
                w.append(name, rec.keypoints, rec.scores, label=rec.label,
                         img_shape=rec.img_shape, fps=rec.fps, source=rec.source)
                sequences += 1
        _install(tmp, out, overwrite)
    finally:
        for s in stores:
            s.close()
    return {"kind": "poses", "sequences": sequences, "failures": len(failures),
            "parts": len(present)}


def _merge_volumes(out: Path, present, overwrite: bool) -> dict:
    from .volumes import VolumeFile, VolumeWriter

    files = [VolumeFile(p) for p, _ in present]
    try:
        first, fpath = files[0], present[0][0]
        for vf, (p, _) in zip(files, present):
            for key in sorted(set(vf.settings) | set(first.settings)):
                if vf.settings.get(key) != first.settings.get(key):
                    raise MergeError(f"{p}: rendered with {key} = {vf.settings.get(key)!r}, "
                                     f"{fpath} with {first.settings.get(key)!r}")
        order, _ = _owner_and_order(present, lambda i: files[i].names())
        # The first part's codec (one job's parts share it); a part written with another codec
        # (a merge by hand) has its samples decoded and encoded again, nothing else is.
        tmp = out.with_name(out.name + ".merging")
        # overwrite: drops a killed merge's files, under the writer's lock (a second merge into
        # the same OUT at the same time is refused, never clobbered)
        with VolumeWriter(tmp, first.settings, overwrite=True, commit_every=64,
                          codec=first.codec) as w:
            for name, i in order:
                vf = files[i]
                mask, chunk = vf.raw_chunk(name)
                same = vf.codec == first.codec and not mask
                # The compressed chunk as it is: byte-equal to the part's, never recompressed.
                w.append(name, chunk if same else vf[name], vf.label(name))
        _install(tmp, out, overwrite)
    finally:
        for vf in files:
            vf.close()
    return {"kind": "volumes", "sequences": len(order), "failures": 0, "parts": len(present)}
