"""The batched GPU pipeline behind ``heatvol render --render-device cuda`` (design in
``docs/gpu.md``): pose pipelines on the CPU, pinned staging, one stream, asynchronous copies.
"""

from __future__ import annotations

import queue

import numpy as np

from .backends import render_cuda_into, select_backend
from .volume import check_request

__all__ = ["render_on_gpu"]


def render_on_gpu(store, todo, put, inputs_of, render_kwargs: dict, *, num_clips: int,
                  clip_len: int, batch_size: int, allow_simulator: bool) -> None:
    """Batches of samples: pose pipeline on the CPU, staging into pinned memory, H2D copy,
    render and D2H copy queued on one stream; the writer thread waits for each batch's event
    and compresses while the next batches are prepared and rendered.

    Persons are padded to the batch's largest M with score 0 (missing: nothing drawn), which
    leaves every volume unchanged. Three pinned output buffers rotate: a batch waits for a
    free one, so at most three batches are in flight.

    ``inputs_of(record)``: the sample's (keypoints [clips, M, T, K, 2], scores [clips, M, T, K])
    float32. ``put(job)``: hands a batch to the writer; ``job()`` (called on the writer's thread) waits
    for the batch's copy and returns [(name, volume [clips, C, T, H, W], label)]."""
    from numba import cuda

    rk = render_kwargs
    lay = rk["layout"]
    select_backend("cuda-simulator" if allow_simulator else "cuda")  # one line if unusable
    limbs, height, width, channels, sigma, dtype = check_request(
        (1, 0, clip_len, lay.num_joints, 2), (1, 0, clip_len, lay.num_joints), np.float32,
        np.float32, batched=True, size=rk["size"], sigma=rk["sigma"], mode=rk["mode"],
        layout=lay, dtype=rk["dtype"])
    bits = dtype == np.float16
    store_dtype = np.uint16 if bits else dtype
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
        inputs = [inputs_of(r) for r in recs]
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
        render_cuda_into(d_kp, d_sc, d_limbs, d_out, sigma, bool(rk.get("use_score", True)),
                         dtype=np.dtype(dtype).name, stream=stream,
                         allow_simulator=allow_simulator)
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

        put(job)
