"""The ``grd reproduce`` runner: the registered experiments (:mod:`grd.experiments`), one
report directory with the Findings table first (see :mod:`._runner`)."""

from .._outdir import OutputError, OutputExistsError, check_output
from ..experiments import DivergenceError, registry
from ._findings import FINDINGS_HEADER, findings_section, machine, versions
from ._runner import ReportNotPlacedError, RunPlan, make_plan, parse_override, reproduce

__all__ = [
    "FINDINGS_HEADER",
    "DivergenceError",
    "OutputError",
    "OutputExistsError",
    "ReportNotPlacedError",
    "RunPlan",
    "check_output",
    "findings_section",
    "machine",
    "make_plan",
    "parse_override",
    "registry",
    "reproduce",
    "versions",
]
