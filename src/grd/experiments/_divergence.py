"""Divergence of a training loop: one exception and one check every experiment uses.

``grd reproduce`` turns :class:`DivergenceError` into one line on stderr and exit code 3
(nothing is written; the work directory is removed), so an experiment that trains should call
:func:`check_divergence` on its loss at least at every checkpoint of a long loop.
"""

from __future__ import annotations

import math

__all__ = ["DIVERGENCE_FACTOR", "DivergenceError", "check_divergence"]

#: A loss has diverged when it is not finite or exceeds this factor times its initial value.
DIVERGENCE_FACTOR = 100.0


class DivergenceError(FloatingPointError):
    """A training loop diverged: its loss became non-finite or exceeded
    ``factor`` × its initial value.

    Attributes:
      stage: what was running (e.g. ``"SGD ensemble"``).
      step: the step at which the loss was checked.
      loss: the loss found there.
      initial_loss: the loss at step 0.
      lr: the learning rate of the loop, or None.
      experiment: the experiment's name (the runner fills it in when the experiment did not).
      factor: the divergence threshold factor.
    """

    def __init__(
        self,
        stage: str,
        step: int,
        loss: float,
        initial_loss: float,
        lr: float | None = None,
        *,
        experiment: str | None = None,
        factor: float = DIVERGENCE_FACTOR,
    ):
        self.stage, self.step, self.loss = str(stage), int(step), float(loss)
        self.initial_loss = float(initial_loss)
        self.lr = None if lr is None else float(lr)
        self.experiment, self.factor = experiment, float(factor)
        super().__init__(stage, step, loss, initial_loss, lr)

    def __str__(self) -> str:
        why = (
            "is not finite"
            if not math.isfinite(self.loss)
            else f"> {self.factor:g} × the initial {self.initial_loss:.3g}"
        )
        where = f"{self.experiment}: " if self.experiment else ""
        hint = "try a smaller learning rate"
        if self.lr is not None:
            hint += f" (now {self.lr:g}"
            if self.experiment:
                hint += f"; e.g. --set {self.experiment}.lr={self.lr / 10:g}"
            hint += ")"
        return (
            f"{where}{self.stage} diverged at step {self.step}: loss {self.loss:.3g} ({why}); "
            f"{hint}."
        )


def check_divergence(
    loss,
    initial_loss,
    *,
    stage: str,
    step: int,
    lr: float | None = None,
    factor: float = DIVERGENCE_FACTOR,
) -> None:
    """Raise :class:`DivergenceError` unless ``loss`` is finite and ≤ ``factor · initial_loss``.

    ``loss`` may be an array (e.g. the losses of a vmapped ensemble): every entry is checked
    and the worst one is reported.

    Args:
      loss: the current loss (a number or an array of losses).
      initial_loss: the loss at step 0 (a number or an array broadcastable against ``loss``).
      stage: what is running, for the message (e.g. ``"SGD ensemble"``).
      step: the current step.
      lr: the learning rate (named in the message with how to lower it).
      factor: the threshold factor (default :data:`DIVERGENCE_FACTOR`).
    """
    import numpy as np

    loss = np.asarray(loss, dtype=np.float64)
    initial = np.broadcast_to(np.asarray(initial_loss, dtype=np.float64), loss.shape)
    bad = ~np.isfinite(loss) | (loss > factor * np.abs(initial))
    if np.any(bad):
        i = int(np.flatnonzero(bad.ravel())[0])
        raise DivergenceError(
            stage, step, float(loss.ravel()[i]), float(initial.ravel()[i]), lr, factor=factor
        )
