"""What a run reports: rank-0 messages (stdout and ``train.log``), ``log.csv`` rows and
TensorBoard scalars (TensorBoard is an extra: ``pip install heatvol[tensorboard]``)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

__all__ = ["RunLog"]


class RunLog:
    """Rank-0 messages (stdout + train.log), CSV rows and TensorBoard scalars; inactive (every
    call a no-op) on the other ranks."""

    FIELDS = ["kind", "step", "epoch", "lr", "loss", "samples_per_s", "data_wait",
              "top1", "top5", "mean_class", "time"]

    def __init__(self, work_dir: Path, active: bool, bar=None):
        self.active, self.bar, self.work_dir = active, bar, work_dir
        self.tb = None
        self.tb_note = ""
        if not active:
            return
        self.text = open(work_dir / "train.log", "a")
        csv_path = work_dir / "log.csv"
        new = not csv_path.exists()
        self.csv_file = open(csv_path, "a", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=self.FIELDS)
        if new:
            self.csv.writeheader()
        try:
            import tensorboard  # noqa: F401  (an extra: torch's writer needs the package)
        except ImportError:
            self.tb_note = ("TensorBoard: not installed, log.csv only (TensorBoard logs: "
                            "pip install heatvol[tensorboard])")
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(work_dir / "tb"))
            self.tb_note = f"TensorBoard: {work_dir / 'tb'}"
        except Exception as exc:  # noqa: BLE001  (a broken install)
            self.tb_note = (f"TensorBoard: skipped ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]}); log.csv only")

    def msg(self, text: str) -> None:
        if not self.active:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"[{stamp}] {text}"
        if self.bar is not None:  # a heatvol.progress display: print around it
            with self.bar.external_write():
                print(line, flush=True)
        else:
            print(line, flush=True)
        self.text.write(line + "\n")
        self.text.flush()

    def row(self, **values) -> None:
        if not self.active:
            return
        values.setdefault("time", round(time.time(), 3))
        self.csv.writerow({k: values.get(k, "") for k in self.FIELDS})
        self.csv_file.flush()
        if self.tb is not None:
            kind, step = values["kind"], values["step"]
            for key in ("lr", "loss", "samples_per_s", "data_wait", "top1", "top5", "mean_class"):
                if values.get(key, "") != "":
                    self.tb.add_scalar(f"{kind}/{key}", float(values[key]), step)

    def close(self) -> None:
        if self.active:
            self.text.close()
            self.csv_file.close()
            if self.tb is not None:
                self.tb.close()
