"""Contrastive divergence in the diffusion metric: a binary RBM on the binarised digits (theory §7).

A binary RBM with 64 visible and 16 hidden units (few enough that the partition function is an
exact sum over 2^16 hidden states) is trained on the 8×8 scikit-learn digits thresholded at 0.5,
with minibatch contrastive divergence and three update rules, from the same initialisation
and the same minibatch order:

* **CD-1** and **CD-k**: SGD on the per-example surrogate ``ℓ_a = F(v_a) − F(ṽ_a)``
  (``grd.models.rbm.cd_loss``), ``ṽ_a`` a k-step Gibbs sample started at ``v_a``;
* **NGD-CD-1**: the same CD-1 gradient preconditioned by the inverse diffusion metric
  ``(I + εD)⁻¹`` of the current minibatch (``grd.diffusion_ngd`` with
  ``per_example_loss_fn = vmap(cd_loss)`` over the minibatch), ``ε = c/λ_max(D)`` (relative).

Each epoch is one jit-compiled ``lax.scan`` over the shuffled minibatches. After every epoch the
exact average log-likelihood (train and held-out) is computed by enumeration. Then:

* the **diffusion spectrum** of the CD-1 gradients (``grd.diffusion_spectrum`` on ``cd_loss``
  with a ``cd_batch`` of N examples, exact Gram method) at a few epochs of the CD-1 run, with
  the numerical rank (relative threshold ``λ_max·d·eps_float32``);
* **GRD against NGD** for the RBM: from the trained CD-1 point, with one CD-1 batch frozen
  (the negative samples held fixed, so the loss is a deterministic function of w), both flows
  are integrated (``grd.compare_flows``) for two values of ``ε·λ_max``, reporting the distance
  ``‖w_GRD − w_NGD‖`` and the acceleration gap ``|R|`` along the GRD path.

Run: ``python examples/rbm_digits.py [--quick] [--results]`` (``--results`` writes
``benchmarks/results/rbm.md`` and the ``rbm_*.png`` figures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import grd  # noqa: E402
from grd.data import load_digits  # noqa: E402
from grd.models import rbm  # noqa: E402

#: Full-size configuration (the default run, a few minutes on 2 CPU cores).
FULL = dict(
    n_hidden=16, epochs=40, batch_size=20, lr=0.3, k_long=10, cs=(1.0, 4.0), seeds=(0, 1, 2),
    spectrum_n=400, spectrum_epochs=(0, 1, 5, 40), flow_n=200, flow_cs=(0.1, 1.0),
    flow_ts=tuple(np.geomspace(0.05, 2.0, 7)),
)  # fmt: skip
#: Reduced configuration for ``--quick`` (a smoke run).
QUICK = dict(
    n_hidden=16, epochs=4, batch_size=20, lr=0.3, k_long=10, cs=(1.0, 4.0), seeds=(0,),
    spectrum_n=150, spectrum_epochs=(0, 4), flow_n=60, flow_cs=(0.1, 1.0),
    flow_ts=tuple(np.geomspace(0.05, 1.0, 4)),
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def methods(cfg):
    """The update rules compared: ``(label, k, learning rate, c)`` with c = ε·λ_max (None: SGD).

    CD-1 at half the learning rate is included because the metric shrinks the step: NGD-CD
    must beat a smaller SGD step, not only the same one, to count as an improvement.
    """
    lr, k = cfg["lr"], cfg["k_long"]
    out = [("CD-1", 1, lr, None), ("CD-1, η/2", 1, lr / 2, None), (f"CD-{k}", k, lr, None)]
    out += [(f"NGD-CD-1, c={c:g}", 1, lr, c) for c in cfg["cs"]]
    return out


def make_transform(lr, c, *, cg_steps=10):
    """SGD (``c is None``) or ``grd.diffusion_ngd`` with relative ε = c/λ_max and a CG inverse.

    Both accept the extra argument ``per_example_loss_fn`` (SGD ignores it), so one step
    function serves every rule.
    """
    if c is None:
        return optax.with_extra_args_support(optax.sgd(lr))
    return grd.diffusion_ngd(lr, c, relative=True, method="cg", cg_steps=cg_steps)


def make_step(tx, k):
    """One CD-k step: negative samples, per-example surrogate losses, gradient, transform.

    Returns ``step(params, opt_state, key, v_batch) -> (params, opt_state, shrink)`` with
    ``shrink = ‖update‖ / (η‖∇‖)`` measured relative to the plain SGD step on the same
    gradient (1 for SGD; < 1 where the metric shortens the step).
    """

    def step(params, opt_state, key, v_batch, lr):
        batch = rbm.cd_batch(params, v_batch, key, k)

        def losses(p):
            return jax.vmap(rbm.cd_loss, (None, 0))(p, batch)

        grads = jax.grad(lambda p: jnp.mean(losses(p)))(params)
        updates, opt_state = tx.update(grads, opt_state, params, per_example_loss_fn=losses)
        shrink = optax.tree.norm(updates) / (lr * optax.tree.norm(grads))
        return optax.apply_updates(params, updates), opt_state, shrink

    return step


def make_epoch(tx, k, lr, batch_size):
    """A jit-compiled epoch: shuffle, then ``lax.scan`` of :func:`make_step` over minibatches.

    Returns ``epoch(params, opt_state, key, x) -> (params, opt_state, mean shrink)``; the
    last incomplete minibatch is dropped.
    """
    step = make_step(tx, k)

    @jax.jit
    def epoch(params, opt_state, key, x):
        n_batches = x.shape[0] // batch_size
        key_perm, key_steps = jax.random.split(key)
        perm = jax.random.permutation(key_perm, x.shape[0])[: n_batches * batch_size]
        xb = x[perm].reshape(n_batches, batch_size, x.shape[1])

        def body(carry, inp):
            p, s = carry
            kk, vb = inp
            p, s, shrink = step(p, s, kk, vb, lr)
            return (p, s), shrink

        keys = jax.random.split(key_steps, n_batches)
        (params, opt_state), shrink = jax.lax.scan(body, (params, opt_state), (keys, xb))
        return params, opt_state, jnp.mean(shrink)

    return epoch


@jax.jit
def exact_log_likelihoods(params, x_train, x_test):
    """Exact mean log-likelihoods of two data sets sharing one ``log Z`` (one enumeration)."""
    log_z = rbm.log_partition(params)
    return tuple(-jnp.mean(rbm.free_energy(params, x)) - log_z for x in (x_train, x_test))


def train(params0, x_train, x_test, *, k, lr, c, epochs, batch_size, key, snapshots=()):
    """Train from ``params0``; exact mean log-likelihood (train, test) after every epoch.

    Returns a dict with ``ll_train``, ``ll_test`` (``epochs + 1`` values, epoch 0 = init),
    ``shrink`` (per epoch), ``seconds`` (training only, after compilation) and the parameter
    ``snapshots`` at the requested epochs.
    """
    tx = make_transform(lr, c)
    epoch_fn = make_epoch(tx, k, lr, batch_size)
    params, state = params0, tx.init(params0)
    ll_train, ll_test, shrink, snaps = [], [], [], {}
    seconds = 0.0
    for e in range(epochs + 1):
        ll_tr, ll_te = exact_log_likelihoods(params, x_train, x_test)
        ll_train.append(float(ll_tr))
        ll_test.append(float(ll_te))
        if e in snapshots:
            snaps[e] = params
        if e == epochs:
            break
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        params, state, s = jax.block_until_ready(epoch_fn(params, state, sub, x_train))
        if e > 0:  # epoch 0 includes compilation
            seconds += time.perf_counter() - t0
        shrink.append(float(s))
    return dict(
        ll_train=np.array(ll_train), ll_test=np.array(ll_test), shrink=np.array(shrink),
        seconds_per_epoch=seconds / max(epochs - 1, 1), params=params, snapshots=snaps,
    )  # fmt: skip


def load(dtype=np.float64):
    """Binarised digits, 80 % train / 20 % held out (fixed shuffle)."""
    train_set, test_set = load_digits(binarize=True, test_fraction=0.2, seed=0, dtype=dtype)
    return jnp.asarray(train_set["x"]), jnp.asarray(test_set["x"])


def run_training(cfg, x_train, x_test):
    """Every rule of :func:`methods` for every seed (same init and minibatch keys per seed)."""
    results = {}
    for seed in cfg["seeds"]:
        init = rbm.init_rbm(
            jax.random.PRNGKey(seed), 64, cfg["n_hidden"], dtype=x_train.dtype,
            data_mean=jnp.mean(x_train, axis=0),
        )  # fmt: skip
        for label, k, lr, c in methods(cfg):
            snaps = cfg["spectrum_epochs"] if (label == "CD-1" and seed == cfg["seeds"][0]) else ()
            out = train(
                init, x_train, x_test, k=k, lr=lr, c=c, epochs=cfg["epochs"],
                batch_size=cfg["batch_size"], key=jax.random.PRNGKey(1000 + seed),
                snapshots=snaps,
            )  # fmt: skip
            results.setdefault(label, []).append(out)
            print(
                f"seed {seed} {label:>16}: LL train {out['ll_train'][-1]:8.3f}, "
                f"test {out['ll_test'][-1]:8.3f}, step shrink {np.mean(out['shrink']):.3f}, "
                f"{out['seconds_per_epoch'] * 1e3:.0f} ms/epoch",
                flush=True,
            )
    return results


# --------------------------------------------------------------------------------------
# Diffusion spectrum of CD gradients, and GRD against NGD
# --------------------------------------------------------------------------------------


def spectrum_at(params, x, key, n):
    """Spectrum of D of the CD-1 per-example gradients over ``n`` training examples."""
    batch = rbm.cd_batch(params, x[:n], key, 1)
    spec = grd.diffusion_spectrum(rbm.cd_loss, params, batch)  # exact (Gram), N − 1 values
    lam = np.asarray(spec.eigenvalues)
    d = sum(p.size for p in jax.tree_util.tree_leaves(params))
    rank = int(grd.diffusion_rank(lam, d))
    gbar = jax.grad(lambda p: jnp.mean(jax.vmap(rbm.cd_loss, (None, 0))(p, batch)))(params)
    exact = rbm.exact_kl_gradient(params, x)
    flat = lambda t: jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(t)])  # noqa: E731
    cos = float(
        flat(gbar) @ flat(exact) / (jnp.linalg.norm(flat(gbar)) * jnp.linalg.norm(flat(exact)))
    )
    return dict(
        eigenvalues=lam, rank=rank, d=d, n=n, lam_max=float(lam[0]), trace=float(lam.sum()),
        top10=float(lam[:10].sum() / lam.sum()), grad_norm2=float(flat(gbar) @ flat(gbar)),
        cos_exact=cos,
    )  # fmt: skip


def run_spectra(cfg, snapshots, x_train, key):
    return {e: spectrum_at(p, x_train, jax.random.fold_in(key, e), cfg["spectrum_n"])
            for e, p in sorted(snapshots.items())}  # fmt: skip


def run_flows(cfg, params, x_train, key):
    """GRD vs NGD from ``params`` on one frozen CD-1 batch of ``flow_n`` examples."""
    batch = rbm.cd_batch(params, x_train[: cfg["flow_n"]], key, 1)
    lam = float(grd.lambda_max(rbm.cd_loss, params, batch))
    ts = jnp.asarray(cfg["flow_ts"])
    out = dict(ts=np.asarray(ts), cs=np.asarray(cfg["flow_cs"]), lam_max=lam, n=cfg["flow_n"])
    for key_ in ("distance", "residual_norm", "loss_grd", "loss_ngd", "field_strength"):
        out[key_] = []
    for c in cfg["flow_cs"]:
        comp = grd.compare_flows(
            rbm.cd_loss, params, batch, eps=jnp.asarray(c / lam), ts=ts, rtol=1e-7, atol=1e-9
        )
        if not (comp.result_grd == diffrax.RESULTS.successful
                and comp.result_ngd == diffrax.RESULTS.successful):  # fmt: skip
            raise RuntimeError(f"a flow solve failed at c = {c}")
        for key_ in ("distance", "residual_norm", "loss_grd", "loss_ngd", "field_strength"):
            out[key_].append(np.asarray(getattr(comp, key_)))
    for key_ in ("distance", "residual_norm", "loss_grd", "loss_ngd", "field_strength"):
        out[key_] = np.stack(out[key_])
    # Speed of the NGD path at t = 0 (to read the distances relative to the path length).
    out["ngd_speed0"] = float(optax.tree.norm(grd.ngd_velocity(
        rbm.cd_loss, params, batch, eps=jnp.asarray(cfg["flow_cs"][-1] / lam))))  # fmt: skip
    return out


def run(cfg):
    x_train, x_test = load()
    t0 = time.perf_counter()
    results = run_training(cfg, x_train, x_test)
    t_train = time.perf_counter() - t0
    snaps = results["CD-1"][0]["snapshots"]
    spectra = run_spectra(cfg, snaps, x_train, jax.random.PRNGKey(7))
    t_spectra = time.perf_counter() - t0 - t_train
    flows = run_flows(cfg, results["CD-1"][0]["params"], x_train, jax.random.PRNGKey(8))
    return dict(cfg=cfg, n_train=x_train.shape[0], n_test=x_test.shape[0], results=results,
                spectra=spectra, flows=flows, t_train=t_train, t_spectra=t_spectra,
                t_total=time.perf_counter() - t0)  # fmt: skip


# --------------------------------------------------------------------------------------
# Report and figures
# --------------------------------------------------------------------------------------


def _mean_spread(values):
    v = np.asarray(values)
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}"


def _tail(curve, n=5):
    """Mean of the last ``n`` epochs: less sensitive to the step-to-step noise of CD at a
    fixed learning rate than the final value."""
    return float(np.mean(curve[-n:]))


def report(out):
    cfg, res = out["cfg"], out["results"]
    E = cfg["epochs"]
    lines = [
        f"Binary RBM 64–{cfg['n_hidden']} (d = {64 * cfg['n_hidden'] + 64 + cfg['n_hidden']}) on "
        f"the binarised digits: {out['n_train']} train / {out['n_test']} held-out examples, "
        f"{E} epochs of minibatch {cfg['batch_size']}, learning rate η = {cfg['lr']}, "
        f"seeds {list(cfg['seeds'])} (same init and minibatch order for every rule). Exact "
        "log-likelihood (nats per example, log Z by enumeration over 2^16 hidden states). "
        "NGD-CD-1: `grd.diffusion_ngd(η, c, relative=True, method='cg', cg_steps=10)`, "
        "ε = c/λ̂_max of the minibatch D. Values: mean ± s.e. over seeds.",
        "",
        "| rule | LL train, final | LL held-out, final | held-out, mean of last 5 epochs | "
        "best held-out (epoch) | ‖update‖/(η‖∇‖) | ms / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in res.items():
        best = [r["ll_test"].max() for r in runs]
        best_ep = int(np.argmax(np.mean([r["ll_test"] for r in runs], axis=0)))
        lines.append(
            f"| {label} | {_mean_spread([r['ll_train'][-1] for r in runs])} | "
            f"{_mean_spread([r['ll_test'][-1] for r in runs])} | "
            f"{_mean_spread([_tail(r['ll_test']) for r in runs])} | {_mean_spread(best)} "
            f"({best_ep}) | {np.mean([r['shrink'].mean() for r in runs]):.3f} | "
            f"{np.mean([r['seconds_per_epoch'] for r in runs]) * 1e3:.0f} |"
        )
    init = res["CD-1"][0]
    lines += [
        "",
        f"At initialisation (visible biases from the data marginals): LL train "
        f"{init['ll_train'][0]:.3f}, held-out {init['ll_test'][0]:.3f}.",
        "",
        "Held-out LL per epoch (first seed):",
        "",
        "| epoch | " + " | ".join(res) + " |",
        "|---" * (len(res) + 1) + "|",
    ]
    for e in sorted({0, 1, 2, 5, 10, 20, E} & set(range(E + 1))):
        lines.append(
            f"| {e} | " + " | ".join(f"{r[0]['ll_test'][e]:.3f}" for r in res.values()) + " |"
        )
    sp = out["spectra"]
    lines += [
        "",
        f"Diffusion spectrum of the CD-1 per-example gradients (N = {cfg['spectrum_n']} training "
        "examples, one CD-1 batch, exact Gram method) along the CD-1 run; rank at the relative "
        "threshold λ_max·d·eps_float32; `cos(ḡ, ∇KL)` = cosine between the mean CD-1 gradient "
        "of these N examples and the exact likelihood gradient on the whole training set; "
        "B_simple = tr D/|ḡ|² (McCandlish et al.).",
        "",
        "| epoch | λ_max | tr D | top-10 share of tr D | rank (of ≤ N−1) | rank/d | B_simple | "
        "cos(ḡ, ∇KL) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e, s in sp.items():
        lines.append(
            f"| {e} | {s['lam_max']:.4g} | {s['trace']:.4g} | {s['top10']:.3f} | {s['rank']} "
            f"(of {s['n'] - 1}) | {s['rank'] / s['d']:.3f} | {s['trace'] / s['grad_norm2']:.3g} | "
            f"{s['cos_exact']:.3f} |"
        )
    fl = out["flows"]
    lines += [
        "",
        f"GRD against NGD from the trained CD-1 parameters (first seed), on one frozen CD-1 "
        f"batch of N = {fl['n']} examples (the loss is the CD surrogate with the negative "
        f"samples fixed), λ_max(D(w₀)) = {fl['lam_max']:.4g}; GRD started on the NGD "
        f"velocity (|ẇ₀| = {fl['ngd_speed0']:.3g} at the larger ε); Tsit5, rtol 1e-7, CG "
        "inverse, float64.",
        "",
        "| c = ε·λ_max(w₀) | t | ‖w_GRD − w_NGD‖ | |R| | loss NGD | loss GRD | ε·λ_max(w(t)) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(fl["cs"]):
        for j, t in enumerate(fl["ts"]):
            lines.append(
                f"| {c:g} | {t:.3g} | {fl['distance'][i, j]:.3e} | {fl['residual_norm'][i, j]:.3e} "
                f"| {fl['loss_ngd'][i, j]:.4f} | {fl['loss_grd'][i, j]:.4f} | "
                f"{fl['field_strength'][i, j]:.3f} |"
            )
    lines += [
        "",
        f"Wall time (shared, loaded 2-core machine): training and exact LL "
        f"{out['t_train']:.0f} s, spectra {out['t_spectra']:.0f} s, all {out['t_total']:.0f} s.",
    ]
    return "\n".join(lines)


def verdict(out):
    """One sentence per NGD rule: its held-out LL (mean of the last 5 epochs) against the best
    SGD CD-1 rule (CD-1 at η or η/2), per seed (paired: same init and minibatch order)."""
    res = out["results"]
    sgd = {lab: np.array([_tail(r["ll_test"]) for r in runs]) for lab, runs in res.items()
           if lab == "CD-1" or lab.startswith("CD-1,")}  # fmt: skip
    best_lab = max(sgd, key=lambda lab: sgd[lab].mean())
    lines = []
    for lab, runs in res.items():
        if not lab.startswith("NGD"):
            continue
        v = np.array([_tail(r["ll_test"]) for r in runs])
        diff = v - sgd[best_lab]
        lines.append(
            f"{lab}: held-out LL (last 5 epochs) {v.mean():.3f} vs {best_lab} "
            f"{sgd[best_lab].mean():.3f} "
            f"(difference {diff.mean():+.3f}"
            + (f", per seed {', '.join(f'{x:+.3f}' for x in diff)})" if len(diff) > 1 else ")")
        )
    return lines


def plot_ll(out, path=None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for i, (label, runs) in enumerate(out["results"].items()):
        color = f"C{i}"
        for split, a in (("ll_train", ax[0]), ("ll_test", ax[1])):
            m = np.mean([r[split] for r in runs], axis=0)
            a.plot(np.arange(len(m)), m, "-", color=color, label=label)
            if len(runs) > 1:
                lo = np.min([r[split] for r in runs], axis=0)
                hi = np.max([r[split] for r in runs], axis=0)
                a.fill_between(np.arange(len(m)), lo, hi, color=color, alpha=0.15)
    ax[0].set(xlabel="epoch", ylabel="exact mean log-likelihood (nats)", title="train")
    ax[1].set(xlabel="epoch", title="held-out")
    lo = min(np.min([r["ll_test"][1:] for r in runs]) for runs in out["results"].values())
    ax[0].set_ylim(lo - 1.0, None)
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def plot_spectrum(out, path=None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for e, s in out["spectra"].items():
        lam = s["eigenvalues"]
        ax.semilogy(np.arange(1, len(lam) + 1), np.maximum(lam, 1e-16), label=f"epoch {e} "
                    f"(rank {s['rank']})")  # fmt: skip
    ax.set(xlabel="index", ylabel="eigenvalue of D",
           title=f"CD-1 gradient diffusion spectrum (N = {out['cfg']['spectrum_n']})")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def plot_flows(out, path=None):
    import matplotlib.pyplot as plt

    fl = out["flows"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for i, c in enumerate(fl["cs"]):
        ax[0].loglog(fl["ts"], fl["distance"][i], "o-", label=f"ε·λ_max = {c:g}")
        ax[1].loglog(fl["ts"], fl["residual_norm"][i], "o-", label=f"ε·λ_max = {c:g}")
    ax[0].set(xlabel="t", ylabel="‖w_GRD(t) − w_NGD(t)‖", title="RBM: GRD leaves NGD")
    ax[1].set(xlabel="t", ylabel="|R| along GRD", title="acceleration gap R")
    ax[0].legend()
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run (about a minute)")
    ap.add_argument("--results", action="store_true",
                    help="write benchmarks/results/rbm.md and rbm_*.png")  # fmt: skip
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = run(cfg)
    text = report(out)
    verdicts = verdict(out)
    print(text)
    print("\n".join(verdicts))
    if args.results:
        root = Path(__file__).resolve().parents[1]
        sys.path.insert(0, str(root / "benchmarks"))
        from _common import RESULTS_DIR, write_results

        RESULTS_DIR.mkdir(exist_ok=True)
        figs = {"ll": plot_ll, "spectrum": plot_spectrum, "grd_ngd": plot_flows}
        for name, fn in figs.items():
            fn(out, RESULTS_DIR / f"rbm_{name}.png")
        body = (
            text + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n\n"
            + "\n".join(f"![{n}](rbm_{n}.png)" for n in figs)
        )  # fmt: skip
        print(
            write_results("rbm", "RBM on binarised digits: CD-1, CD-k and diffusion-NGD CD", body)
        )
    return out


if __name__ == "__main__":
    main()
