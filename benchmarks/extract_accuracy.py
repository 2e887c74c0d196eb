"""Pose extraction measured against human annotations, and its speed on video.

    HEATVOL_MODELS=../shared/models python benchmarks/extract_accuracy.py
    HEATVOL_MODELS=../shared/models python benchmarks/extract_accuracy.py --speed
    python benchmarks/extract_accuracy.py --backends topdown:accurate topdown:fast blazepose

Accuracy (default mode): every backend runs on each image of the COCO-format sets in
../shared/data/pose_images (``coco``: 4 COCO val2017 images; ``posetrack18``: 3 PoseTrack18
val frames, its keypoints mapped to COCO-17: PoseTrack's head_bottom/head_top sit where COCO
has the eyes and its ears are never labelled, so COCO joints 1-4 are marked unlabelled and
only nose + 12 body joints are scored; PoseTrack has no segmentation, so a person's area is
its box's). Printed per set and backend:

- found: annotated people with >= 5 labelled keypoints that some prediction matches with
  OKS >= 0.5 (pycocotools' COCOeval.computeOks, one prediction per person at most, greedy
  by prediction score), of all such people;
- AP: pycocotools keypoint AP (COCOeval iouType="keypoints", all its thresholds and its
  area ranges, annotations with 0 keypoints ignored by COCOeval as usual);
- ms/image: wall time per image, models loaded beforehand.

Speed (``--speed``): frames/s end to end (decode in the reader thread + detect + pose +
tracking, what ``heatvol extract`` does per video, models loaded beforehand) on the 1080p
two-person videos in ../shared/data/videos, the CPU time per frame of this process (all
its threads; on a busy machine wall time says little, CPU time a little more), and the
mean number of people per frame in the 2 kept tracks.

Backends: ``topdown:<preset>`` (heatvol.extract.topdown.PRESETS), ``blazepose`` (needs
mediapipe, skipped with the reason when absent), ``multipose`` (MoveNet MultiPose alone at
256 / 512 px, a bottom-up comparison, no NMS beyond the model's own).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("HEATVOL_SHARED_DATA", ROOT.parent / "shared" / "data"))
SETS = {
    "coco": ("pose_images/coco", "pose_images/coco/test_coco.json"),
    "posetrack18": ("pose_images/posetrack18",
                    "pose_images/posetrack18/annotations/test_posetrack18_val.json"),
}
VIDEOS = ["videos/demo_skeleton.mp4", "videos/ntu_sample.avi"]


# --------------------------------------------------------------------------- data


def load_set(name: str) -> dict:
    """A COCO-format ground truth dict with COCO-17 keypoints and areas."""
    _, ann = SETS[name]
    gt = json.loads((DATA / ann).read_text())
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    for a in gt["annotations"]:
        a["iscrowd"] = int(bool(a.get("iscrowd", 0)))
        if name == "posetrack18":
            kp = np.asarray(a["keypoints"], np.float64).reshape(17, 3)
            kp[1:5] = 0  # head_bottom, head_top are not eyes; ears are never labelled
            a["keypoints"] = kp.reshape(-1).tolist()
            a["num_keypoints"] = int((kp[:, 2] > 0).sum())
        if "area" not in a:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
    return gt


# --------------------------------------------------------------------------- backends


class Runner:
    """image (BGR) -> list of (keypoints [17, 2], scores [17], person score)."""

    def __init__(self, spec: str, models: str | None, overrides: dict | None = None):
        self.spec = spec
        kind, _, arg = spec.partition(":")
        if kind == "topdown":
            from heatvol.extract.topdown import TopDownBackend
            self.backend = TopDownBackend(arg or "accurate", models_dir=models,
                                          **(overrides or {}))
            self.run = self._topdown
        elif kind == "blazepose":
            from heatvol.extract import make_backend
            self.backend = make_backend("blazepose", max_persons=20)
            self.run = self._generic
        elif kind == "multipose":
            from heatvol.extract.topdown import ort_session
            from heatvol.extract.weights import locate
            self.session = ort_session(locate("movenet-multipose", models))
            self.size = int(arg or 256)
            self.run = self._multipose
        else:
            raise SystemExit(f"unknown backend {spec!r}")

    def _topdown(self, img):
        fp = self.backend.process_image(img)
        return [(fp.keypoints[i], fp.scores[i], float(fp.person_scores[i]))
                for i in range(len(fp))]

    def _generic(self, img):
        fp = next(iter(self.backend.process([img])))
        return [(fp.keypoints[i], fp.scores[i], float(fp.scores[i].mean()))
                for i in range(len(fp))]

    def _multipose(self, img):
        import cv2
        h, w = img.shape[:2]
        s = self.size / max(h, w)
        nh, nw = round(h * s), round(w * s)
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh))
        out = self.session.run(None, {"input": canvas[None, :, :, ::-1].astype(np.int32)})[0][0]
        res = []
        for p in out:
            if p[55] < 0.1:
                continue
            kp = p[:51].reshape(17, 3)
            xy = kp[:, 1::-1] * self.size / s
            res.append((xy.astype(np.float32), kp[:, 2].astype(np.float32), float(p[55])))
        return res


# --------------------------------------------------------------------------- metrics


def evaluate(gt: dict, dets: list[dict]) -> tuple[int, int, float]:
    """(found, annotated people with >= 5 keypoints, keypoint AP) with pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ap = 0.0
        if dets:
            cdt = coco.loadRes(dets)
            ev = COCOeval(coco, cdt, "keypoints")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            ap = float(ev.stats[0])
    found = total = 0
    by_img: dict[int, list[dict]] = {}
    for d in dets:
        by_img.setdefault(d["image_id"], []).append(d)
    ev = COCOeval(coco, coco, "keypoints")  # only for computeOks and its sigmas
    for img_id in coco.getImgIds():
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))
                if a["num_keypoints"] >= 5 and not a["iscrowd"]]
        total += len(anns)
        mine = sorted(by_img.get(img_id, []), key=lambda d: -d["score"])
        if not anns or not mine:
            continue
        ev.cocoGt, ev.cocoDt = coco, coco
        ev._gts = {(img_id, 1): anns}  # noqa: SLF001 - computeOks reads these
        ev._dts = {(img_id, 1): mine}
        ev.params.maxDets = [len(mine)]
        oks = np.asarray(ev.computeOks(img_id, 1))  # [dets, gts]
        if oks.size == 0:
            continue
        used = set()
        for di in range(oks.shape[0]):  # greedy by score, as COCOeval matches
            cand = [(oks[di, g], g) for g in range(oks.shape[1]) if g not in used]
            if cand:
                best, g = max(cand)
                if best >= 0.5:
                    used.add(g)
        found += len(used)
    return found, total, ap


