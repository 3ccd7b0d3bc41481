"""``grd reproduce``: run the registered experiments and write one report directory.

The run works in a hidden directory ``.<out>.partial-*`` beside ``out``. Each experiment gets
its own scratch directory there (:class:`grd.experiments.Context`); its long loops checkpoint
into it (``Context.checkpointed``), and a finished experiment's outcome is stored there too,
so ``resume=True`` (``grd reproduce --resume``) skips finished experiments and continues the
interrupted one from its last checkpoint. At the end the report (Findings first, then the
experiments' sections in registry order) and its ``.grd-report`` marker (written last) are
moved to ``out`` (``grd._outdir``): an interrupted run never leaves a directory that passes
for a report, and ``--force`` replaces only directories grd wrote. A diverging experiment
raises :class:`grd.experiments.DivergenceError` (the CLI's exit code 3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._outdir import OutputError, check_output
from ..experiments import (
    PROFILES,
    DivergenceError,
    Experiment,
    default_seeds,
    registry,
    run_experiment,
    with_overrides,
)

__all__ = [
    "RunPlan",
    "ReportNotPlacedError",
    "make_plan",
    "parse_override",
    "reproduce",
]

_PARTIAL = ".grd-partial"
_TITLE = "grd reproduce: the claims of the source papers, tested"


class ReportNotPlacedError(RuntimeError):
    """The report was finished but ``out`` changed during the run and may not be replaced."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a ``grd reproduce`` run does (built and validated by :func:`make_plan`).

    Attributes:
      profile: ``"tiny"``, ``"default"`` or ``"full"``.
      seeds: the seeds every experiment repeats over.
      experiments: the experiment names, in registry order.
      configs: name → the config each experiment runs (the profile's, with overrides).
      float64: enable JAX's x64 mode first.
    """

    profile: str
    seeds: tuple[int, ...]
    experiments: tuple[str, ...]
    configs: Mapping[str, Any]
    float64: bool = False

    def key(self) -> str:
        """What a resumed run must share with the interrupted one: plan, versions, x64."""
        import jax

        from ._findings import versions

        blob = json.dumps(
            {
                "profile": self.profile,
                "seeds": list(self.seeds),
                "experiments": list(self.experiments),
                "configs": {n: _asdict(c) for n, c in self.configs.items()},
                "versions": versions(),
                "x64": bool(self.float64 or jax.config.jax_enable_x64),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _asdict(config) -> dict:
    return (
        dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {"repr": repr(config)}
    )


def _parse_scalar(text: str, like, what: str):
    if isinstance(like, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{what} expects true or false; got {text!r}.")
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{what} expects an integer; got {text!r}.") from None
    if isinstance(like, float):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{what} expects a number; got {text!r}.") from None
        if not math.isfinite(value):
            raise ValueError(f"{what} expects a finite number; got {text!r}.")
        return value
    if isinstance(like, str):
        return text
    raise ValueError(f"{what} cannot be set from the command line.")


def parse_override(text: str, experiments: Mapping[str, Experiment], profile: str):
    """``"NAME.FIELD=VALUE"`` → ``(name, field, value)``, the value parsed as the field's
    current type in ``profile`` (int, float, bool, str, or a comma-separated tuple of them).

    Raises:
      ValueError: naming the unknown experiment or field, or the expected type.
    """
    head, sep, value = text.partition("=")
    name, dot, field = head.strip().partition(".")
    if not sep or not dot or not name or not field:
        raise ValueError(f"--set expects EXPERIMENT.FIELD=VALUE; got {text!r}.")
    if name not in experiments:
        raise ValueError(
            f"--set {text}: unknown experiment {name!r}; choose from {', '.join(experiments)}."
        )
    config = experiments[name].configs[profile]
    fields = (
        {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    )
    if field not in fields:
        raise ValueError(
            f"--set {text}: {name} has no field {field!r}; its fields are "
            f"{', '.join(sorted(fields)) or 'none'}."
        )
    like = getattr(config, field)
    what = f"--set {name}.{field}"
    if isinstance(like, tuple):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            raise ValueError(f"{what} expects a comma-separated list; got {value!r}.")
        elem = like[0] if like else 0.0
        return name, field, tuple(_parse_scalar(p, elem, what) for p in parts)
    return name, field, _parse_scalar(value, like, what)


def make_plan(
    profile: str = "default",
    *,
    experiments: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] | Mapping[str, Mapping[str, Any]] = (),
    float64: bool = False,
) -> RunPlan:
    """Validate a run's settings before anything is computed.

    Args:
      profile: one of :data:`grd.experiments.PROFILES`.
      experiments: names from :func:`grd.experiments.registry` (default: all, registry order;
        given names are run in registry order too).
      seeds: the seeds (default :func:`grd.experiments.default_seeds`), each in [0, 2³²).
      overrides: ``"NAME.FIELD=VALUE"`` strings or ``{name: {field: value}}``; each config is
        re-validated (its ``validate()``).
      float64: run in float64.

    Raises:
      ValueError: one line naming what is wrong and the choices.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}.")
    reg = registry()
    if experiments is None:
        names = tuple(reg)
    else:
        unknown = [n for n in experiments if n not in reg]
        if unknown or not experiments:
            raise ValueError(
                f"unknown experiment {', '.join(unknown) or '(none given)'}; choose from "
                f"{', '.join(reg)} or 'all'."
            )
        names = tuple(n for n in reg if n in set(experiments))
    seeds = tuple(default_seeds(profile) if seeds is None else seeds)
    if not seeds:
        raise ValueError("seeds must not be empty.")
    for s in seeds:
        if not (isinstance(s, int) and 0 <= s <= 2**32 - 1):
            raise ValueError(f"seeds must be integers in [0, 2**32 - 1]; got {s!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {list(seeds)}.")
    per: dict[str, dict] = {}
    if isinstance(overrides, Mapping):
        per = {k: dict(v) for k, v in overrides.items()}
        bad = [k for k in per if k not in reg]
        if bad:
            raise ValueError(f"overrides for unknown experiment(s) {', '.join(bad)}.")
    else:
        for text in overrides:
            name, field, value = parse_override(text, reg, profile)
            per.setdefault(name, {})[field] = value
    skipped = [n for n in per if n not in names]
    if skipped:
        raise ValueError(
            f"--set names {', '.join(skipped)}, which this run does not include (--experiments)."
        )
    configs = {}
    for name in names:
        try:
            configs[name] = with_overrides(reg[name].configs[profile], per.get(name, {}))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        validate = getattr(configs[name], "validate", None)
        if callable(validate):
            try:
                validate()
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
    return RunPlan(profile, seeds, names, configs, bool(float64))


