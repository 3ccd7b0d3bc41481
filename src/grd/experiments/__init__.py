"""The experiments of ``grd reproduce``: one module per tested claim (see :mod:`._base`)."""

from ._base import PROFILES, VERDICTS, Context, Experiment, Finding, Outcome

__all__ = ["PROFILES", "VERDICTS", "Context", "Experiment", "Finding", "Outcome"]
