"""Whole data sets (issue 8): full-data D·v, top-k spectrum and a short flow, chunked vs not.

Data: all 1 797 scikit-learn digits (MLP 64-64-10) and generated MNIST-shaped sets
``grd.data.make_classification(N, dim=784)`` with N = 6 000, 20 000, 60 000 (MLP 784-256-10).
Operations, each jit-compiled and run over the *whole* set:

- ``D·v``: ``_diffusion_matvec`` (one JVP pass + one VJP pass);
- spectrum: ``diffusion_spectrum(k=10, method="lanczos")`` (20 matrix-free products);
- flow: ``grd._flows.integrate(flow="ngd", eps=1, inverse="cg")`` with two fixed Euler steps
  of 0.05 (each step a gradient plus a CG solve of ``(I + εD) x = ∇f``, rtol 1e-6).

Each configuration (data set, N, ``chunk_size`` or none) runs in a fresh subprocess that
reports, per operation: the wall time (one call of the compiled program), XLA's compiled working
memory (``peak_temp_bytes``: temp + output bytes from ``memory_analysis``), and the process'
peak RSS during that operation's run (``VmHWM`` from ``/proc/self/status``, reset with
``echo 5 > /proc/self/clear_refs`` just before the run, next to ``VmRSS`` before it). Not
``getrusage``'s ``ru_maxrss``: it cannot be reset, and Linux carries it over fork+exec from the
parent (a 1.5 GB parent makes a 13 MB child report 1.4 GB); the generation of the 60 000 inputs
in float64 would also mask every operation.

Run: ``python benchmarks/bench_scale.py [--quick]``; writes ``benchmarks/results/scale.md`` and
``benchmarks/results/scale_memory.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def vmhwm(field: str = "VmHWM") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return -1


def reset_peak() -> bool:
    """Reset this process' VmHWM to its current RSS (Linux ≥ 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(cfg):
    import resource

    import diffrax
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(HERE))
    from _common import peak_temp_bytes

    from grd._diffusion import _diffusion_matvec, diffusion_spectrum
    from grd._flows import integrate
    from grd.data import load_digits, make_classification
    from grd.models.mlp import init_mlp, mlp_classifier

    if cfg["data"] == "digits":
        batch = load_digits()
        hidden, dim = (64,), 64
    else:
        batch = make_classification(cfg["n"], dim=784, seed=0)
        hidden, dim = (256,), 784
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    model, loss_fn = mlp_classifier(hidden, num_classes=10, activation="tanh")
    params = init_mlp(model, jax.random.PRNGKey(0), dim)
    v = jax.tree_util.tree_map(
        lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape, p.dtype), params
    )
    jax.block_until_ready((batch, params, v))
    cs = cfg["chunk"]
    out = {
        "n": int(batch["y"].shape[0]),
        "d": sum(x.size for x in jax.tree_util.tree_leaves(params)),
        "rss_base": vmhwm(),
    }
    ops = {
        "D·v": (
            jax.jit(lambda p, b, u: _diffusion_matvec(loss_fn, p, b, u, cs)),
            (params, batch, v),
        ),
        "top-10 Lanczos": (
            jax.jit(
                lambda p, b: (
                    diffusion_spectrum(
                        loss_fn, p, b, 10, method="lanczos", num_matvecs=20, chunk_size=cs
                    ).eigenvalues
                )
            ),
            (params, batch),
        ),
        "NGD flow (2 Euler steps, CG)": (
            jax.jit(
                lambda p, b: (
                    integrate(
                        loss_fn,
                        p,
                        b,
                        flow="ngd",
                        eps=1.0,
                        inverse="cg",
                        t1=0.1,
                        dt0=0.05,
                        solver=diffrax.Euler(),
                        stepsize_controller=diffrax.ConstantStepSize(),
                        max_steps=4,
                        chunk_size=cs,
                    ).ys
                )
            ),
            (params, batch),
        ),
    }
    results = {}
    for name in cfg["ops"]:
        fn, args = ops[name]
        r = {"bytes": peak_temp_bytes(fn, *args)}
        compiled = fn.lower(*args).compile()  # time one run of the compiled program
        r["rss_before"] = vmhwm("VmRSS")
        r["reset"] = reset_peak()
        t0 = time.perf_counter()
        res = jax.block_until_ready(compiled(*args))
        r["time"] = time.perf_counter() - t0
        leaves = jax.tree_util.tree_leaves(res)
        r["finite"] = bool(all(bool(jnp.all(jnp.isfinite(x))) for x in leaves))
        if name == "top-10 Lanczos":
            r["lambda_max"] = float(res[0])
        r["rss"] = vmhwm()
        results[name] = r
    out["ops"] = results
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_child(cfg):
    r = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {cfg} failed:\n{r.stderr[-3000:]}")


