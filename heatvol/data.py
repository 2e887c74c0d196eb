"""Training and test data from a pose store: keypoint pipeline, then volumes rendered on the fly.

Two interchangeable places to render (``render_device=``, :mod:`heatvol.params`' word):

- ``"cpu"``: :class:`PoseDataset` renders each sample's volume with the Numba kernels inside
  the DataLoader worker; a batch is ``{"volume": [B, C, T, H, W], "label": [B]}``.
- ``"cuda"``: the workers only sample and transform keypoints; a batch is
  ``{"keypoints": [B, M, T, K, 2], "scores": [B, M, T, K], "label": [B]}`` and the training
  step renders it on the device with a :class:`StepRenderer` (``render_device="cuda"`` on
  CUDA tensors, straight into the input tensor; ``"cpu"`` or ``"reference"`` there is a host
  stand-in, used by the tests on machines without a GPU).

For the same seed both give the same model input: the keypoints are identical and padding
persons with score 0 draws nothing (:func:`model_input` turns either batch into the input).

The graph models read coordinates instead: :class:`SkeletonDataset` gives
``{"skeleton": [B, M, T, V, C], "label": [B]}`` (2D normalised with the score channel, or 3D
centred; a modality of :data:`heatvol.skeleton.MODALITIES`).

Randomness: sample ``index`` of epoch ``epoch`` draws every random choice (frames, crop,
flip) from its own ``numpy.random.Generator`` seeded by ``(seed, epoch, index)``
(:func:`sample_rng`), so results do not depend on the number of workers, on their
scheduling, or on where a run was resumed. :class:`ResumableSampler` yields ``(epoch, index)``
pairs from a per-epoch permutation, also seeded by ``(seed, epoch)``, and starts at a saved
position; with ``world_size > 1`` each rank takes every ``world_size``-th sample of the
(padded) permutation, like ``torch.utils.data.DistributedSampler``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import numpy as np

from .fused import FusedPipeline
from .layouts import Layout, layout as get_layout
from .params import check_mode, parse_size
from .skeleton import (MODALITIES as SKELETON_MODALITIES, align_3d, center_3d, flip_skeleton,
                       normalize_2d, random_rotate, random_scale, to_modality)
from .transforms import (Clip, Compose, clips_first, test_pipeline,
                         train_pipeline, uniform_sample_indices, valid_mask)

__all__ = ["sample_rng", "PoseDataset", "SkeletonDataset", "ResumableSampler", "StepRenderer",
           "model_input"]

#: Where a :class:`PoseDataset` leaves rendering: in its worker ("cpu") or to the step ("cuda").
_DATASET_RENDER_DEVICES = ("cpu", "cuda")


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``: independent of workers and resumes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0, int(epoch), int(index)]))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` samples in ``epoch`` (int64 [n])."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(epoch)]))
    return rng.permutation(n).astype(np.int64)


def _fixed_persons(keypoints: np.ndarray, scores: np.ndarray, max_persons: int):
    """[M, T, K, D], [M, T, K] -> exactly ``max_persons`` persons: the ones with the highest
    summed score (in their stored order), padded with zero-score persons (which draw nothing)."""
    m = keypoints.shape[0]
    if m > max_persons:
        total = scores.reshape(m, -1).sum(axis=1)
        keep = np.sort(np.argsort(-total, kind="stable")[:max_persons])
        keypoints, scores = keypoints[keep], scores[keep]
    elif m < max_persons:
        pad = max_persons - m
        keypoints = np.concatenate([keypoints, np.zeros((pad,) + keypoints.shape[1:],
                                                        keypoints.dtype)])
        scores = np.concatenate([scores, np.zeros((pad,) + scores.shape[1:], scores.dtype)])
    return np.ascontiguousarray(keypoints, np.float32), np.ascontiguousarray(scores, np.float32)


def _img_shape(record) -> tuple[int, int]:
    if record.img_shape is not None:
        return record.img_shape
    kp = record.keypoints[record.scores > 0]
    if kp.size == 0:
        return (1, 1)
    return int(np.ceil(kp[:, 1].max())) + 1, int(np.ceil(kp[:, 0].max())) + 1


class _NameArray:
    """Sequence names as one UTF-8 buffer (uint8) and end offsets (int64).

    A list of N ``str`` is N Python objects whose reference counts a forked DataLoader worker
    writes to as it reads them, copying its parent's pages one by one (the memory "leak" of
    pytorch/pytorch#13246); two NumPy arrays are never written, so their pages stay shared.
    """

    def __init__(self, names: Sequence[str]):
        encoded = [str(n).encode("utf-8") for n in names]
        self._ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, count=len(encoded)))
        self._buffer = np.frombuffer(b"".join(encoded), np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        i = int(i)
        start = int(self._ends[i - 1]) if i else 0
        return self._buffer[start:int(self._ends[i])].tobytes().decode("utf-8")

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]


class _StoreSequences:
    """What a dataset keeps of its store: the path, the names (:class:`_NameArray`) and the
    labels (int64 [N]), and the store opened once in each process.

    The process that built the dataset reads through the store it was given. Any other
    process (a DataLoader worker, forked or spawned) opens ``PoseStore(path)`` itself, not in
    memory, on its first item: no HDF5 handle crosses a fork, a worker reads only the
    sequences of its batches, and nothing in it grows with the dataset but the store's index.
    """

    def _bind_store(self, store, names: Sequence[str]) -> None:
        self._store, self._store_pid = store, os.getpid()
        self.store_path = str(store.path)
        names = list(names)
        position = {n: i for i, n in enumerate(store.names())}  # temporary, this process only
        missing = next((n for n in names if n not in position), None)
        if missing is not None:
            raise KeyError(f"{store.path}: no sequence named {missing!r}")
        rows = np.fromiter((position[n] for n in names), np.int64, count=len(names))
        del position
        # Labels from the index column: no sequence is read to build the dataset.
        self.labels = np.asarray(store.labels, np.int64)[rows]
        self._names = _NameArray(names)

    @property
    def store(self):
        """The open :class:`~heatvol.PoseStore` of this process."""
        if self._store is None or self._store_pid != os.getpid():
            from .store import PoseStore

            self._store, self._store_pid = PoseStore(self.store_path), os.getpid()
        return self._store

    @property
    def names(self) -> list[str]:
        """The sequence names, in dataset order (a new list)."""
        return self._names.tolist()

    def __len__(self) -> int:
        return len(self._names)

    def _record(self, index: int):
        return self.store[self._names[index]]

    def __getstate__(self):
        # spawn / forkserver workers: the store is reopened by path in the worker.
        state = dict(self.__dict__)
        state["_store"] = None
        return state


class PoseDataset(_StoreSequences):
    """Samples of a pose store for training (random pipeline) or testing (deterministic).

    Args:
        store: an open :class:`heatvol.PoseStore`, used in this process (``in_memory=True``
            pays off only for a small store read without workers); DataLoader workers open the
            store by its path themselves and read only the sequences of their batches.
        names: the sequences (e.g. ``store.split("train")``); kept as NumPy arrays, with the
            labels (``labels`` int64 [N], from the store's index: building a dataset reads
            no sequence).
        train: PoseC3D's train pipeline (uniform sampling, subject crop, random resized crop,
            flip) or its test pipeline (``num_clips`` clips, subject crop, resize).
        clip_len, size: frames per clip; heatmap size (H, W) (an int: square).
        mode: ``"joint"`` or ``"limb"`` heatmaps (:data:`heatvol.params.MODES`).
        render_device: ``"cpu"`` (volumes rendered here) or ``"cuda"`` (keypoints only,
            rendered in the step; see module). ``render=`` ("cpu"/"gpu") is its former name.
        max_persons: persons per sample after selection/padding (fixed so batches stack).
        seed: the run's seed (train mode).
        volume_dtype: what rendered volumes are handed over in: "float32" (default, what a
            CPU model consumes), "float16" (float16 rounding, relative error <= 2**-11; half
            the bytes through the loader, pinned memory and the host-to-device copy; for a
            GPU model under bfloat16 autocast, whose convolutions see bfloat16 anyway) or
            "uint8" (round(v * 255), a quarter of the bytes, 2e-3 absolute).
            :func:`model_input` converts to float32 on the model's device.
        flip: (testing) every clip also comes mirrored: volumes [2 * clips, C, T, H, W], the
            plain clips then their mirrors, rendered by the kernels in one pass
            (``render_batch(..., flip=True)``: exactly ``flip_volume`` of the plain volumes).
            Keypoint items (cuda) stay [clips, ...]: the step renderer flips them.

    Items are fetched with an ``(epoch, index)`` pair (what :class:`ResumableSampler` yields)
    or a plain index (epoch 0). Train items: ``volume`` float32 [C, T, H, W] (cpu) or
    ``keypoints`` [M, T, K, 2] + ``scores`` [M, T, K] (cuda), and ``label``. Test items have a
    leading clips axis: [clips, C, T, H, W] ([2 * clips, ...] with ``flip``) or
    [clips, M, T, K, 2].
    """

    def __init__(self, store, names: Sequence[str], *, train: bool, clip_len: int,
                 size: int | tuple[int, int], mode: str = "joint", render_device: str = "cpu",
                 num_clips: int = 1, max_persons: int = 2, sigma: float = 0.6, seed: int = 0,
                 area_range=(0.56, 1.0), render: str | None = None, flip: bool = False,
                 volume_dtype: str = "float32"):
        check_mode(mode)
        if render is not None:  # the former name, kept for one release
            warnings.warn("PoseDataset(render=...) is deprecated; use render_device= "
                          "('gpu' is now 'cuda')", DeprecationWarning, stacklevel=2)
            render_device = "cuda" if render == "gpu" else render
        if render_device not in _DATASET_RENDER_DEVICES:
            raise ValueError(f"render_device must be one of {', '.join(_DATASET_RENDER_DEVICES)} "
                             f"(resolve 'auto' first); got {render_device!r}")
        if store.dims != 2:
            raise ValueError(f"{store.path}: heatmap volumes need 2D keypoints; this store is "
                             f"{store.dims}D")
        if train and (num_clips != 1 or flip):
            raise ValueError("training samples one unflipped clip per sequence (num_clips=1)")
        self.flip = bool(flip)
        self._bind_store(store, names)
        self.layout: Layout = get_layout(store.layout)
        self.train, self.clip_len, self.mode = train, int(clip_len), mode
        self.size = parse_size(size)
        self.render_device = render_device
        self.num_clips, self.max_persons = int(num_clips), int(max_persons)
        self.sigma, self.seed = float(sigma), int(seed)
        if volume_dtype not in ("float32", "float16", "uint8"):
            raise ValueError(f"volume_dtype must be float32, float16 or uint8; got "
                             f"{volume_dtype!r}")
        self.volume_dtype = volume_dtype
        self.pipeline: Compose = (train_pipeline(self.clip_len, self.size, self.layout,
                                                 area_range=tuple(area_range))
                                  if train else test_pipeline(self.clip_len, self.num_clips,
                                                              self.size))
        # What items run: the same transforms in one pass, bit-equal to self.pipeline.
        self._fused = FusedPipeline(self.pipeline)
        self._renderer = None
        if render_device == "cpu":
            from .render import Renderer

            # arguments checked once, not per item
            self._renderer = Renderer(size=self.size, sigma=self.sigma, mode=self.mode,
                                      layout=self.layout, render_device="cpu", flip=self.flip,
                                      dtype=self.volume_dtype)

    @property
    def channels(self) -> int:
        return self.layout.channels(self.mode)

    def keypoints(self, epoch: int, index: int):
        """The transformed keypoints of one item: ([clips, M, T, K, 2], [clips, M, T, K])."""
        rec = self._record(index)
        kp, sc = rec.keypoints[..., :2], rec.scores
        if kp.shape[0] == 0 or kp.shape[1] == 0:  # nothing detected: an all-missing person
            t = max(kp.shape[1], 1)
            kp = np.zeros((1, t, self.layout.num_joints, 2), np.float32)
            sc = np.zeros((1, t, self.layout.num_joints), np.float32)
        rng = sample_rng(self.seed, epoch, index) if self.train else None
        clip = self._fused(Clip(kp, sc, _img_shape(rec)), rng)
        kp, sc = _fixed_persons(clip.keypoints, clip.scores, self.max_persons)
        kp, sc = clips_first(kp, self.num_clips), clips_first(sc, self.num_clips)
        return np.ascontiguousarray(kp), np.ascontiguousarray(sc)

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        index = int(index)
        kp, sc = self.keypoints(int(epoch), index)
        label = int(self.labels[index])
        if self._renderer is None:  # rendered in the step
            out = {"keypoints": kp, "scores": sc}
        else:
            out = {"volume": self._renderer(kp, sc)}
        if self.train:  # drop the clips axis
            out = {k: v[0] for k, v in out.items()}
        out["label"] = label
        out["index"] = index
        return out


class SkeletonDataset(_StoreSequences):
    """Samples of a pose store as GCN inputs (coordinates, not heatmaps).

    Per sequence: the ``max_persons`` persons with the highest summed score (zero persons pad
    the rest); 2D stores: :func:`~heatvol.skeleton.normalize_2d` by the image shape (x, y in
    [-1, 1], score channel), 3D stores: :func:`~heatvol.skeleton.center_3d` on the layout's
    centre joint, then with ``align`` :func:`~heatvol.skeleton.align_3d` (one canonical
    view); training only: random rotation (``rotate`` radians, one limit or three for
    x, y, z in 3D; 0 = off) and scaling
    (``scale``, 0 = off); the ``modality``; PoseC3D's uniform sampling of ``clip_len`` frames
    (random in training, ``num_clips`` deterministic clips in testing; sequences shorter
    than ``clip_len`` loop). With ``flip`` (testing) every clip also comes mirrored.

    Items: ``skeleton`` float32 [M, T, V, C] (train) or [views * clips, M, T, V, C] (test;
    C = 3), ``label``, ``index``. Fetched with ``(epoch, index)`` pairs as
    :class:`PoseDataset`, whose randomness rules it shares.
    """

    def __init__(self, store, names: Sequence[str], *, train: bool, clip_len: int,
                 modality: str = "joint", num_clips: int = 1, max_persons: int = 2,
                 rotate: float = 0.0, scale: float = 0.0, align: bool = False,
                 flip: bool = False, seed: int = 0):
        if modality not in SKELETON_MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(SKELETON_MODALITIES)}; got "
                             f"{modality!r}")
        if train and (num_clips != 1 or flip):
            raise ValueError("training samples one unflipped clip per sequence")
        self._bind_store(store, names)
        self.layout: Layout = get_layout(store.layout)
        self.dims = int(store.dims)
        if align and (self.dims != 3 or self.layout.spine is None):
            raise ValueError(f"align needs a 3D store whose layout has spine and shoulder joints; "
                             f"{store.path} is {self.dims}D {self.layout.name}")
        self.align = bool(align)
        self.train, self.clip_len, self.modality = train, int(clip_len), modality
        self.num_clips, self.max_persons = int(num_clips), int(max_persons)
        self.rotate = tuple(rotate) if isinstance(rotate, (list, tuple)) else float(rotate)
        self.scale, self.flip = float(scale), bool(flip)
        self.seed = int(seed)

    channels = 3

    def skeleton(self, epoch: int, index: int) -> np.ndarray:
        """The input of one item: [M, T, V, 3] (train) or [views * clips, M, T, V, 3]."""
        rec = self._record(index)
        kp, sc = rec.keypoints, rec.scores
        v = self.layout.num_joints
        if kp.shape[0] == 0 or kp.shape[1] == 0:  # nothing detected: an all-missing person
            t = max(kp.shape[1], 1)
            kp = np.zeros((1, t, v, self.dims), np.float32)
            sc = np.zeros((1, t, v), np.float32)
        kp, sc = _fixed_persons(kp, sc, self.max_persons)
        present = valid_mask(kp, sc)
        if self.dims == 2:
            x = normalize_2d(kp, sc, _img_shape(rec))
        else:
            x = center_3d(kp, sc, self.layout.center)
            if self.align:
                x = align_3d(x, present, self.layout)
        rng = sample_rng(self.seed, epoch, index) if self.train else None
        if self.train and np.any(np.asarray(self.rotate) > 0):
            x = random_rotate(x, rng, self.rotate, dims=self.dims)
        if self.train and self.scale > 0:
            x = random_scale(x, rng, self.scale, dims=self.dims)
        views = [(x, present)]
        if self.flip:
            views.append((flip_skeleton(x, self.layout), present[..., self.layout.flip_index()]))
        views = [to_modality(view, seen, self.modality, self.layout, has_score=self.dims == 2)
                 for view, seen in views]
        t = x.shape[1]
        if self.train:
            return np.ascontiguousarray(
                views[0][:, uniform_sample_indices(t, self.clip_len, train=True, rng=rng)])
        idx = uniform_sample_indices(t, self.clip_len, num_clips=self.num_clips, train=False)
        clips = [clips_first(view[:, idx], self.num_clips) for view in views]
        return np.ascontiguousarray(np.concatenate(clips))

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        index = int(index)
        return {"skeleton": self.skeleton(int(epoch), index),
                "label": int(self.labels[index]), "index": index}


class ResumableSampler:
    """Yields ``(epoch, index)`` pairs of one epoch, starting at a saved position.

    The order is :func:`epoch_permutation` (``shuffle=True``) or 0..n-1, padded by wrapping
    to a multiple of ``world_size``; rank ``r`` takes positions ``r, r + world, ...``.
    ``position`` counts this rank's samples already consumed in ``epoch``; the training loop
    advances it after each optimiser step (:meth:`advance`) so a checkpoint stores exactly
    where the data stream stands, whatever the DataLoader has prefetched.
    """

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.n, self.seed, self.shuffle = int(num_samples), int(seed), shuffle
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self.position = 0, 0

    @property
    def per_rank(self) -> int:
        return math.ceil(self.n / self.world_size) if self.n else 0

    def indices(self, epoch: int) -> np.ndarray:
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle \
            else np.arange(self.n, dtype=np.int64)
        total = self.per_rank * self.world_size
        if total > self.n:
            order = np.concatenate([order, order[:total - self.n]])
        return order[self.rank:total:self.world_size]

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        self.epoch, self.position = int(epoch), int(position)

    def advance(self, count: int) -> None:
        self.position += int(count)

    def __iter__(self):
        epoch = self.epoch
        for index in self.indices(epoch)[self.position:].tolist():
            yield epoch, index

    def __len__(self) -> int:
        return max(self.per_rank - self.position, 0)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "seed": self.seed,
                "shuffle": self.shuffle, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("n", "seed", "shuffle", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"sampler state was saved with {key}={state[key]!r}, this run "
                                 f"has {getattr(self, key)!r}: resume with the same data, seed "
                                 f"and number of processes")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class StepRenderer:
    """Renders a batch of keypoints inside the training/test step (a run's
    ``render_device="cuda"``).

    ``render_device="cuda"`` (the real thing): keypoints and scores are moved to the CUDA
    ``device`` and :func:`heatvol.render_batch` writes the volumes straight into a CUDA tensor
    (no heatmap touches host memory). ``"cpu"`` or ``"reference"`` render on the host and move
    the result to ``device``: a stand-in that lets the same code path run and be tested
    without a GPU (``backend=`` is the former name of ``render_device=``).
    """

    def __init__(self, *, size: int | tuple[int, int], mode: str, layout, sigma: float = 0.6,
                 render_device: str = "cuda", backend: str | None = None):
        if backend is not None:  # the former name, kept for one release
            warnings.warn("StepRenderer(backend=...) is deprecated; use render_device=",
                          DeprecationWarning, stacklevel=2)
            render_device = backend
        if render_device not in ("cuda", "cpu", "reference"):
            raise ValueError(f"render_device must be cuda, cpu or reference; got "
                             f"{render_device!r}")
        self.size, self.mode = parse_size(size), check_mode(mode)
        self.layout, self.sigma = get_layout(layout), sigma
        self.render_device = render_device

    def __call__(self, keypoints, scores, device, *, flip: bool = False):
        """keypoints [..., M, T, K, 2] torch tensor -> volumes [..., C, T, H, W] on ``device``
        (with ``flip``: [2, ..., C, T, H, W], the plain volumes then their mirrors, from the
        kernels' test-time flip)."""
        import torch

        from .render import render_batch

        lead = tuple(keypoints.shape[:-4])
        kp = keypoints.reshape((-1,) + tuple(keypoints.shape[-4:]))
        sc = scores.reshape((-1,) + tuple(scores.shape[-3:]))
        if self.render_device == "cuda":
            device = torch.device(device)
            if device.type != "cuda":
                raise RuntimeError(f"--render-device cuda renders on a CUDA device inside the "
                                   f"step; the device is {device} (use --render-device cpu)")
            kp = kp.to(device, non_blocking=True)
            sc = sc.to(device, non_blocking=True)
            vol = render_batch(kp, sc, size=self.size, sigma=self.sigma, mode=self.mode,
                               layout=self.layout, render_device="cuda", flip=flip)
        else:
            vol = torch.from_numpy(render_batch(kp.numpy(), sc.numpy(), size=self.size,
                                                sigma=self.sigma, mode=self.mode,
                                                layout=self.layout,
                                                render_device=self.render_device, flip=flip))
            vol = vol.to(device, non_blocking=True)
        return vol.reshape((2,) * flip + lead + tuple(vol.shape[1:]))


def model_input(batch: dict, device, renderer: StepRenderer | None = None):
    """The input tensor for the model from any kind of batch, on ``device``; float16/uint8
    volumes (``PoseDataset(volume_dtype=...)``) become float32 there (uint8 as v / 255)."""
    import torch

    for key in ("volume", "skeleton"):
        if key in batch:
            x = batch[key].to(device, non_blocking=True)
            if key == "volume" and x.dtype == torch.uint8:
                return x.float().div_(255.0)
            if key == "volume" and x.dtype == torch.float16:
                return x.float()
            return x
    if renderer is None:
        raise ValueError("a keypoint batch (render_device='cuda') needs a StepRenderer")
    return renderer(batch["keypoints"], batch["scores"], device)
