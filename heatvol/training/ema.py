"""An exponential moving average of a model's weights (as timm's ``ModelEmaV3``).

Small datasets (Penn Action: 1,258 training clips) leave the last epochs' weights noisy: the
validation accuracy of one run moves by a point or two from one epoch to the next. The average
of the weights over the last ~1/(1 - decay) steps is a smoother model that usually tests as well
or better, at the cost of one copy of the weights.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["ModelEma"]


class ModelEma:
    """``module``: a copy of ``model`` whose floating-point parameters and buffers (BatchNorm
    statistics) follow ``ema = d * ema + (1 - d) * weight`` after each optimiser step, with
    ``d = min(decay, (1 + step) / (10 + step))``: the warm-up keeps the random initial weights
    from lingering in the average of a short run. Integer buffers (BatchNorm's step count)
    are copied. The copy stays in eval mode and never takes gradients."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1); got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimiser step ``step`` (1 = the first)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold ``model``'s current weights (after optimiser step ``step``) into the average."""
        d = self.decay_at(step)
        for ema, new in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema.dtype.is_floating_point:
                ema.lerp_(new.detach().to(ema.dtype), 1.0 - d)
            else:
                ema.copy_(new)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