# ------------------------------------------------------------------------------- work dirs


def _work_dirs(real_out: Path) -> list[tuple[Path, dict]]:
    """grd's hidden work directories ``.<name>.partial-*`` beside ``out`` (with their record)."""
    prefix = f".{real_out.name}.partial-"
    try:
        entries = sorted(real_out.parent.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    found = []
    for path in entries:
        if not path.name.startswith(prefix) or path.is_symlink() or not path.is_dir():
            continue
        try:
            record = json.loads((path / _PARTIAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == "grd-partial":
            found.append((path, record))
    return found


def _lock(directory: Path):
    """An exclusive, non-blocking flock on ``directory/.lock`` (released when the process
    dies, even by SIGKILL); ``None`` if another live run holds it."""
    import fcntl

    fh = open(directory / ".lock", "a")  # noqa: SIM115
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def _say(line: str) -> None:
    print(f"grd reproduce: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- running


def _run_one(exp: Experiment, plan: RunPlan, workdir: Path, progress: bool):
    """Run one experiment (or load its stored outcome); return (outcome, seconds)."""
    done = workdir / "done" / f"{exp.name}.pkl"
    if done.is_file():
        with open(done, "rb") as fh:
            outcome, seconds = pickle.load(fh)
        return outcome, seconds, True
    start = time.perf_counter()
    try:
        outcome = run_experiment(
            exp,
            plan.profile,
            workdir=workdir / "work" / exp.name,
            seeds=plan.seeds,
            config=plan.configs[exp.name],
            progress=progress,
        )
    except DivergenceError as e:
        if e.experiment is None:
            e.experiment = exp.name
        raise
    seconds = time.perf_counter() - start
    done.parent.mkdir(exist_ok=True)
    tmp = done.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump((outcome, seconds), fh)
    os.replace(tmp, done)  # atomic: a kill leaves either no outcome or a whole one
    return outcome, seconds, False


def _run_all(plan: RunPlan, workdir: Path, progress: bool):
    """Every experiment of the plan: ``[(name, outcome, seconds)]``, plus whether any resumed."""
    import matplotlib

    matplotlib.use("Agg")
    reg = registry()
    results, resumed = [], False
    for i, name in enumerate(plan.experiments, 1):
        if progress:
            _say(
                f"[{i}/{len(plan.experiments)}] {name} ({plan.profile}, seeds "
                f"{','.join(map(str, plan.seeds))})"
            )
        outcome, seconds, stored = _run_one(reg[name], plan, workdir, progress)
        resumed |= stored
        results.append((name, outcome, seconds))
    return results, resumed


def _assemble(plan: RunPlan, results, *, command, total: float, resumed: bool):
    """The report's sections and metrics.json."""
    import jax

    from ._findings import findings_section, machine, meta_lines, utc_now, versions

    reg = registry()
    findings = [(name, f) for name, out, _ in results for f in out.findings]
    runtimes = {name: seconds for name, _, seconds in results}
    sections = [
        findings_section(findings, {n: reg[n].title for n in plan.experiments}),
        *[out.section for _, out, _ in results],
    ]
    vers, mach = versions(), machine()
    devices = [str(d) for d in jax.devices()]
    x64 = bool(jax.config.jax_enable_x64)
    date = utc_now()
    metrics = {
        "command": list(command) if command else None,
        "profile": plan.profile,
        "seeds": list(plan.seeds),
        "experiments_run": list(plan.experiments),
        "findings": [{"experiment": name, **f.to_json()} for name, f in findings],
        "experiments": {name: dict(out.metrics) for name, out, _ in results},
        "configs": {name: _asdict(plan.configs[name]) for name in plan.experiments},
        "runtime_seconds": total,
        "experiment_runtime_seconds": runtimes,
        "versions": vers,
        "machine": mach,
        "devices": devices,
        "x64": x64,
        "date": date,
    }
    meta = meta_lines(
        command=command,
        profile=plan.profile,
        seeds=plan.seeds,
        experiments=plan.experiments,
        runtimes=runtimes,
        total=total,
        resumed=resumed,
        date=date,
        versions=vers,
        machine=mach,
        devices=devices,
        x64=x64,
    )
    return sections, metrics, meta


def reproduce(
    plan: RunPlan,
    out,
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
    resume: bool = False,
) -> list[Path]:
    """Run the plan's experiments and write the report directory ``out`` atomically.

    ``out`` must be new, empty, or a report grd wrote that holds nothing else (and then
    ``overwrite=True``); its permission bits are kept (``grd._outdir``). The report:
    ``report.html`` (self-contained), ``report.md``, ``figures/*.png`` and ``metrics.json``
    with the top-level ``"findings"`` list (:meth:`grd.experiments.Finding.to_json` plus the
    experiment's name), ``"experiments"`` (name → metrics), ``"profile"``, ``"seeds"``,
    ``"runtime_seconds"`` and ``"experiment_runtime_seconds"``, versions, machine and date.

    Args:
      plan: from :func:`make_plan`.
      out: the report directory.
      overwrite: replace an existing grd report at ``out``.
      progress: progress lines and bars on stderr.
      command: the command line, recorded in the report and its marker.
      resume: continue an interrupted run of the same plan (same configs, seeds, versions,
        x64) from its work directory if there is one (else start afresh): finished
        experiments are not rerun, the interrupted one continues from its checkpoints; and
        keep the work directory if this run is interrupted or fails (except by divergence).
        Without it the work directory is removed on any error or interrupt (SIGKILL leaves
        it; a later ``resume=True`` run continues it).

    Returns:
      The files written, relative to ``out``.
    """
    import jax

    from .. import __version__
    from .._outdir import MARKER, _walk, install, write_marker

    plan_check = check_output(out, overwrite=overwrite)
    if plan.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    real = plan_check.real
    real.parent.mkdir(parents=True, exist_ok=True)
    key = plan.key()
    matching = [p for p, record in _work_dirs(real) if record.get("key") == key]
    workdir, lock = None, None
    if resume:
        for path in sorted(matching, key=lambda p: p.stat().st_mtime, reverse=True):
            lock = _lock(path)
            if lock is not None:
                workdir = path
                _say(f"resuming the interrupted run in {path}")
                break
        if workdir is None and matching:
            _say(f"a run of this configuration is still running in {matching[0]}; starting afresh")
        elif workdir is None:
            _say("no interrupted run of this configuration to resume; starting afresh")
    elif matching:
        _say(
            f"an interrupted run of this configuration is in {matching[0]}; pass --resume "
            "to continue it (this run starts afresh)"
        )
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f".{real.name}.partial-", dir=real.parent))
        lock = _lock(workdir)
        record = {
            "format": "grd-partial",
            "key": key,
            "profile": plan.profile,
            "experiments": list(plan.experiments),
            "command": list(command) if command else None,
            "pid": os.getpid(),
        }
        (workdir / _PARTIAL).write_text(json.dumps(record, indent=1), encoding="utf-8")
    keep = False
    try:
        results, resumed = _run_all(plan, workdir, progress)
        total = sum(seconds for _, _, seconds in results)
        sections, metrics, meta = _assemble(
            plan, results, command=command, total=total, resumed=resumed
        )
        from ..report import write_report

        for name in ("work", "done"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        for name in (_PARTIAL, ".lock"):
            (workdir / name).unlink(missing_ok=True)
        write_report(workdir, _TITLE, sections, metrics, meta)
        files, _ = _walk(workdir)
        write_marker(workdir, files, command=command, version=__version__)  # last file
        keep = True  # from here on the work directory is a complete report
        try:
            warning = install(workdir, plan_check)
        except OutputError as e:
            raise ReportNotPlacedError(f"{e} The finished report is kept in {workdir}.") from None
        if warning:
            _say(warning)
    except BaseException as e:
        if not keep:
            if resume and not isinstance(e, DivergenceError):
                _say(f"progress kept in {workdir}; rerun with --resume to continue")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.close()
    return sorted(Path(f) for f in files if f != MARKER)
