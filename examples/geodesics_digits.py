"""GRD against NGD against GD on the real digits data (theory §5).

A two-layer flax MLP (64-H-10, tanh) on a few hundred scikit-learn digits. From the same
start we integrate gradient descent, natural gradient descent ``ẇ = −g⁻¹∇f`` and General
Relativity Descent ``ẅ = −Hẇ − Γ²(ẇ,ẇ)`` started on the NGD velocity, for several
``ε = c / λ_max(D(w₀))``, and measure how the distance ``‖w_GRD(t) − w_NGD(t)‖`` scales with
ε and t: a least-squares fit of ``log dist = a + p log ε + q log t``. The short-time theory
says ``dist ≈ ½|R₀| t²`` with ``|R₀| = O(ε)``, i.e. ``p ≈ 1``, ``q ≈ 2`` while t is small.

Run: ``python examples/geodesics_digits.py [--n 200] [--hidden 8] [--figure out.png]``.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import grd  # noqa: E402
from grd import compare_flows, integrate  # noqa: E402
from grd.data import load_digits  # noqa: E402
from grd.models.mlp import init_mlp, mlp_classifier  # noqa: E402

CS = (0.1, 0.3, 1.0, 3.0)
TS = np.geomspace(0.05, 2.0, 8)


def run(n=200, hidden=8, cs=CS, ts=TS):
    """Integrate the three flows for each ``c`` in ``cs``; return a dict of arrays."""
    data = load_digits(n, seed=0, dtype=np.float64)
    batch = {"x": jnp.asarray(data["x"]), "y": jnp.asarray(data["y"])}
    model, loss_fn = mlp_classifier(hidden=(hidden,))
    params = init_mlp(model, jax.random.PRNGKey(0), 64, jnp.float64)
    lam = float(grd.lambda_max(loss_fn, params, batch))
    ts = jnp.asarray(ts)
    tol = dict(rtol=1e-7, atol=1e-9)
    gd = integrate(loss_fn, params, batch, flow="gd", t1=float(ts[-1]),
                   saveat=diffrax.SaveAt(ts=ts), **tol)  # fmt: skip
    mean_loss = jax.jit(jax.vmap(lambda p: jnp.mean(jax.vmap(loss_fn, (None, 0))(p, batch))))
    out = dict(
        ts=np.asarray(ts), cs=np.asarray(cs), lam_max=lam, loss_gd=np.asarray(mean_loss(gd.ys))
    )
    keys = ("distance", "loss_grd", "loss_ngd", "residual_norm", "field_strength")
    for k in keys:
        out[k] = []
    for c in cs:
        comp = compare_flows(loss_fn, params, batch, eps=jnp.asarray(c / lam), ts=ts, **tol)
        assert comp.result_grd == diffrax.RESULTS.successful
        assert comp.result_ngd == diffrax.RESULTS.successful
        for k in keys:
            out[k].append(np.asarray(getattr(comp, k)))
    for k in keys:
        out[k] = np.stack(out[k])  # (len(cs), len(ts))
    d = sum(x.size for x in jax.tree_util.tree_leaves(params))
    out.update(n=n, hidden=hidden, d=d)
    return out


def fit_exponents(out, t_max=0.5):
    """Least squares ``log dist = a + p log ε + q log t`` over the saved times ``t ≤ t_max``."""
    ts, cs, dist = out["ts"], out["cs"], out["distance"]
    mask = ts <= t_max
    E, T = np.meshgrid(np.log(cs), np.log(ts[mask]), indexing="ij")
    X = np.stack([np.ones(E.size), E.ravel(), T.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(X, np.log(dist[:, mask]).ravel(), rcond=None)
    return dict(p_eps=coef[1], q_t=coef[2])


def report(out):
    fit = fit_exponents(out)
    lines = [
        f"digits, N = {out['n']}, MLP 64-{out['hidden']}-10 (d = {out['d']}), "
        f"λ_max(D(w₀)) = {out['lam_max']:.4g}; GRD started on the NGD velocity.",
        "",
        "| c = ε·λ_max(w₀) | t | ‖w_GRD − w_NGD‖ | loss GD | loss NGD | loss GRD | |R| "
        "| ε·λ_max(w(t)) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(out["cs"]):
        for j in (0, 3, len(out["ts"]) - 1):
            lines.append(
                f"| {c:g} | {out['ts'][j]:.3g} | {out['distance'][i, j]:.3e} | "
                f"{out['loss_gd'][j]:.4f} | {out['loss_ngd'][i, j]:.4f} | "
                f"{out['loss_grd'][i, j]:.4f} | {out['residual_norm'][i, j]:.3e} | "
                f"{out['field_strength'][i, j]:.3f} |"
            )
    lines += [
        "",
        f"Fit over t ≤ 0.5: ‖w_GRD − w_NGD‖ ∝ ε^{fit['p_eps']:.2f} · t^{fit['q_t']:.2f} "
        "(short-time theory: ε¹ t²).",
    ]
    return "\n".join(lines), fit


def plot(out, path=None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for i, c in enumerate(out["cs"]):
        ax[0].loglog(out["ts"], out["distance"][i], "o-", label=f"ε·λ_max = {c:g}")
        ax[1].plot(out["ts"], out["loss_grd"][i], "-", label=f"GRD, {c:g}")
        ax[1].plot(out["ts"], out["loss_ngd"][i], "--", label=f"NGD, {c:g}")
    ax[1].plot(out["ts"], out["loss_gd"], "k:", label="GD")
    ax[0].set(xlabel="t", ylabel="‖w_GRD(t) − w_NGD(t)‖", title="GRD leaves NGD")
    ax[1].set(xlabel="t", ylabel="mean loss", title="loss along the paths")
    ax[0].legend()
    ax[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--figure", default=None, help="save the figure to this path")
    args = ap.parse_args()
    out = run(args.n, args.hidden)
    text, _ = report(out)
    print(text)
    if args.figure:
        plot(out, args.figure)


if __name__ == "__main__":
    main()
