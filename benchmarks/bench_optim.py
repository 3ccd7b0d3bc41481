"""Benchmark of diffusion-NGD (grd._optim) against optax.sgd and optax.adam.

Two problems: the digits MLP (64-64-10, tanh; scikit-learn digits, 80/20 split) and a
784-256-10 MLP on generated MNIST-shaped data (grd.data.make_classification). For each:

1. step time of one jit-compiled training step (gradient + optimizer update + apply), median
   of repeated calls, relative to an SGD step and an Adam step measured in the same run;
2. training curves (train loss, test accuracy) against steps and wall time, training with
   ``jax.lax.scan`` in jit-compiled chunks (compilation excluded from the wall time).

Run:  python benchmarks/bench_optim.py            (default, ≈ 2–3 min on 2 CPU cores)
      python benchmarks/bench_optim.py --quick    (smoke run)
Writes benchmarks/results/optim.md and benchmarks/results/optim_curves.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grd._optim import diffusion_ngd
from grd.data import load_digits, make_classification
from grd.models.mlp import init_mlp, mlp_classifier

RESULTS = Path(__file__).resolve().parent / "results"


def problems(quick: bool):
    train, test = load_digits(test_fraction=0.2, seed=0)
    n_syn = 2048 if quick else 6144
    syn = make_classification(n_syn + 1024, dim=784, num_classes=10, seed=0)
    syn_train = {k: v[:n_syn] for k, v in syn.items()}
    syn_test = {k: v[n_syn:] for k, v in syn.items()}
    return {
        "digits 64-64-10": dict(train=train, test=test, hidden=(64,), in_dim=64),
        "synthetic 784-256-10": dict(train=syn_train, test=syn_test, hidden=(256,), in_dim=784),
    }


def optimizers(lr_sgd: float, lr_adam: float):
    """name -> (transformation, needs per-example losses)."""
    return {
        "sgd": (optax.sgd(lr_sgd), False),
        "adam": (optax.adam(lr_adam), False),
        "ngd weak-field c=0.3": (diffusion_ngd(lr_sgd, 0.3, relative=True), True),
        "ngd weak-field c=0.9": (diffusion_ngd(lr_sgd, 0.9, relative=True), True),
        "ngd neumann(3) c=0.9": (
            diffusion_ngd(lr_sgd, 0.9, relative=True, method="neumann", num_terms=3),
            True,
        ),
        "ngd cg(5) c=3": (diffusion_ngd(lr_sgd, 3.0, relative=True, method="cg", cg_steps=5), True),
        "ngd cg(5) c=10": (
            diffusion_ngd(lr_sgd, 10.0, relative=True, method="cg", cg_steps=5),
            True,
        ),
        "ngd woodbury c=10": (diffusion_ngd(lr_sgd, 10.0, relative=True, method="woodbury"), True),
    }


CURVE_OPTS = ("sgd", "adam", "ngd weak-field c=0.3", "ngd weak-field c=0.9", "ngd cg(5) c=10")


def make_step(tx, per_ex, uses_losses, loss_fn=None):
    """One training step; ``loss_fn`` given: pass per-example gradients (Woodbury path)."""

    def step(params, state, mb):
        losses = lambda p: per_ex(p, mb)  # noqa: E731
        g = jax.grad(lambda p: losses(p).mean())(params)
        if loss_fn is not None:
            pg = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, mb)
            u, state = tx.update(g, state, params, per_example_grads=pg)
        elif uses_losses:
            u, state = tx.update(g, state, params, per_example_loss_fn=losses)
        else:
            u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    return step


def time_steps(step, params, state, batches, reps):
    f = jax.jit(step)
    p, s = f(params, state, batches[0])
    jax.block_until_ready(p)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        p, s = f(p, s, batches[i % len(batches)])
        jax.block_until_ready(p)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def train_curve(step, params, state, train, test, per_ex, model, *, steps, chunk, batch, key):
    n = train["y"].shape[0]

    def body(carry, k):
        p, s = carry
        idx = jax.random.choice(k, n, (batch,), replace=False)
        mb = jax.tree.map(lambda x: x[idx], train)
        return step(p, s, mb), None

    run_chunk = jax.jit(lambda p, s, keys: jax.lax.scan(body, (p, s), keys)[0])
    keys = jax.random.split(key, steps).reshape(steps // chunk, chunk, -1)
    run_chunk = run_chunk.lower(params, state, keys[0]).compile()

    @jax.jit
    def evaluate(p):
        loss = per_ex(p, train).mean()
        logits = model.apply({"params": p}, test["x"])
        return loss, jnp.mean(jnp.argmax(logits, -1) == test["y"])

    rows = []
    wall = 0.0
    loss, acc = evaluate(params)
    rows.append((0, 0.0, float(loss), float(acc)))
    p, s = params, state
    for c in range(steps // chunk):
        t0 = time.perf_counter()
        p, s = run_chunk(p, s, keys[c])
        jax.block_until_ready(p)
        wall += time.perf_counter() - t0
        loss, acc = evaluate(p)
        rows.append(((c + 1) * chunk, wall, float(loss), float(acc)))
    return np.array(rows)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.2, help="SGD and NGD learning rate")
    ap.add_argument("--lr-adam", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    steps, chunk, reps = (200, 50, 10) if args.quick else (1200, 100, 30)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    opts = optimizers(args.lr, args.lr_adam)
    timing, curves = {}, {}
    for pname, prob in problems(args.quick).items():
        train = jax.tree.map(jnp.asarray, prob["train"])
        test = jax.tree.map(jnp.asarray, prob["test"])
        model, loss_fn = mlp_classifier(hidden=prob["hidden"])
        params = init_mlp(model, jax.random.PRNGKey(0), prob["in_dim"])
        d = sum(x.size for x in jax.tree.leaves(params))
        per_ex = jax.vmap(loss_fn, in_axes=(None, 0))
        rng = np.random.default_rng(0)
        idxs = [rng.choice(len(train["y"]), args.batch, replace=False) for _ in range(8)]
        batches = [{k: v[i] for k, v in train.items()} for i in idxs]
        timing[pname] = {"d": d}
        curves[pname] = {}
        for oname, (tx, uses) in opts.items():
            step = make_step(tx, per_ex, uses, loss_fn if "woodbury" in oname else None)
            timing[pname][oname] = time_steps(step, params, tx.init(params), batches, reps)
            print(f"{pname:22s} {oname:22s} step {1e3 * timing[pname][oname]:8.3f} ms", flush=True)
            if oname in CURVE_OPTS:
                curves[pname][oname] = train_curve(
                    step, params, tx.init(params), train, test, per_ex, model,
                    steps=steps, chunk=chunk, batch=args.batch, key=jax.random.PRNGKey(1),
                )  # fmt: skip
                r = curves[pname][oname][-1]
                print(f"{'':45s} final loss {r[2]:.4f}  test acc {r[3]:.3f}  wall {r[1]:.2f} s")

    # ---- plot
    fig, axes = plt.subplots(len(curves), 3, figsize=(15, 4.2 * len(curves)), squeeze=False)
    for row, (pname, cs) in enumerate(curves.items()):
        for oname, c in cs.items():
            style = "-" if oname.startswith("ngd") else "--"
            axes[row, 0].semilogy(c[:, 0], c[:, 2], style, label=oname)
            axes[row, 1].plot(c[:, 0], c[:, 3], style, label=oname)
            axes[row, 2].plot(c[:, 1], c[:, 3], style, label=oname)
        axes[row, 0].set(title=f"{pname}: train loss", xlabel="step")
        axes[row, 1].set(title=f"{pname}: test accuracy", xlabel="step")
        axes[row, 2].set(title=f"{pname}: test accuracy", xlabel="wall time (s)")
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "optim_curves.png", dpi=110)

    # ---- tables
    names = list(opts)
    lines = ["| optimizer | " + " | ".join(f"{p} (d = {timing[p]['d']})" for p in timing) + " |"]
    lines.append("|---|" + "---|" * len(timing))
    for o in names:
        cells = []
        for p in timing:
            t, ts, ta = timing[p][o], timing[p]["sgd"], timing[p]["adam"]
            cells.append(f"{1e3 * t:.3f} ms = {t / ts:.2f}× SGD = {t / ta:.2f}× Adam")
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    step_table = "\n".join(lines)

    lines = [
        "| problem | optimizer | train loss @ ¼ | train loss @ end | test acc @ ¼ | test acc @ end "
        "| wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, cs in curves.items():
        for o, c in cs.items():
            q = c[len(c) // 4]
            e = c[-1]
            lines.append(
                f"| {p} | {o} | {q[2]:.4f} | {e[2]:.4f} | {q[3]:.3f} | {e[3]:.3f} | {e[1]:.2f} |"
            )
    curve_table = "\n".join(lines)

    verdict = []
    for p, cs in curves.items():
        sgd_loss = cs["sgd"][-1, 2]
        ngd = {o: c[-1, 2] for o, c in cs.items() if o.startswith("ngd")}
        best = min(ngd, key=ngd.get)
        verdict.append(
            f"- {p}: final train loss SGD {sgd_loss:.4f}, Adam {cs['adam'][-1, 2]:.4f}, best "
            f"diffusion-NGD ({best}) {ngd[best]:.4f} (ratio to SGD {ngd[best] / sgd_loss:.3f}); "
            f"final test accuracy SGD {cs['sgd'][-1, 3]:.3f}, Adam {cs['adam'][-1, 3]:.3f}, "
            f"{best} {cs[best][-1, 3]:.3f}."
        )

    cmd = " ".join([Path(sys.executable).name, *sys.argv])
    import flax

    md = f"""# diffusion-NGD optimizer benchmark

- date: {datetime.datetime.now().isoformat(timespec="seconds")}
- machine: {machine()}
- versions: python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__},
  flax {flax.__version__}, backend {jax.default_backend()}
- command: `{cmd}`
- setup: batch {args.batch}, float32, SGD and NGD learning rate {args.lr}, Adam {args.lr_adam};
  NGD ε relative to the tracked λ_max (`relative=True`, c = ε·λ̂_max); {steps} steps,
  evaluated every {chunk} (train loss on the whole training set, accuracy on the test set).

## Step time (one jit-compiled step: gradient + update + apply; median of {reps})

{step_table}

## Training curves

![curves](optim_curves.png)

{curve_table}

## Comparison (computed by the script)

{chr(10).join(verdict)}
"""
    (args.out / "optim.md").write_text(md)
    print()
    print(step_table)
    print()
    print(curve_table)
    print()
    print("\n".join(verdict))


if __name__ == "__main__":
    main()
