"""The task's reference controllers, and the verdict line that compares the final policy with them."""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from ipgnn import references
from ipgnn.training.callbacks import Callback

log = logging.getLogger("ipgnn")


def reference_results(eval_env, cfg) -> dict[str, dict[str, float]]:
    """The task's reference controllers (traffic: FixedTime, MaxPressure) on the evaluation episodes, cached
    per task (:mod:`ipgnn.references`), played by the learner's own :func:`ipgnn.runs.evaluate`."""
    return references.reference_results(eval_env, cfg.env.model_dump(mode="json"), cfg.train.eval_episodes, cfg.seed)


class FinalVerdict(Callback):
    """At the end of a finished run, one line (``line``) comparing the final greedy evaluation's headline
    metric with the references (``trainer.references``), printed on standard output."""

    def __init__(self) -> None:
        self.line: str | None = None

    def on_train_end(self, trainer, final_eval: dict[str, float] | None) -> None:
        if final_eval is None:
            return
        self.line = self.verdict(trainer, final_eval)
        if self.line:
            log.debug(self.line)
            tqdm.write(self.line)

    @staticmethod
    def verdict(trainer, final_eval: dict[str, float]) -> str | None:
        cfg, env = trainer.cfg, trainer.eval_env
        head = getattr(env, "headline", None)
        key = f"eval/{head.metric}" if head else None
        if head is None or not trainer.references or key not in final_eval:
            return None
        engine = getattr(env, "reference_key", "").split(":")[0]
        context = (
            f"{engine + ', ' if engine else ''}{cfg.env.max_steps}-step episodes, "
            f"{cfg.train.eval_episodes} evaluation episode(s) of seed {cfg.seed}"
        )
        return references.verdict(
            head.metric, final_eval[key], trainer.references, head.label, head.unit, head.lower_is_better, context
        )
