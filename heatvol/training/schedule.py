"""The learning-rate schedule of a training run."""

from __future__ import annotations

import math

__all__ = ["WarmupCosine"]


class WarmupCosine:
    """Learning rate per optimiser step: linear warm-up from ``lr * warmup_start`` to ``lr``
    over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps``."""

    def __init__(self, optimizer, *, lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_start: float = 0.1, min_lr: float = 0.0):
        self.optimizer, self.lr = optimizer, float(lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.warmup_start, self.min_lr = float(warmup_start), float(min_lr)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            return self.lr * (self.warmup_start + (1 - self.warmup_start) * frac)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def apply(self) -> float:
        """Set the learning rate of the next step; returns it."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "lr": self.lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
