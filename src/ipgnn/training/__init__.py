"""The parts of :class:`ipgnn.trainer.Trainer` that are not its loop: the callback hooks and the built-in
callbacks (:mod:`.callbacks`, :mod:`.eta`, :mod:`.verdict`), checkpoints and resume (:mod:`.checkpointing`),
stopping at a safe point (:mod:`.stopping`), the divergence guard (:mod:`.divergence`), the logging window
(:mod:`.window`), the rollout environment and replay sizing (:mod:`.builders`) and the machine's threads,
allocator and warnings (:mod:`.machine`)."""

from ipgnn.training.callbacks import (
    Callback,
    CallbackList,
    PeriodicCheckpoint,
    PeriodicEvaluation,
    PlotCurves,
    ProgressBar,
)
from ipgnn.training.checkpointing import ResumeError
from ipgnn.training.divergence import TrainingDiverged
from ipgnn.training.eta import EtaEstimate
from ipgnn.training.stopping import StopRequested
from ipgnn.training.verdict import FinalVerdict

__all__ = [
    "Callback",
    "CallbackList",
    "EtaEstimate",
    "FinalVerdict",
    "PeriodicCheckpoint",
    "PeriodicEvaluation",
    "PlotCurves",
    "ProgressBar",
    "ResumeError",
    "StopRequested",
    "TrainingDiverged",
]
