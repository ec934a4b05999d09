"""The divergence guard: a non-finite loss stops the run, and a non-finite model is never checkpointed."""

from __future__ import annotations

import math

import torch


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN or infinite; the message names it, the step and the last finite
    values. Nothing was written after it: the last checkpoint is the last good model."""


class DivergenceGuard:
    """Checks each gradient step's losses (:meth:`check_losses`) and the parameters before a checkpoint is
    written (:meth:`check_parameters`); ``diverged`` stays set once either failed."""

    def __init__(self) -> None:
        self.diverged = False
        self.last_finite: dict[str, float] = {}  # the last update's losses, all finite (for the diagnosis)

    def check_losses(self, trainer, stats: dict[str, float]) -> None:
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if bad:
            self._diverged(trainer, bad, stats)
        self.last_finite = stats

    def _diverged(self, trainer, bad: list[str], stats: dict[str, float]) -> None:
        last = self.last_finite
        shown = ", ".join(f"{k} {last[k]:.4g}" for k in bad if k in last) or "none yet (the first update)"
        ckpt = trainer.ckpt_dir / "latest.pt"
        where = (
            f"the last good checkpoint, step {trainer.last_checkpoint_step}, is {ckpt} and was not overwritten"
            if ckpt.is_file()
            else "no checkpoint had been written"
        )
        self.diverged = True
        raise TrainingDiverged(
            f"training diverged at environment step {trainer.env_step} (gradient step {trainer.algo.num_updates}): "
            f"{', '.join(f'{k} = {stats[k]}' for k in bad)}; last finite values: {shown}. {where}. Lower "
            f"algo.lr (now {trainer.cfg.algo.lr:g}) or algo.reward_scale, or set algo.max_grad_norm, and start again"
        )

    def check_parameters(self, trainer) -> None:
        """Refuse to checkpoint a model with a non-finite parameter (a diverged model never overwrites the last
        good one)."""
        if self.diverged:
            raise TrainingDiverged("training diverged: not writing a checkpoint of the diverged model")
        for name, p in trainer.algo.named_parameters():
            if not bool(torch.isfinite(p).all()):
                self.diverged = True
                raise TrainingDiverged(
                    f"parameter {name} is not finite at environment step {trainer.env_step}: not "
                    f"writing a checkpoint; the last good one is step {trainer.last_checkpoint_step}"
                )