def accuracy(specs: list[str], models: str | None, overrides: dict) -> list[tuple]:
    import cv2

    rows = []
    for spec in specs:
        try:
            runner = Runner(spec, models, overrides)
        except Exception as exc:  # noqa: BLE001 - a missing optional backend is a row
            print(f"{spec}: skipped ({' '.join(str(exc).split())})", file=sys.stderr)
            continue
        for set_name, (folder, _) in SETS.items():
            gt = load_set(set_name)
            dets, times = [], []
            for im in gt["images"]:
                img = cv2.imread(str(DATA / folder / im["file_name"]))
                if img is None:
                    raise SystemExit(f"{DATA / folder / im['file_name']}: cannot read")
                runner.run(img)  # warm-up (first-run allocation) not timed
                t0 = time.perf_counter()
                people = runner.run(img)
                times.append(time.perf_counter() - t0)
                for kp, sc, score in people:
                    k = np.concatenate([kp, sc[:, None]], 1).reshape(-1)
                    dets.append({"image_id": im["id"], "category_id": 1,
                                 "keypoints": [float(v) for v in k], "score": float(score)})
            found, total, ap = evaluate(gt, dets)
            rows.append((set_name, spec, found, total, ap, 1000 * float(np.mean(times)),
                         len(dets)))
    return rows


def speed(specs: list[str], models: str | None, overrides: dict) -> list[tuple]:
    from heatvol.extract import extract_video
    from heatvol.extract.topdown import TopDownBackend
    from heatvol.extract.video import probe

    rows = []
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind != "topdown":
            print(f"{spec}: speed mode runs topdown presets only", file=sys.stderr)
            continue
        backend = TopDownBackend(arg or "accurate", models_dir=models, **overrides)
        for v in VIDEOS:
            path = DATA / v
            info = probe(path)
            cpu0 = time.process_time()
            res = extract_video(path, backend, max_persons=2)
            cpu = time.process_time() - cpu0
            n = res["frames"]
            found = float((res["scores"].mean(-1) > 0).sum(0).mean()) if n else 0.0
            rows.append((path.name, f"{info.width}x{info.height}", spec, n,
                         n / res["seconds"], 1000 * cpu / max(n, 1), found))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", nargs="+",
                    default=["topdown:accurate", "topdown:fast", "multipose:256",
                             "multipose:512", "blazepose"])
    ap.add_argument("--models", default=None, help="models folder [default: HEATVOL_MODELS]")
    ap.add_argument("--speed", action="store_true", help="video frames/s instead of accuracy")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="topdown: override TopDownConfig fields (tuning runs)")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = type(getattr(__import__("heatvol.extract.topdown", fromlist=["x"])
                                      .TopDownConfig(), key))(value)
    load = os.getloadavg()
    print(f"# load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    if args.speed:
        specs = [s for s in args.backends if s.startswith("topdown")] or ["topdown:accurate"]
        rows = speed(specs, args.models, overrides)
        print(f"{'video':<22} {'size':>10} {'backend':<18} {'frames':>6} {'frames/s':>9} "
              f"{'CPU ms/frame':>12} {'people/frame':>12}")
        for name, size, spec, n, fps, cpu, found in rows:
            print(f"{name:<22} {size:>10} {spec:<18} {n:>6} {fps:>9.1f} {cpu:>12.0f} "
                  f"{found:>12.2f}")
        load = os.getloadavg()
        print(f"# load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return
    rows = accuracy(args.backends, args.models, overrides)
    print(f"{'set':<12} {'backend':<18} {'found':>9} {'%':>6} {'AP':>6} {'ms/image':>9} "
          f"{'predicted':>9}")
    for set_name, spec, found, total, ap_, ms, ndet in rows:
        pct = 100 * found / max(total, 1)
        print(f"{set_name:<12} {spec:<18} {found:>4}/{total:<4} {pct:>6.1f} {ap_:>6.3f}"
              f" {ms:>9.1f} {ndet:>9}")
    by_spec: dict[str, list] = {}
    for set_name, spec, found, total, *_ in rows:
        by_spec.setdefault(spec, [0, 0])
        by_spec[spec][0] += found
        by_spec[spec][1] += total
    for spec, (f, t) in by_spec.items():
        print(f"{'all':<12} {spec:<18} {f:>4}/{t:<4} {100 * f / max(t, 1):>6.1f}")


if __name__ == "__main__":
    main()