def summary(rows):
    """Measured memory against N, chunked vs not (generated set), in words."""
    out = ["Compiled working memory (MiB) against N on the generated set:"]
    gen = [r for r in rows if r["cfg"]["data"] == "generated"]
    ns = sorted({r["n"] for r in gen})
    for name in ("D·v", "top-10 Lanczos", "NGD flow (2 Euler steps, CG)"):
        for chunk in (1000, None, 1024):
            sel = {
                r["n"]: r["ops"][name]["bytes"]
                for r in gen
                if r["cfg"]["chunk"] == chunk and name in r["ops"]
            }
            if sel:
                vals = ", ".join(f"N={n}: {mib(sel[n])}" for n in ns if n in sel)
                out.append(f"- {name}, chunk_size={chunk}: {vals}")
    return "\n".join(out)


def mib(b):
    return f"{b / 2**20:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: N ≤ 6 000, D·v and spectrum only"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    all_ops = ["D·v", "top-10 Lanczos", "NGD flow (2 Euler steps, CG)"]
    configs = [dict(data="digits", n=1797, chunk=None), dict(data="digits", n=1797, chunk=599)]
    ns = (2000, 6000) if args.quick else (6000, 20000, 60000)
    for n in ns:
        configs.append(dict(data="generated", n=n, chunk=1000))
        configs.append(dict(data="generated", n=n, chunk=None))
    if not args.quick:
        # N not a multiple of the chunk: the last chunk is padded
        configs.append(dict(data="generated", n=60000, chunk=1024, ops=all_ops[:1]))
    rows = []
    for cfg in configs:
        cfg.setdefault("ops", all_ops[:2] if args.quick else all_ops)
        t0 = time.perf_counter()
        res = run_child(cfg)
        res["cfg"] = cfg
        rows.append(res)
        print(
            f"{cfg} done in {time.perf_counter() - t0:.0f} s: {json.dumps(res['ops'])}", flush=True
        )

    # ---- write (jax imported only now, after every child ran)
    sys.path.insert(0, str(HERE))
    from _common import RESULTS_DIR, write_results

    head = (
        "| data | N | d | chunk_size | operation | time (s) | compiled working memory (MiB) | "
        "RSS before the run (MiB) | peak RSS during the run (MiB) | peak − before (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        c = r["cfg"]
        for name, o in r["ops"].items():
            lines.append(
                f"| {c['data']} | {r['n']} | {r['d']} | {c['chunk'] or '— (unchunked)'} | {name} | "
                f"{o['time']:.3g} | {mib(o['bytes'])} | {mib(o['rss_before'])} | {mib(o['rss'])} | "
                f"{mib(o['rss'] - o['rss_before'])} |"
            )
    lam = [
        f"{r['cfg']['data']} N={r['n']} chunk={r['cfg']['chunk']}: "
        f"λ_max = {r['ops']['top-10 Lanczos']['lambda_max']:.5g}"
        for r in rows
        if "top-10 Lanczos" in r["ops"]
    ]
    finite = all(o["finite"] for r in rows for o in r["ops"].values())
    # plot: compiled memory against N, chunked vs not
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for chunk, style in ((1000, "o-"), (None, "s--")):
        sel = [r for r in rows if r["cfg"]["data"] == "generated" and r["cfg"]["chunk"] == chunk]
        for name in sel[0]["ops"] if sel else []:
            N = [r["n"] for r in sel]
            lab = f"{name}, {'chunk 1000' if chunk else 'unchunked'}"
            ax[0].loglog(N, [r["ops"][name]["bytes"] / 2**20 for r in sel], style, label=lab)
            ax[1].loglog(
                N,
                [
                    max(r["ops"][name]["rss"] - r["ops"][name]["rss_before"], 2**20) / 2**20
                    for r in sel
                ],
                style,
                label=lab,
            )
    ax[0].set_title("XLA compiled working memory (MLP 784-256-10)")
    ax[1].set_title("peak RSS during the run − RSS before (floored at 1 MiB)")
    for a in ax:
        a.set_xlabel("N (examples)")
        a.set_ylabel("MiB")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=6)
    fig.tight_layout()
    RESULTS_DIR.mkdir(exist_ok=True)
    fig.savefig(RESULTS_DIR / "scale_memory.png", dpi=110)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    body = f"""Every operation runs over the whole data set, jit-compiled, float32, CPU; one timed
call of the compiled program (wall time, noisy: the machine is shared). Each row group is a fresh
subprocess; "compiled working memory" is XLA's temp + output bytes of that operation's compiled
program (`peak_temp_bytes`); "peak RSS during the run" the process' high-water mark (`VmHWM`,
reset just before the run of the compiled program), "RSS before" its `VmRSS` then (jax, the data
set, the parameters and the compiled programs in memory). Lanczos:
20 products, k = 10. Flow: `integrate(flow="ngd", eps=1.0, inverse="cg")`, two Euler steps of 0.05.

Machine load: load average {load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f} at the start; `{up}` at
the end. Run wall time {time.perf_counter() - t_start:.0f} s. All outputs finite: {finite}.

{chr(10).join(lines)}

{summary(rows)}

Top eigenvalue of D found by each configuration (chunked and unchunked must agree):
{chr(10).join("- " + x for x in lam)}

Plot: `benchmarks/results/scale_memory.png`.
"""
    print(body)
    print(
        "\nwritten to "
        + str(
            write_results("scale", "Whole data sets: chunked vs unchunked memory (issue 8)", body)
        )
    )


if __name__ == "__main__":
    main()
