import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HEATVOL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_data(sub: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (the shared data folder sits beside the repo)")
    return path


# --------------------------------------------------------------------------- shared stores
# Builders of small synthetic pose stores used by several test files (a test module never
# imports another test module; they import these from conftest).


def person_like(rng, m, t, k=17, h=240, w=320):
    """Random skeleton-sized clouds of joints moving a little, some missing: (keypoints
    float32 [m, t, k, 2], scores float32 [m, t, k])."""
    import numpy as np

    centre = rng.uniform([60, 60], [w - 60, h - 60], size=(m, 1, 1, 2))
    kp = centre + rng.normal(0, 25, size=(m, t, k, 2)) + np.linspace(0, 20, t)[None, :, None, None]
    sc = rng.uniform(0.2, 1.0, size=(m, t, k))
    sc[rng.random((m, t, k)) < 0.1] = 0
    return kp.astype(np.float32), sc.astype(np.float32)


@pytest.fixture
def small_store(tmp_path):
    """40 coco17 sequences of 0-2 persons (M = 0 included) and 5-64 frames, 3 classes; splits
    train (25) / test (15)."""
    import zlib

    import numpy as np

    from heatvol import PoseWriter

    path = tmp_path / "poses.h5"
    with PoseWriter(path, layout="coco17", classes=["a", "b", "c"]) as w:
        for i in range(40):
            rng = np.random.default_rng(zlib.crc32(f"q{i}".encode()))
            m, t = i % 3, 5 + (i * 7) % 60  # includes M = 0 and clips shorter than clip_len
            w.append(f"q{i:02d}", *person_like(rng, m, t), label=i % 3, img_shape=(240, 320))
        names = [f"q{i:02d}" for i in range(40)]
        w.set_splits({"train": names[:25], "test": names[25:]})
    return path


def make_oscillating_store(path, n_train=12, n_test=6, classes=3, seed=0, persons=1):
    """A learnable coco17 store: sequences whose joints oscillate along x or y at a
    class-dependent frequency; splits train / test; img_shape 64 x 64."""
    import numpy as np

    import heatvol

    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 44, size=(17, 2)).astype(np.float32)
    splits = {"train": [], "test": []}
    with heatvol.PoseWriter(path, layout="coco17", classes=[f"c{i}" for i in range(classes)],
                            mode="w") as w:
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                label = i % classes
                t = int(rng.integers(6, 20))
                phase = np.linspace(0, 2 * np.pi, t, dtype=np.float32)
                d = np.zeros((persons, t, 1, 2), np.float32)
                d[..., 0, label % 2] = 8 * np.sin(phase * (1 + label // 2))
                kp = base + d + rng.normal(0, 0.5, (persons, t, 17, 2)).astype(np.float32)
                sc = rng.uniform(0.5, 1.0, (persons, t, 17)).astype(np.float32)
                name = f"{split}{i:03d}"
                w.append(name, kp, sc, label=label, img_shape=(64, 64))
                splits[split].append(name)
        w.set_splits(splits)
    return Path(path)


def messy_pose(seed, m, t, k, dims, img=(48, 64), far=1e30):
    """Keypoints [M, T, K, dims] with ~20% missing joints, some NaN / inf and off-frame ones
    (``far``: the value of the farthest off-frame coordinate)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = img
    kp = rng.uniform(-0.3, 1.3, (m, t, k, dims)) * np.array([w, h, 3.0][:dims])
    sc = rng.uniform(0.05, 1.0, (m, t, k))
    sc[rng.random((m, t, k)) < 0.2] = 0
    bad = rng.random((m, t, k)) < 0.05
    kp[bad, 0] = rng.choice([np.nan, np.inf, -np.inf, far], size=bad.sum())
    return kp.astype(np.float32), sc.astype(np.float32)


def make_messy_store(path, dims, n=6, persons=2, lay="kinect20"):
    """A store of :func:`messy_pose` sequences (2D or 3D; off-frame values within the store's
    +-1e6 coordinate limit), splits train (4) / test; opened in memory."""
    import numpy as np

    import heatvol
    from heatvol.layouts import layout

    rng = np.random.default_rng(dims)
    k = layout(lay).num_joints
    with heatvol.PoseWriter(path, layout=lay, dims=dims, classes=["a", "b"], mode="w") as w:
        names = []
        for i in range(n):
            kp, sc = messy_pose(i, persons, int(rng.integers(3, 40)), k, dims, far=1e5)
            w.append(f"s{i}", kp, sc, label=i % 2, img_shape=(48, 64) if dims == 2 else None)
            names.append(f"s{i}")
        w.set_splits({"train": names[:4], "test": names[4:]})
    return heatvol.PoseStore(path, in_memory=True)


def assert_same_state(a, b):
    """Two state dicts hold the same keys and bit-identical tensors."""
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class FileServer:
    """An HTTP server on 127.0.0.1 (tests never use the network) serving ``files`` (a dict
    path -> bytes, may be changed while it runs); ``hits`` lists the paths asked for."""

    def __init__(self, files: dict | None = None):
        import http.server
        import threading

        self.files = {} if files is None else files
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.hits.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
