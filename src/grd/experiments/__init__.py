"""The experiments of ``grd reproduce``: one module per tested claim (see :mod:`._base`).

The registry lists the experiment modules in report order, one per line of :data:`_MODULES`;
:func:`registry` imports them and returns ``{name: Experiment}``. Public helpers for
experiment modules: :func:`check_divergence` / :class:`DivergenceError` (a diverging loop
ends the run with exit code 3), the verdict statistics of :mod:`._stats` and
:func:`run_experiment` (one experiment end to end, as ``grd reproduce`` and the tests run it).
"""

from __future__ import annotations

import importlib

from ._base import PROFILES, VERDICTS, Context, Experiment, Finding, Outcome
from ._divergence import DIVERGENCE_FACTOR, DivergenceError, check_divergence
from ._run import DEFAULT_SEEDS, check_outcome, default_seeds, run_experiment, with_overrides
from ._stats import (
    ExponentCheck,
    LocalExponents,
    SeedSummary,
    WelchTest,
    exponent_check,
    format_value,
    local_exponents,
    summarize,
    welch_test,
)

__all__ = [
    "DEFAULT_SEEDS",
    "DIVERGENCE_FACTOR",
    "PROFILES",
    "VERDICTS",
    "Context",
    "DivergenceError",
    "Experiment",
    "ExponentCheck",
    "Finding",
    "LocalExponents",
    "Outcome",
    "SeedSummary",
    "WelchTest",
    "check_divergence",
    "check_outcome",
    "default_seeds",
    "exponent_check",
    "format_value",
    "local_exponents",
    "registry",
    "run_experiment",
    "summarize",
    "welch_test",
    "with_overrides",
]

#: The experiment modules of ``grd reproduce``, in report order (one per line: merges add a
#: line). Each module ``grd.experiments.<name>`` defines ``EXPERIMENT`` named ``<name>``.
_MODULES: tuple[str, ...] = (
    "cs_spectrum",
    "cs_nonequilibrium",
    "lee_kappa",
    "diffusion_maps",
    "poster_grd_ngd",
    "noise_scale",
    "optimisers_rbm",
)


def registry() -> dict[str, Experiment]:
    """``{name: Experiment}`` of every module in :data:`_MODULES`, in report order.

    Raises:
      ValueError: a module defines no ``EXPERIMENT``, or its name differs from the module's,
        or two share a name.
    """
    out: dict[str, Experiment] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        exp = getattr(module, "EXPERIMENT", None)
        if not isinstance(exp, Experiment):
            raise ValueError(f"grd.experiments.{module_name} defines no EXPERIMENT.")
        if exp.name != module_name:
            raise ValueError(
                f"grd.experiments.{module_name}.EXPERIMENT is named {exp.name!r}; "
                f"it must be {module_name!r}."
            )
        if exp.name in out:
            raise ValueError(f"experiment {exp.name!r} is registered twice.")
        out[exp.name] = exp
    return out
