"""The contract every experiment of ``grd reproduce`` follows.

An experiment tests one claim (or a few closely related claims) of a source paper the way the
paper tested it, at a size two CPU cores allow, against a null model or a control, over several
seeds, and ends in a verdict. Each lives in its own module of :mod:`grd.experiments` and
exposes one module-level :class:`Experiment`:

- ``configs``: one frozen dataclass instance per profile — ``"tiny"`` (tests: seconds),
  ``"default"`` (README command 1: the whole default run takes at most 10 minutes on 2
  cores, every experiment at a small but faithful size, 3 seeds) and ``"full"`` (the
  paper-scale design, the whole ``--full`` run at most 2 hours on 2 cores);
- ``run(config, ctx) -> Outcome``: uses the public ``grd`` API only, writes nothing outside
  ``ctx.workdir``, checkpoints long loops with :meth:`Context.checkpointed` (so ``--resume``
  continues them), and returns a report section, a JSON-able metrics dict (every number the
  section shows) and its :class:`Finding` objects.

A :class:`Finding` is one row of the report's Findings table and one object of the
top-level ``"findings"`` list in ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..report import Section

__all__ = ["VERDICTS", "PROFILES", "Finding", "Context", "Outcome", "Experiment"]

#: The three verdicts a finding can end in (``metrics.json`` spelling).
VERDICTS: tuple[str, ...] = ("reproduced", "not_reproduced", "inconclusive")
#: The run profiles every experiment defines a configuration for.
PROFILES: tuple[str, ...] = ("tiny", "default", "full")


def _number_or_none(name: str, x) -> float | None:
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"Finding.{name} must be finite or None; got {x}.")
    return x


@dataclasses.dataclass(frozen=True)
class Finding:
    """One tested claim: what the paper says, what we measured, against what null, and the verdict.

    Attributes:
      claim: the claim in one sentence, as the source states it (not as we would like it).
      source: short citation with the place in the paper, e.g. ``"Chaudhari & Soatto 2018, §5"``.
      paper_setting: the paper's setting in a few words (data, model, optimiser, size).
      our_setting: ours, in the same words (what differs is visible side by side).
      measured: the statistic the verdict rests on (a number, in ``unit``).
      uncertainty: its standard error or 95 % half-width (say which in ``reason``), or None.
      null: the same statistic on the null model or control, or None when the test is
        against a fixed threshold (then ``reason`` names it).
      verdict: one of :data:`VERDICTS`.
      reason: the rule applied and, for ``inconclusive``, why the test could not decide.
      unit: the unit or name of ``measured`` (e.g. ``"Pearson r"``, ``"local exponent"``).
    """

    claim: str
    source: str
    paper_setting: str
    our_setting: str
    measured: float
    uncertainty: float | None
    null: float | None
    verdict: str
    reason: str
    unit: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {self.verdict!r}.")
        for name in ("claim", "source", "reason"):
            if not getattr(self, name).strip():
                raise ValueError(f"Finding.{name} must not be empty.")
        object.__setattr__(self, "measured", _number_or_none("measured", self.measured))
        if self.measured is None:
            raise ValueError("Finding.measured must be a number.")
        object.__setattr__(self, "uncertainty", _number_or_none("uncertainty", self.uncertainty))
        object.__setattr__(self, "null", _number_or_none("null", self.null))

    def to_json(self) -> dict:
        """The ``metrics.json`` form (keys ``claim``, ``source``, ``measured``, ``uncertainty``,
        ``null``, ``verdict`` and the descriptive ones)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Context:
    """What the runner hands an experiment.

    Attributes:
      name: the experiment's name (checkpoints are kept per experiment).
      workdir: a private scratch directory that survives an interrupted run (``--resume``).
      seeds: the seeds to repeat the experiment over (at least 3 outside the tiny profile).
      progress: whether progress bars may be shown (stderr).
    """

    name: str
    workdir: Path
    seeds: tuple[int, ...]
    progress: bool = False

    def checkpointed(
        self,
        stage: str,
        step_fn: Callable,
        state,
        num_steps: int,
        *,
        every: int,
        on_save: Callable | None = None,
    ):
        """``state = step_fn(state, step)`` for ``num_steps`` steps, checkpointed every ``every``
        steps into ``workdir/checkpoints/<name>/<stage>.npz`` and resumed from there when the
        file exists (:func:`grd.checkpoint.run_checkpointed`). ``stage`` must be unique within
        the experiment (include the seed and the setting in it)."""
        from ..checkpoint import run_checkpointed

        return run_checkpointed(
            step_fn,
            state,
            num_steps,
            path=self.workdir / "checkpoints" / self.name / f"{stage}.npz",
            every=every,
            on_save=on_save,
            metadata={
                "experiment": self.name,
                "stage": stage,
                "num_steps": int(num_steps),
                "every": int(every),
            },
        )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an experiment returns: its report section, its metrics, its findings."""

    section: Section
    metrics: Mapping[str, Any]
    findings: Sequence[Finding] = ()


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment (see the module docstring).

    Attributes:
      name: registry key, ``[a-z0-9_]+`` (also the report section key and metrics key).
      title: the report section's title.
      sources: the papers it tests (short citations).
      configs: profile name → frozen config dataclass instance (every name in :data:`PROFILES`).
      run: ``run(config, ctx) -> Outcome``.
    """

    name: str
    title: str
    sources: Sequence[str]
    configs: Mapping[str, Any]
    run: Callable[[Any, Context], Outcome]

    def __post_init__(self):
        missing = [p for p in PROFILES if p not in self.configs]
        if missing:
            raise ValueError(f"experiment {self.name!r} defines no config for {missing}.")
