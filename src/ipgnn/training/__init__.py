"""The parts of :class:`ipgnn.trainer.Trainer` that are not its loop: the callback hooks and the built-in
callbacks (:mod:`.callbacks`, :mod:`.eta`, :mod:`.verdict`), checkpoints and resume (:mod:`.checkpointing`),
stopping at a safe point (:mod:`.stopping`), the divergence guard (:mod:`.divergence`), the logging window
(:mod:`.window`), the rollout environment and replay sizing (:mod:`.builders`) and the machine's threads,
allocator and warnings (:mod:`.machine`).

A user's callback subclasses :class:`Callback` and is passed as
``Trainer.from_config(cfg, callbacks=[...])``; the built-ins are in :mod:`ipgnn.training.callbacks`."""

from ipgnn.training.callbacks import HOOKS, Callback
from ipgnn.training.checkpointing import ResumeError
from ipgnn.training.divergence import TrainingDiverged
from ipgnn.training.stopping import StopRequested

__all__ = ["HOOKS", "Callback", "ResumeError", "StopRequested", "TrainingDiverged"]
