"""The ``grd`` command line: ``grd reproduce``, ``grd bench``, ``grd info``.

Exit codes: 0 success; 2 bad arguments or an unusable path, reported in one line on stderr
before any computation (argparse's convention); 1 a failure during a run (one line); 3 the
training diverged (one line: the step, the loss, what to try); 130 interrupted (Ctrl-C);
143 terminated (SIGTERM). ``--debug`` (or ``GRD_DEBUG=1``) also prints the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from . import _reproduce as rp

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line: ``grd <cmd>: error: ...``."""

    def error(self, message):
        message = " ".join(str(message).split())
        if "unrecognized arguments" in message:
            gone = [o for o in _REMOVED if re.search(rf"(^|\s|:){re.escape(o)}(=|\s|$)", message)]
            if gone:
                message += "; " + "; ".join(f"{o} was removed: use {_REMOVED[o]}" for o in gone)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _float_list(kind):
    def parse(text: str) -> tuple[float, ...]:
        parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
        if not parts:
            raise argparse.ArgumentTypeError("expected at least one value")
        return tuple(kind(p) for p in parts)

    return parse


def _name_list(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated experiment names or 'all'")
    return parts


def _seed_list(text: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        seeds = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not seeds or any(not 0 <= s <= 2**32 - 1 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected integers in [0, 2**32 - 1], got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return seeds


#: Options of the old single-run pipeline and what replaces them (a clear error, not a guess).
_REMOVED = {
    "--sections": "--experiments",
    "--seed": "--seeds",
    "--width": "--set EXPERIMENT.hidden=…",
    "--n-train": "--set EXPERIMENT.n_train=…",
    "--steps": "--set EXPERIMENT.FIELD=… (see --list)",
    "--batch-size": "--set EXPERIMENT.batch_size=…",
    "--lr": "--set EXPERIMENT.lr=…",
    "--record-every": "--set EXPERIMENT.FIELD=… (see --list)",
    "--checkpoints": "--set EXPERIMENT.FIELD=… (see --list)",
    "--eps": "--set EXPERIMENT.FIELD=… (see --list)",
    "--cycle-steps": "--set EXPERIMENT.FIELD=… (see --list)",
    "--data-seed": "--seeds",
    "--keep-trajectory": "nothing (experiments keep no trajectories)",
}


def _add_reproduce(sub) -> None:
    names = ", ".join(rp.registry())
    p = sub.add_parser(
        "reproduce",
        help="test the claims of the source papers (experiments against null models) and "
        "write a report directory",
        description=(
            "Run the registered experiments — each tests a claim of a source paper the way "
            "the paper tested it, at a size two CPU cores allow, against a null model or "
            "control, over several seeds, and ends in a verdict — and write a self-contained "
            "directory: report.html (a Findings table first, then one section per experiment; "
            "figures embedded, opens from disk), report.md, figures/*.png and metrics.json "
            "(every number shown, the findings, run times). Profiles: default (a few minutes "
            "on 2 CPU cores), --full (the paper-scale designs, up to 2 hours, checkpointed: "
            "see --resume) and --tiny (seconds; smoke tests)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        default=Path("grd-report"),
        help="report directory (created; written atomically at the end, with a .grd-report "
        "marker listing its files)",
    )
    p.add_argument(
        "--force",
        "-f",
        action="store_true",
        help="replace --out if it holds a report grd wrote (otherwise: ask on a terminal, "
        "refuse in non-interactive use). A directory grd did not write, or a report to "
        "which files were added, is never replaced, even with --force",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same configuration (the hidden "
        ".OUT.partial-* directory beside --out; a fresh start if there is none): finished "
        "experiments are not rerun and the interrupted one continues from its checkpoints; "
        "keep this run's progress if it is interrupted",
    )
    profile = p.add_mutually_exclusive_group()
    profile.add_argument(
        "--full",
        action="store_true",
        help="the paper-scale profile (up to 2 hours on 2 CPU cores; use with --resume)",
    )
    profile.add_argument(
        "--tiny",
        action="store_true",
        help="the seconds-long profile for smoke tests (its numbers mean nothing)",
    )
    p.add_argument(
        "--experiments",
        type=_name_list,
        default=None,
        metavar="NAME[,NAME...]",
        help=f"the experiments to run, or 'all' (the default); run in registry order. "
        f"Experiments: {names}",
    )
    p.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        metavar="S[,S...]",
        help="the seeds every experiment repeats over (default: 0,1,2; --tiny: 0,1)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME.FIELD=VALUE",
        help="change one field of an experiment's configuration (repeatable), e.g. "
        "--set diffusion_maps.lr=0.05; --list shows the fields",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the experiments, their sources and their configuration in the chosen "
        "profile, and exit",
    )
    p.add_argument("--float64", action="store_true", help="compute in float64 (enables jax x64)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines or bars")
    _add_debug(p)
    p.set_defaults(func=_cmd_reproduce, parser=p)


def _add_debug(p) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        help="print the Python traceback of a failure (also GRD_DEBUG=1)",
    )


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmark scripts benchmarks/bench_*.py and print their tables",
        description=(
            "Run each benchmarks/bench_*.py script in a subprocess (with --quick when the "
            "script supports it, unless --full) and print its output. Benchmarks are looked "
            "for in --dir, else ./benchmarks, else the benchmarks/ directory of the grd "
            "source checkout. The scripts write their own results files (benchmarks/results/), "
            "so a --quick run replaces the full results there: commit those only from full runs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dir", type=Path, default=None, help="directory holding bench_*.py")
    p.add_argument("--full", action="store_true", help="run without --quick (slow)")
    p.add_argument(
        "-k",
        "--filter",
        default=None,
        metavar="SUBSTRING",
        help="only run scripts whose name contains SUBSTRING",
    )
    p.add_argument("--list", action="store_true", help="list the scripts and exit")
    p.add_argument(
        "--timeout", type=_positive_float, default=1800.0, help="seconds allowed per script"
    )
    _add_debug(p)
    p.set_defaults(func=_cmd_bench, parser=p)


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="print versions, devices and whether float64 (x64) is enabled",
        description="Print the versions of grd and its JAX stack, the devices and the x64 flag.",
    )
    _add_debug(p)
    p.set_defaults(func=_cmd_info, parser=p)


def build_parser() -> argparse.ArgumentParser:
    """The ``grd`` argument parser (subcommands reproduce, bench, info)."""
    parser = _Parser(
        prog="grd",
        description="grd: the geometry of SGD in JAX (diffusion matrix, diffusion metric, "
        "GRD/NGD flows, SGD analysis).",
        epilog="Run 'grd <command> --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    sub.required = True
    _add_reproduce(sub)
    _add_bench(sub)
    _add_info(sub)
    return parser


# --------------------------------------------------------------------------------------------


def _cmd_reproduce(args) -> int:
    p = args.parser
    profile = "full" if args.full else "tiny" if args.tiny else "default"
    # 1. the plan (experiments, seeds, configuration overrides): checked before anything runs
    experiments = None if args.experiments in (None, ("all",)) else args.experiments
    try:
        plan = rp.make_plan(
            profile,
            experiments=experiments,
            seeds=args.seeds,
            overrides=args.overrides,
            float64=args.float64,
        )
    except ValueError as e:
        p.error(str(e))
    if args.list:
        reg = rp.registry()
        for name in plan.experiments:
            exp = reg[name]
            print(f"{name}: {exp.title} [{'; '.join(exp.sources)}]")
            print(f"    {profile}: {plan.configs[name]}")
        return 0
    # 2. the output path: nothing is computed before it is known to be usable
    out: Path = args.out
    try:
        rp.check_output(out, overwrite=args.force)
    except rp.OutputExistsError as e:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            p.error(str(e))
        check = rp.check_output(out, overwrite=True)
        print(f"{check.describe()}.", file=sys.stderr)
        # the prompt goes to stderr with the rest of the dialogue (stdout may be redirected)
        print("Delete these files and write the new report there? [y/N] ", end="", file=sys.stderr)
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            print("grd reproduce: not replacing it; nothing done.", file=sys.stderr)
            return 1
    except rp.OutputError as e:
        p.error(str(e))
    files = rp.reproduce(
        plan,
        out,
        overwrite=True,
        progress=not args.quiet,
        command=["grd", *sys.argv[1:]] if args.argv is None else ["grd", *args.argv],
        resume=args.resume,
    )
    print(f"wrote {len(files)} files to {out}/ (open {out / 'report.html'})")
    return 0


def _find_benchmarks(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    for cand in (Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"):
        if cand.is_dir() and any(cand.glob("bench_*.py")):
            return cand
    return None


def _cmd_bench(args) -> int:
    p = args.parser
    root = _find_benchmarks(args.dir)
    if root is None:
        p.error("no benchmarks/ directory with bench_*.py found; pass --dir")
    if not root.is_dir():
        p.error(f"--dir {root} is not a directory")
    scripts = sorted(root.glob("bench_*.py"))
    if args.filter:
        scripts = [s for s in scripts if args.filter in s.name]
    if not scripts:
        p.error(
            f"no bench_*.py script in {root}"
            + (f" matching {args.filter!r}" if args.filter else "")
        )
    if args.list:
        for s in scripts:
            print(s)
        return 0
    failed = []
    for script in scripts:
        quick = not args.full and "--quick" in script.read_text(encoding="utf-8")
        cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
        print(f"=== {script.name}{' --quick' if quick else ''}", flush=True)
        try:  # the script's tables stream straight to our stdout; stderr is kept for errors
            proc = subprocess.run(
                cmd, cwd=root.parent, timeout=args.timeout, stderr=subprocess.PIPE, text=True
            )
        except subprocess.TimeoutExpired:
            print(f"grd bench: {script.name} timed out after {args.timeout:g} s", file=sys.stderr)
            failed.append(script.name)
            continue
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
            print(
                f"grd bench: {script.name} failed (exit {proc.returncode}): {tail[0]}",
                file=sys.stderr,
            )
            failed.append(script.name)
        sys.stdout.flush()
    if failed:
        print(
            f"grd bench: {len(failed)} of {len(scripts)} failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_info(args) -> int:
    del args
    import jax

    versions = rp.versions()
    width = max(len(k) for k in versions)
    for name, version in versions.items():
        print(f"{name:<{width}}  {version}")
    print(f"{'devices':<{width}}  {', '.join(str(d) for d in jax.devices())}")
    print(f"{'backend':<{width}}  {jax.default_backend()}")
    print(f"{'x64':<{width}}  {'on' if jax.config.jax_enable_x64 else 'off'}")
    return 0


class _Terminated(BaseException):
    """SIGTERM, raised so that the same clean-up as for Ctrl-C runs."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grd`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line message
        return int(e.code) if isinstance(e.code, int) else 2
    args.argv = argv
    debug = bool(getattr(args, "debug", False) or os.environ.get("GRD_DEBUG"))
    name = f"grd {args.command}"
    try:
        previous, installed = signal.signal(signal.SIGTERM, _on_sigterm), True
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous, installed = None, False
    try:
        return args.func(args)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted.", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{name}: terminated (SIGTERM).", file=sys.stderr)
        return 143
    except Exception as e:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--debug shows the traceback)"
        if isinstance(e, rp.DivergenceError):
            print(f"{name}: {_one_line(e)}", file=sys.stderr)
            return 3
        if isinstance(e, rp.OutputError):  # the output path changed after the checks
            print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        print(f"{name}: error: {type(e).__name__}: {_one_line(e)}{hint}", file=sys.stderr)
        return 1
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
