"""The Findings section that opens the report, and the run's meta lines."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping, Sequence

from ..experiments import Finding, format_value
from ..report import Section, Table

__all__ = [
    "FINDINGS_HEADER",
    "findings_section",
    "machine",
    "meta_lines",
    "readme_findings_table",
    "versions",
]

#: The columns of the Findings table.
FINDINGS_HEADER: tuple[str, ...] = (
    "claim",
    "source",
    "the paper's setting",
    "ours",
    "measured ± uncertainty",
    "null",
    "verdict",
    "reason",
)


def _verdict(v: str) -> str:
    return {"not_reproduced": "not reproduced"}.get(v, v)


def findings_section(findings: Sequence[tuple[str, Finding]], titles: Mapping[str, str]) -> Section:
    """The report's first section: one row per finding, then a count of the verdicts.

    Args:
      findings: ``(experiment name, Finding)`` pairs in report order.
      titles: experiment name → section title (the paragraph links each experiment).
    """
    rows = []
    for _, f in findings:
        measured = format_value(f.measured, f.uncertainty)
        if f.unit:
            measured += f" ({f.unit})"
        rows.append(
            [
                f.claim,
                f.source,
                f.paper_setting,
                f.our_setting,
                measured,
                "—" if f.null is None else format_value(f.null),
                _verdict(f.verdict),
                f.reason,
            ]
        )
    counts = {
        v: sum(f.verdict == v for _, f in findings)
        for v in ("reproduced", "not_reproduced", "inconclusive")
    }
    paragraphs = [
        f"{len(findings)} findings: claims of the source papers, each tested the way its paper "
        'tested it as far as two CPU cores allow (rows marked "grd\'s question" or "grd\'s '
        'test of a proposal" are not claims the sources make), against a null model or '
        "control, over the seeds below: "
        f"{counts['reproduced']} reproduced, {counts['not_reproduced']} not reproduced, "
        f"{counts['inconclusive']} inconclusive. 'measured ± uncertainty' is the statistic the "
        "verdict rests on (the reason says which uncertainty); 'null' is the same statistic on "
        "the null model or control. The sections below give each experiment's design, what was "
        "shrunk from the paper's, and every number.",
    ]
    if not findings:
        paragraphs.append("No experiment of this run reported a finding.")
    table = Table("Findings", list(FINDINGS_HEADER), rows)
    del titles
    return Section("findings", "Findings", paragraphs, [table] if rows else [], [])


def versions() -> dict:
    """Versions of Python, grd and its numerical stack."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("grd", "jax", "jaxlib", "optax", "diffrax", "flax", "numpy", "scipy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict:
    """CPU count, platform and processor of this machine, and the load average if known."""
    out = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        out["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return out


def meta_lines(
    *,
    command: Sequence[str] | None,
    profile: str,
    seeds: Sequence[int],
    experiments: Sequence[str],
    runtimes: Mapping[str, float],
    total: float,
    resumed: bool,
    date: str,
    versions: Mapping[str, str],
    machine: Mapping,
    devices: Sequence[str],
    x64: bool,
) -> list[str]:
    """The lines under the report's title: command, machine, date, versions, profile, seeds."""
    load = machine.get("load_average_1min")
    return [
        "Command: " + (" ".join(command) if command else "grd.reproduce(...)"),
        f"Profile: {profile}; seeds: {', '.join(str(s) for s in seeds)}; experiments: "
        + ", ".join(f"{n} ({runtimes[n]:.0f} s)" for n in experiments)
        + f"; total {total:.0f} s"
        + (" (this run resumed from checkpoints)." if resumed else "."),
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}"
        + (f", load average {load:.1f} at the end" if load is not None else "")
        + f"; devices: {', '.join(devices)}; float64: {x64}. Date: {date}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
    ]


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def readme_findings_table(metrics: Mapping) -> str:
    """The README's findings table, rendered from a committed report's ``metrics.json``.

    One row per finding (claim, experiment and our setting, measured ± uncertainty, null,
    verdict) as Markdown;
    ``tests/test_readme.py`` checks that README.md carries exactly this text for the report
    under ``docs/results/``, so the README quotes the committed results and nothing else.
    """

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| claim | experiment: our setting | measured ± uncertainty | null | verdict |",
        "|---|---|---|---|---|",
    ]
    for f in metrics["findings"]:
        measured = format_value(f["measured"], f["uncertainty"])
        if f.get("unit"):
            measured += f" ({f['unit']})"
        null = "—" if f["null"] is None else format_value(f["null"])
        lines.append(
            f"| {cell(f['claim'])} | `{f['experiment']}`: {cell(f['our_setting'])} | "
            f"{cell(measured)} | {null} | "
            f"**{_verdict(f['verdict'])}** |"
        )
    return "\n".join(lines) + "\n"
