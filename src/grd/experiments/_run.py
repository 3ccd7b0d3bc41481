"""Running one experiment: the seeds of a profile, the checks on what it returns."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._base import PROFILES, Context, Experiment, Finding, Outcome

__all__ = ["DEFAULT_SEEDS", "default_seeds", "check_outcome", "run_experiment", "with_overrides"]

#: Seeds each profile repeats every experiment over unless ``--seeds`` says otherwise.
DEFAULT_SEEDS: Mapping[str, tuple[int, ...]] = {
    "tiny": (0, 1),
    "default": (0, 1, 2),
    "full": (0, 1, 2),
}

_NAME = re.compile(r"^[a-z0-9_]+$")


def default_seeds(profile: str) -> tuple[int, ...]:
    """The seeds of ``profile`` (:data:`DEFAULT_SEEDS`)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}; got {profile!r}.")
    return DEFAULT_SEEDS[profile]


def check_outcome(experiment: Experiment, outcome: Outcome) -> Outcome:
    """Check that ``outcome`` keeps the contract of :mod:`grd.experiments._base`.

    The section's key is the experiment's name, figure names start with ``<name>_`` and are
    unique, the metrics are a JSON-able mapping of finite numbers
    (:func:`grd.report.to_jsonable`), and every finding is a :class:`Finding`.

    Raises:
      TypeError or ValueError naming what is wrong.
    """
    from ..report import Section, to_jsonable

    name = experiment.name
    if not isinstance(outcome, Outcome):
        raise TypeError(f"experiment {name!r} returned {type(outcome).__name__}, not an Outcome.")
    sec = outcome.section
    if not isinstance(sec, Section):
        raise TypeError(f"experiment {name!r}: Outcome.section must be a grd.report.Section.")
    if sec.key != name:
        raise ValueError(f"experiment {name!r}: its section's key is {sec.key!r}; use {name!r}.")
    figs = [f.name for f in sec.figures]
    bad = [f for f in figs if not (f.startswith(f"{name}_") and _NAME.match(f))]
    if bad or len(set(figs)) != len(figs):
        raise ValueError(
            f"experiment {name!r}: figure names must be unique and read '{name}_<what>' "
            f"([a-z0-9_]); got {figs}."
        )
    if not isinstance(outcome.metrics, Mapping):
        raise TypeError(f"experiment {name!r}: Outcome.metrics must be a mapping.")
    to_jsonable(dict(outcome.metrics), f"experiments.{name}")
    for f in outcome.findings:
        if not isinstance(f, Finding):
            raise TypeError(f"experiment {name!r}: findings must be Finding objects; got {f!r}.")
    return outcome


def with_overrides(config, overrides: Mapping[str, object]):
    """``config`` with fields replaced (``dataclasses.replace``), then ``config.validate()``
    if the config defines it. Unknown fields raise ``ValueError`` listing the known ones."""
    if not overrides:
        return config
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"{type(config).__name__} has no field {', '.join(unknown)}; its fields are "
            f"{', '.join(sorted(fields))}."
        )
    new = dataclasses.replace(config, **overrides)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def run_experiment(
    experiment: Experiment,
    profile: str = "tiny",
    *,
    workdir,
    seeds: Sequence[int] | None = None,
    config=None,
    progress: bool = False,
) -> Outcome:
    """Run one experiment end to end and check what it returns (:func:`check_outcome`).

    This is what ``grd reproduce`` does for each experiment (it adds timing, resumption of
    finished experiments and the report), and what an experiment's end-to-end test calls::

        from grd.experiments import registry, run_experiment
        out = run_experiment(registry()["diffusion_maps"], "tiny", workdir=tmp_path)

    Args:
      experiment: a registered :class:`Experiment`.
      profile: ``"tiny"``, ``"default"`` or ``"full"``: which of its configs to run.
      workdir: its scratch directory (created; checkpoints go under it, so a second call
        with the same directory resumes an interrupted loop).
      seeds: the seeds (default :func:`default_seeds` of the profile).
      config: a config to run instead of the profile's (e.g. from :func:`with_overrides`).
      progress: allow progress bars.

    Returns:
      The experiment's :class:`Outcome`.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}; got {profile!r}.")
    seeds = tuple(int(s) for s in (default_seeds(profile) if seeds is None else seeds))
    if not seeds:
        raise ValueError("`seeds` must not be empty.")
    cfg = experiment.configs[profile] if config is None else config
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(name=experiment.name, workdir=workdir, seeds=seeds, progress=progress)
    return check_outcome(experiment, experiment.run(cfg, ctx))
