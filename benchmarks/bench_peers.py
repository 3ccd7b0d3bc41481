"""grd against the libraries a user would pick instead, measured side by side in one run (issue 8).

Same models, weights and batches for every library: the MLP weights and data are built once
(``bench_core.problem``: flax init + ``grd.data.make_classification``), turned into numpy, and
loaded both into the flax/JAX parameter dict and into a ``torch.nn.Sequential`` (Linear/Tanh;
``kernel.T`` → ``weight``). float32, CPU, ``torch.set_num_threads(os.cpu_count())``.

Benchmarks (each peer's result is checked numerically against grd's before it is timed):

1. D·v, ``D = CᵀC/N`` the *centred* gradient covariance of the mean loss: grd
   ``diffusion_matvec`` (jit) vs ``torch.func`` per-sample gradients (``vmap(grad)``) then
   ``Cᵀ(Cv)/N`` vs curvlinops ``EFLinearOperator`` (uncentred ``(1/N) Σ g_a g_aᵀ`` with
   ``reduction="mean"``; timed as is, and centred as ``EF·v − ḡ(ḡ·v)`` with ``ḡ`` from one
   extra gradient) vs BackPACK ``BatchGrad`` then ``Cᵀ(Cv)/N``; MLPs 784-256-10 (N=256) and
   784-1024-1024-10 (N=128); plus a sweep over N.
2. Top-10 eigenvalues of D: grd ``diffusion_spectrum(method="lanczos")`` vs scipy ``eigsh`` on
   curvlinops' operator (centred by ``− ḡḡᵀ``); accuracy against the exact Gram spectrum.
3. Christoffel symbols: grd matrix-free ``Γ_first(v, v)`` for d ≈ 10 … 10⁶ vs the dense
   tensors (grd ``christoffel_symbols`` then contraction; geomstats ``christoffels`` on the
   metric ``I + εD(w)`` with its pytorch autodiff backend), time and memory; where each stops
   fitting in 24 GiB (extrapolated, never allocated).
4. Per-example gradients: grd ``per_example_grads`` (jit'd vmap) vs ``torch.func.vmap(grad)``.

Peers live in their own environment, never in the development venv (exact steps also in
``benchmarks/requirements-peers.txt``)::

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0          # the CPU wheel; never unpinned
    echo "torch==2.13.0" > /tmp/peers-constraint.txt        # keeps the resolver off CUDA torch
    /work/peers-venv/bin/pip install -c /tmp/peers-constraint.txt \\
        -r benchmarks/requirements-peers.txt
    /work/peers-venv/bin/pip install -c /tmp/peers-constraint.txt -e .

The default run took 215 s on the 2-core machine at load ≈ 1 (1 049 s at load ≈ 13, when other
test runs shared it); ``--quick`` (N = 64, no 784-1024-1024-10, geomstats at d = 12 only) is the
smoke run. Run: ``/work/peers-venv/bin/python benchmarks/bench_peers.py [--quick]``; writes
``benchmarks/results/peers.md`` and ``benchmarks/results/peers_cost.png``. A peer that cannot
be imported (or fails) is skipped with the reason printed and written to the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, peak_temp_bytes, timeit, write_results  # noqa: E402
from bench_core import problem  # noqa: E402

from grd._christoffel import _christoffel_first, christoffel_symbols  # noqa: E402
from grd._diffusion import _diffusion_matvec, diffusion_spectrum, per_example_grads  # noqa: E402

SKIPPED: dict[str, str] = {}
NOTES: list[str] = []


def _try_import(name, stmt):
    try:
        ns: dict = {}
        exec(stmt, ns)
        return ns
    except Exception as e:  # noqa: BLE001 - any failure means the peer is skipped
        SKIPPED[name] = f"import failed: {type(e).__name__}: {e}"
        print(f"[skip] {name}: {SKIPPED[name]}")
        return None


torch_ns = _try_import("torch", "import torch, torch.func")
torch = torch_ns["torch"] if torch_ns else None
curv_ns = _try_import("curvlinops", "from curvlinops import EFLinearOperator") if torch else None
bp_ns = (
    _try_import(
        "backpack",
        "from backpack import backpack, extend\nfrom backpack.extensions import BatchGrad",
    )
    if torch
    else None
)
if torch is not None:
    torch.set_num_threads(os.cpu_count() or 1)


def once(fn, *args):
    """Wall time of one blocked call (for long runs that are not worth repeating)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def tsync(fn):
    """Torch on CPU is synchronous; return None so ``timeit`` has nothing to block on."""

    def run(*a):
        fn(*a)

    return run


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ----------------------------------------------------------------------------- shared models


def layers_of(params):
    """Flax MLP params → list of (kernel (in,out), bias) numpy arrays, in layer order."""
    names = sorted(params, key=lambda s: int(s.split("_")[1]))
    return [(np.asarray(params[k]["kernel"]), np.asarray(params[k]["bias"])) for k in names]


def flat_torch_order(tree):
    """A params-shaped pytree → flat numpy vector in torch's parameter order (W as (out,in), b)."""
    return np.concatenate([np.concatenate([k.T.ravel(), b.ravel()]) for k, b in layers_of(tree)])


def torch_model(params):
    mods = []
    layers = layers_of(params)
    for i, (k, b) in enumerate(layers):
        lin = torch.nn.Linear(k.shape[0], k.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(k.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(torch.nn.Tanh())
    return torch.nn.Sequential(*mods).float()


def setup(sizes, n):
    loss_fn, params, batch, v = problem(sizes, n)
    X, y = np.asarray(batch["x"]), np.asarray(batch["y"])
    prob = dict(loss_fn=loss_fn, params=params, batch=batch, v=v, sizes=sizes, n=n)
    prob["d"] = sum(x.size for x in jax.tree_util.tree_leaves(params))
    prob["v_t"] = flat_torch_order(v)
    if torch is not None:
        prob["Xt"], prob["yt"] = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        prob["vt"] = torch.from_numpy(prob["v_t"])
    return prob


# ----------------------------------------------------------------------------- torch routes


def torch_per_sample(model):
    names = [n for n, _ in model.named_parameters()]
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss1(p, x, y):
        out = torch.func.functional_call(model, p, (x[None],))
        return torch.nn.functional.cross_entropy(out, y[None])

    g = torch.func.vmap(torch.func.grad(loss1), in_dims=(None, 0, 0))

    def grads(X, y):
        G = g(params, X, y)
        return torch.cat([G[k].reshape(X.shape[0], -1) for k in names], dim=1)

    return grads


def cov_product(G, v):
    C = G - G.mean(0)
    return C.T @ (C @ v) / G.shape[0]


def torch_mean_grad(model, X, y):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def backpack_grads(params):
    bk, ext, BatchGrad = bp_ns["backpack"], bp_ns["extend"], bp_ns["BatchGrad"]
    model = ext(torch_model(params))
    lossf = ext(torch.nn.CrossEntropyLoss(reduction="sum"))  # grad_batch = per-example grads

    def grads(X, y):
        model.zero_grad()
        with bk(BatchGrad()):
            lossf(model(X), y).backward()
        return torch.cat([p.grad_batch.reshape(X.shape[0], -1) for p in model.parameters()], dim=1)

    return grads


def curvlinops_ef(model, X, y):
    EF = curv_ns["EFLinearOperator"]
    return EF(
        model,
        torch.nn.CrossEntropyLoss(reduction="mean"),
        [p for p in model.parameters()],
        [(X, y)],
        check_deterministic=False,
    )


# ----------------------------------------------------------------------------- 1. D·v


def bench_dv(prob, repeat):
    loss_fn, params, batch, v = prob["loss_fn"], prob["params"], prob["batch"], prob["v"]
    n = prob["n"]
    dv = jax.jit(lambda p, b, u: _diffusion_matvec(loss_fn, p, b, u))
    ref = flat_torch_order(dv(params, batch, v))
    row = {"model": "-".join(map(str, prob["sizes"])), "N": n, "d": prob["d"]}
    errs = {}
    row["grd D·v"] = timeit(dv, params, batch, v, repeat=repeat)
    # grd's own per-example route: N×d gradients then Cᵀ(Cv)/N
    pe = jax.jit(
        lambda p, b, u: cov_product(
            jax.vmap(lambda g: jax.flatten_util.ravel_pytree(g)[0])(
                per_example_grads(loss_fn, p, b)
            ),
            jax.flatten_util.ravel_pytree(u)[0],
        )
    )
    row["grd per-example then Cᵀ(Cv)"] = timeit(pe, params, batch, v, repeat=repeat)
    if torch is None:
        return row, errs
    X, y, vt = prob["Xt"], prob["yt"], prob["vt"]
    model = torch_model(params)
    # torch.func per-sample route
    try:
        g = torch_per_sample(model)
        f = lambda: cov_product(g(X, y), vt)
        errs["torch.func"] = rel(f().numpy(), ref)
        row["torch.func vmap(grad) then Cᵀ(Cv)"] = timeit(tsync(f), repeat=repeat)
    except Exception as e:  # noqa: BLE001
        SKIPPED[f"torch.func D·v {row['model']}"] = f"{type(e).__name__}: {e}"
    if curv_ns is not None:
        try:
            EF = curvlinops_ef(model, X, y)
            raw = lambda: EF @ vt

            def centred():
                gbar = torch_mean_grad(model, X, y)
                return EF @ vt - gbar * (gbar @ vt)

            errs["curvlinops EF−ḡḡᵀ"] = rel(centred().numpy(), ref)
            # the uncentred EF·v compared with D·v + ḡ(ḡ·v) computed by grd
            gb = jax.grad(lambda p: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(p, batch)))(
                params
            )
            gbt = flat_torch_order(gb)
            errs["curvlinops EF (uncentred) vs D+ḡḡᵀ"] = rel(
                raw().numpy(), ref + gbt * (gbt @ prob["v_t"])
            )
            errs["|ḡḡᵀv| / |Dv|"] = float(
                np.linalg.norm(gbt * (gbt @ prob["v_t"])) / np.linalg.norm(ref)
            )
            row["curvlinops EF·v (uncentred, as is)"] = timeit(tsync(raw), repeat=repeat)
            row["curvlinops EF·v − ḡ(ḡ·v)"] = timeit(tsync(centred), repeat=repeat)
        except Exception as e:  # noqa: BLE001
            SKIPPED[f"curvlinops D·v {row['model']}"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    if bp_ns is not None:
        try:
            gb = backpack_grads(params)
            f = lambda: cov_product(gb(X, y), vt)
            errs["backpack"] = rel(f().numpy(), ref)
            row["BackPACK BatchGrad then Cᵀ(Cv)"] = timeit(tsync(f), repeat=repeat)
        except Exception as e:  # noqa: BLE001
            SKIPPED[f"backpack D·v {row['model']}"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    for k, e in errs.items():
        if not k.startswith("|") and e > 1e-3:
            raise AssertionError(
                f"{k} disagrees with grd D·v on {row['model']}: relative error {e:.2e}"
            )
    return row, errs


# ----------------------------------------------------------------------------- 2. top-k


def bench_topk(prob, k=10):
    from scipy.sparse.linalg import LinearOperator, eigsh

    loss_fn, params, batch = prob["loss_fn"], prob["params"], prob["batch"]
    exact = np.asarray(diffusion_spectrum(loss_fn, params, batch, k, method="gram").eigenvalues)
    lz = jax.jit(lambda p, b: diffusion_spectrum(loss_fn, p, b, k, method="lanczos").eigenvalues)
    lam = np.asarray(lz(params, batch))
    row = {"model": "-".join(map(str, prob["sizes"])), "N": prob["n"], "d": prob["d"]}
    row["grd Lanczos (30 products) s"] = timeit(lz, params, batch, repeat=3, min_time=0.0)
    row["grd max rel err"] = float(np.max(np.abs(lam - exact) / exact))
    dv = jax.jit(lambda p, b, u: _diffusion_matvec(loss_fn, p, b, u))
    row["30 × one D·v (reference) s"] = 30 * timeit(dv, params, batch, prob["v"], repeat=3)
    if torch is None or curv_ns is None:
        return row
    try:
        X, y = prob["Xt"], prob["yt"]
        model = torch_model(params)
        EF = curvlinops_ef(model, X, y)
        gbar = torch_mean_grad(model, X, y)
        count = [0]

        def mv(x):
            count[0] += 1
            xt = torch.from_numpy(np.ascontiguousarray(x.reshape(-1), dtype=np.float32))
            return (EF @ xt - gbar * (gbar @ xt)).numpy()

        op = LinearOperator((prob["d"], prob["d"]), matvec=mv, dtype=np.float32)
        v0 = np.random.default_rng(0).normal(size=prob["d"]).astype(np.float32)
        t0 = time.perf_counter()
        vals = eigsh(op, k=k, which="LA", v0=v0, tol=1e-4, return_eigenvectors=False)
        t = time.perf_counter() - t0 + 0.0
        vals = np.sort(vals)[::-1]
        row["scipy eigsh on curvlinops EF−ḡḡᵀ s"] = t
        row["eigsh products"] = count[0]
        row["eigsh max rel err"] = float(np.max(np.abs(vals - exact) / exact))
    except Exception as e:  # noqa: BLE001
        SKIPPED[f"curvlinops eigsh {row['model']}"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    return row


# ----------------------------------------------------------------------------- 3. Christoffel

GS_CHILD = r"""
import os, sys, time, json
os.environ["GEOMSTATS_BACKEND"] = "pytorch"
import numpy as np, torch
torch.set_num_threads(os.cpu_count() or 1)
import geomstats.backend as gs
from geomstats.geometry.euclidean import Euclidean
from geomstats.geometry.riemannian_metric import RiemannianMetric
a = np.load(sys.argv[1])
eps = float(sys.argv[2])
shapes = json.loads(sys.argv[3])
X = torch.from_numpy(a["x"]).double()
y = torch.from_numpy(a["y"]).long()
w0 = torch.from_numpy(a["w"]).double()
N, d = X.shape[0], w0.shape[0]
def model(w, x):
    i, h = 0, x
    for li, (fi, fo) in enumerate(shapes):
        W = w[i:i + fo * fi].reshape(fo, fi); i += fo * fi
        b = w[i:i + fo]; i += fo
        h = W @ h + b
        if li < len(shapes) - 1:
            h = torch.tanh(h)
    return h
def loss(w, x, yy):
    return torch.nn.functional.cross_entropy(model(w, x)[None], yy[None])
class DiffusionMetric(RiemannianMetric):
    def metric_matrix(self, base_point=None):
        G = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(base_point, X, y)
        C = G - G.mean(0)
        return torch.eye(d, dtype=C.dtype) + eps * C.T @ C / N
space = Euclidean(d, equip=False)
space.equip_with_metric(DiffusionMetric)
t0 = time.perf_counter()
G2 = space.metric.christoffels(w0)
t = time.perf_counter() - t0
np.save(sys.argv[4], G2.detach().numpy())
# VmHWM, not getrusage: Linux carries ru_maxrss over fork+exec from the (large) parent
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"time": t, "maxrss": int(hwm) * 1024}))
"""


def geomstats_christoffels(prob, eps, out_npy):
    """geomstats' dense Γ² in a child process (its backend is chosen at import, float64 there)."""
    import json
    import tempfile

    params, batch = prob["params"], prob["batch"]
    shapes = [[k.shape[0], k.shape[1]] for k, _ in layers_of(params)]
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "in.npz")
        np.savez(
            npz, x=np.asarray(batch["x"]), y=np.asarray(batch["y"]), w=flat_torch_order(params)
        )
        r = subprocess.run(
            [sys.executable, "-c", GS_CHILD, npz, str(eps), json.dumps(shapes), out_npy],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if r.returncode:
        raise RuntimeError(
            r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
        )
    return json.loads(r.stdout.strip().splitlines()[-1])


def torch_perm(prob):
    """Index map: position in torch order → position in ravel_pytree (flax) order."""
    flat, unravel = jax.flatten_util.ravel_pytree(prob["params"])
    tree = unravel(jnp.arange(flat.size, dtype=jnp.float32))
    return flat_torch_order(jax.tree_util.tree_map(np.asarray, tree)).astype(np.int64)


def arg_bytes(jitted, *args) -> int:
    """XLA's argument bytes of ``jitted(*args)`` (params, batch, v): add to peak_temp_bytes."""
    return int(jitted.lower(*args).compile().memory_analysis().argument_size_in_bytes)


def bench_christoffel(configs, dense_max_d, gs_max_d, n, eps=0.1):
    rows = []
    for sizes in configs:
        prob = setup(sizes, n)
        loss_fn, params, batch, v = prob["loss_fn"], prob["params"], prob["batch"], prob["v"]
        d = prob["d"]
        row = {"model": "-".join(map(str, sizes)), "d": d}
        mf = jax.jit(lambda p, b, u: _christoffel_first(loss_fn, p, b, u, eps))  # noqa: B023
        row["matrix-free s"] = timeit(mf, params, batch, v, repeat=3)
        row["matrix-free bytes"] = peak_temp_bytes(mf, params, batch, v)
        row["matrix-free argument bytes"] = arg_bytes(mf, params, batch, v)
        row["dense Γ tensor bytes (d³·4)"] = 4.0 * d**3
        if d <= dense_max_d:
            vf = jax.flatten_util.ravel_pytree(v)[0]
            dense = jax.jit(
                lambda p, b, u: jnp.einsum(
                    "kij,i,j->k",
                    christoffel_symbols(loss_fn, p, b, eps),  # noqa: B023
                    u,
                    u,
                )
            )
            got = np.asarray(dense(params, batch, vf))
            ref = np.asarray(jax.flatten_util.ravel_pytree(mf(params, batch, v))[0])
            row["grd dense err"] = rel(got, ref)
            row["grd dense s"] = timeit(dense, params, batch, vf, repeat=3, min_time=0.0)
            row["grd dense bytes"] = peak_temp_bytes(dense, params, batch, vf)
        if d <= gs_max_d and "geomstats" not in SKIPPED:
            try:
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    out = os.path.join(tmp, "g2.npy")
                    info = geomstats_christoffels(prob, eps, out)
                    G2 = np.load(out)  # [k, i, j] in torch order, second kind
                perm = torch_perm(prob)
                g2_ref = np.asarray(christoffel_symbols(loss_fn, params, batch, eps, kind="second"))
                g2_ref = g2_ref[np.ix_(perm, perm, perm)]
                row["geomstats err"] = rel(G2, g2_ref)
                row["geomstats s"] = info["time"]
                row["geomstats peak RSS bytes"] = info["maxrss"]
            except Exception as e:  # noqa: BLE001
                SKIPPED["geomstats"] = f"{type(e).__name__}: {e}"
                print(f"[skip] geomstats: {SKIPPED['geomstats']}")
        print(row, flush=True)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- 4. per-example


def bench_pe(prob, repeat):
    loss_fn, params, batch = prob["loss_fn"], prob["params"], prob["batch"]
    pe = jax.jit(lambda p, b: per_example_grads(loss_fn, p, b))
    row = {"model": "-".join(map(str, prob["sizes"])), "N": prob["n"], "d": prob["d"]}
    G = pe(params, batch)
    row["grd per_example_grads"] = timeit(pe, params, batch, repeat=repeat)
    if torch is not None:
        g = torch_per_sample(torch_model(params))
        Gt = g(prob["Xt"], prob["yt"]).numpy()
        Gj = np.stack(
            [
                flat_torch_order(jax.tree_util.tree_map(lambda x, a=a: x[a], G))
                for a in range(prob["n"])
            ]
        )
        row["err"] = rel(Gt, Gj)
        assert row["err"] < 1e-4, row
        row["torch.func vmap(grad)"] = timeit(
            tsync(lambda: g(prob["Xt"], prob["yt"])), repeat=repeat
        )
    return row


# ----------------------------------------------------------------------------- output


def fmt(x):
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def table(rows, cols=None):
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c, "—")) for c in cols) + " |")
    return "\n".join(out)


def ms(rows, keys):
    """Copy of rows with the timing columns in milliseconds."""
    out = []
    for r in rows:
        out.append(
            {(k + " (ms)" if k in keys else k): (1e3 * v if k in keys else v) for k, v in r.items()}
        )
    return out


def gib(b):
    return b / 2**30


def where_24gib(rows):
    """Extrapolate the d at which each Christoffel route needs 24 GiB."""
    lim = 24 * 2**30
    d = np.array([r["d"] for r in rows], float)
    mf = np.array([r["matrix-free bytes"] + r["matrix-free argument bytes"] for r in rows], float)
    big = d >= 1e4
    slope = np.polyfit(d[big], mf[big], 1) if big.sum() >= 2 else (mf[-1] / d[-1], 0.0)
    d_mf = (lim - slope[1]) / slope[0]
    lines = [
        "- matrix-free Γ_first(v,v): arguments (params, batch, v) + compiled working memory + "
        f"output grow ≈ {slope[0]:.3g} bytes per parameter (linear fit over d ≥ 10⁴, N = 64 "
        "fixed); 24 GiB would be "
        f"reached near d ≈ {d_mf:.2g} (extrapolated; measured up to d = {int(d[-1])}, "
        f"{mf[-1] / 2**20:.3g} MiB there).",
        f"- dense Γ tensor alone (d³·4 bytes, float32): 24 GiB at d ≈ {(lim / 4) ** (1 / 3):.0f}; "
        "geomstats also holds ∂g (another d³) and the d×d inverse, so it stops earlier "
        f"(≈ {(lim / 8) ** (1 / 3):.0f} for two d³ float32 tensors; "
        f"≈ {(lim / 16) ** (1 / 3):.0f} in float64).",
    ]
    dd = [r for r in rows if "grd dense bytes" in r]
    if len(dd) >= 2:
        x = np.array([r["d"] for r in dd], float)
        yb = np.array([r["grd dense bytes"] for r in dd], float)
        c = np.exp(np.mean(np.log(yb[-1:] / x[-1:] ** 3)))
        lines.append(
            f"- grd dense `christoffel_symbols` measured {yb[-1] / 2**20:.3g} MiB "
            f"at d = {int(x[-1])} "
            f"(≈ {c:.3g}·d³ bytes with N fixed; N per-example Hessians N·d² on top): 24 GiB near "
            f"d ≈ {(lim / c) ** (1 / 3):.0f} (extrapolated)."
        )
    return "\n".join(lines)


def plot(ch_rows, n_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.4))
    d = [r["d"] for r in ch_rows]
    ax[0].loglog(
        d, [r["matrix-free s"] for r in ch_rows], "o-", label="grd matrix-free Γ_first(v,v)"
    )
    dd = [r for r in ch_rows if "grd dense s" in r]
    if dd:
        ax[0].loglog(
            [r["d"] for r in dd],
            [r["grd dense s"] for r in dd],
            "s-",
            label="grd dense Γ then contract",
        )
    gg = [r for r in ch_rows if "geomstats s" in r]
    if gg:
        ax[0].loglog(
            [r["d"] for r in gg],
            [r["geomstats s"] for r in gg],
            "^-",
            label="geomstats christoffels (dense)",
        )
    ax[0].set_xlabel("d (parameters)")
    ax[0].set_ylabel("seconds")
    ax[0].set_title("Christoffel symbols: cost against d")
    ax[0].legend(fontsize=8)
    ax[0].grid(True, which="both", alpha=0.3)
    if n_rows:
        N = [r["N"] for r in n_rows]
        for k, m in zip(
            [k for k in n_rows[0] if k not in ("model", "N", "d")], "osd^v", strict=False
        ):
            ax[1].loglog(N, [1e3 * r[k] for r in n_rows], m + "-", label=k)
        ax[1].set_xlabel("N (examples)")
        ax[1].set_ylabel("ms per D·v")
        ax[1].set_title(f"D·v on MLP {n_rows[0]['model']}: cost against N")
        ax[1].legend(fontsize=7)
        ax[1].grid(True, which="both", alpha=0.3)
    if n_rows:
        ax[1].set_xticks(N, [str(x) for x in N])
        ax[1].minorticks_off()
    lim = 24 * 2**30
    dgrid = np.logspace(1, 6, 50)
    mfb = [r["matrix-free bytes"] + r["matrix-free argument bytes"] for r in ch_rows]
    ax[2].loglog(d, mfb, "o-", label="grd matrix-free (measured: XLA args+temp+out)")
    if dd:
        ax[2].loglog(
            [r["d"] for r in dd],
            [r["grd dense bytes"] for r in dd],
            "s-",
            label="grd dense (measured: XLA temp+out)",
        )
    ax[2].loglog(dgrid, 4 * dgrid**3, ":", label="dense Γ tensor d³·4 bytes (estimate)")
    if gg:
        ax[2].loglog(
            [r["d"] for r in gg],
            [r["geomstats peak RSS bytes"] for r in gg],
            "^",
            label="geomstats process peak RSS",
        )
    ax[2].axhline(lim, color="k", lw=0.8)
    ax[2].text(12, lim * 1.3, "24 GiB", fontsize=8)
    ax[2].set_xlabel("d (parameters)")
    ax[2].set_ylabel("bytes")
    ax[2].set_title("Christoffel symbols: memory against d")
    ax[2].legend(fontsize=7)
    ax[2].grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def versions():
    import importlib.metadata as md

    out = []
    for p in (
        "torch",
        "curvlinops-for-pytorch",
        "backpack-for-pytorch",
        "geomstats",
        "numpy",
        "scipy",
    ):
        try:
            out.append(f"{p} {md.version(p)}")
        except md.PackageNotFoundError:
            out.append(f"{p} not installed")
    return ", ".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=64, no 784-1024-1024-10, short sweeps, geomstats at d=12",
    )
    args = ap.parse_args(argv)
    q = args.quick
    rep = 3 if q else 5
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    mlps = [((784, 256, 10), 64 if q else 256)] + ([] if q else [((784, 1024, 1024, 10), 128)])

    dv_rows, dv_errs, pe_rows, tk_rows = [], {}, [], []
    for sizes, n in mlps:
        prob = setup(sizes, n)
        r, e = bench_dv(prob, rep)
        dv_rows.append(r)
        dv_errs[r["model"]] = e
        print(r, e, flush=True)
        pe_rows.append(bench_pe(prob, rep))
        print(pe_rows[-1], flush=True)
        tk_rows.append(bench_topk(prob))
        print(tk_rows[-1], flush=True)
        del prob

    # D·v cost against N (784-256-10)
    n_rows = []
    for n in (32, 128) if q else (32, 64, 128, 256, 512):
        prob = setup((784, 256, 10), n)
        r, _ = bench_dv(prob, 3)
        n_rows.append({k: v for k, v in r.items() if k not in ("d", "grd per-example then Cᵀ(Cv)")})
        print(n_rows[-1], flush=True)

    ch_configs = [
        (2, 2, 2),
        (8, 8, 4),
        (16, 12, 6),
        (32, 24, 10),
        (64, 128, 10),
        (256, 384, 10),
        (784, 1200, 10),
    ]
    if q:
        ch_configs = [(2, 2, 2), (8, 8, 4), (64, 128, 10), (256, 384, 10)]
    # geomstats differentiates the d×d metric matrix with a Python loop of d² backward passes:
    # ≈ 2 min at d = 108 on this machine, so it is run at d ≤ 108 only (d = 12 with --quick)
    ch_rows = bench_christoffel(
        ch_configs, dense_max_d=400 if not q else 120, gs_max_d=20 if q else 120, n=64
    )

    # ---- write
    timing_keys = [k for r in dv_rows for k in r if k not in ("model", "N", "d")]
    dv_tab = table(ms(dv_rows, timing_keys))
    ratio_rows = []
    for r in dv_rows:
        rr = {"model": r["model"], "N": r["N"]}
        peers = {k: v for k, v in r.items() if k not in ("model", "N", "d", "grd D·v")}
        for k, v in peers.items():
            rr[f"{k} / grd"] = v / r["grd D·v"]
        centred_peers = {
            k: v for k, v in peers.items() if not k.startswith("grd") and "as is" not in k
        }
        if centred_peers:
            best = min(centred_peers, key=centred_peers.get)
            rr["fastest centred peer"] = best
            rr["fastest centred peer / grd (target ≥ 2)"] = centred_peers[best] / r["grd D·v"]
        ps = r.get("torch.func vmap(grad) then Cᵀ(Cv)")
        if ps:
            rr["per-sample route / grd (target ≥ 20)"] = ps / r["grd D·v"]
        ratio_rows.append(rr)
    err_lines = "\n".join(
        f"- {m}: " + ", ".join(f"{k} {v:.2e}" for k, v in e.items()) for m, e in dv_errs.items()
    )
    n_keys = [k for r in n_rows for k in r if k not in ("model", "N")]
    tk_rows = [
        {
            (k[:-2] + " (ms)" if k.endswith(" s") else k): (1e3 * v if k.endswith(" s") else v)
            for k, v in r.items()
        }
        for r in tk_rows
    ]
    pe_keys = ["grd per_example_grads", "torch.func vmap(grad)"]
    pe_rows2 = []
    for r in pe_rows:
        r2 = dict(r)
        if "torch.func vmap(grad)" in r:
            r2["torch / grd"] = r["torch.func vmap(grad)"] / r["grd per_example_grads"]
        pe_rows2.append(r2)
    ch_tab_rows = []
    for r in ch_rows:
        r2 = {}
        for k, v in r.items():
            if k.endswith(" s"):
                r2[k[:-2] + " (ms)"] = 1e3 * v
            elif "bytes" in k:
                r2[k.replace("bytes", "MiB")] = v / 2**20
            else:
                r2[k] = v
        ch_tab_rows.append(r2)
    png = RESULTS_DIR / "peers_cost.png"
    RESULTS_DIR.mkdir(exist_ok=True)
    plot(ch_rows, n_rows, png)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    wall = time.perf_counter() - t_start
    skipped = "\n".join(f"- {k}: {v}" for k, v in SKIPPED.items()) or "- none"
    body = f"""Peers: {versions()}. torch threads: {torch.get_num_threads() if torch else "—"} \
(= os.cpu_count()); XLA CPU uses its default thread pool. float32 throughout (geomstats: float64,
its pytorch backend's default). Every time is the median of repeated calls after a warm-up (compile)
call, except the eigensolvers and the geomstats tensors (one call, after one warm-up for grd).

Machine load: load average {load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f} at the start; `{up}` at
the end (the machine is shared with other engineers' test runs on 2 cores: timings are noisy,
ratios within one run are the comparable figures). Run wall time {wall:.0f} s.

Skipped peers / failures:
{skipped}

## 1. D·v (centred D = CᵀC/N, mean loss)

curvlinops' `EFLinearOperator` is the *uncentred* empirical Fisher: with `reduction="mean"` it is
`(1/N) Σ_a g_a g_aᵀ = D + ḡḡᵀ` (same 1/N normalisation as D; curvlinops docs and
`gradient_moments.py`). It is timed as is, and centred as `EF·v − ḡ(ḡ·v)` with `ḡ` from one extra
batch gradient per call (needed whenever w changes). The other routes compute `D` exactly.

{dv_tab}

Ratios (time of each route / grd's matrix-free D·v; > 1 means grd is faster). "Fastest centred
peer" excludes grd's own routes and the uncentred EF as is:

{table(ratio_rows)}

Agreement with grd's D·v before timing (relative 2-norm error; float32):
{err_lines}

D·v cost against N (MLP 784-256-10), ms:

{table(ms(n_rows, n_keys))}

## 2. Top-10 eigenvalues of D

grd: `diffusion_spectrum(k=10, method="lanczos")`, jit'd, 30 matrix-free products (default depth).
scipy: `eigsh(k=10, which="LA", tol=1e-4)` on a LinearOperator of curvlinops' `EF − ḡḡᵀ` (ḡ computed
once). Errors: max relative error of the 10 eigenvalues against the exact Gram spectrum
(`method="gram"`).

{table(tk_rows)}

## 3. Christoffel symbols (N = 64, ε = 0.1, tanh MLPs of growing width)

`matrix-free`: grd `_christoffel_first` (Γ_first(v,v), jit'd; memory = XLA compiled temp+output
bytes). `grd dense`: `christoffel_symbols` (per-example Hessians, the d×d×d tensor) then the
contraction with v⊗v, jit'd; its error is against the matrix-free result. `geomstats`:
`RiemannianMetric.christoffels` (pytorch backend, `torch.autograd.functional.jacobian` of the
metric matrix `I + εD(w)`, then `cometric` and the Koszul formula; second kind, float64, in a
child process; memory = that process' peak RSS); its error is against grd's dense second-kind
tensor. "—": not run (the dense routes are run only while small; see the extrapolation).

{table(ch_tab_rows)}

Where each stops fitting in 24 GiB:
{where_24gib(ch_rows)}

## 4. Per-example gradients (N×d, jit'd vmap vs torch.func.vmap(grad))

{table(ms(pe_rows2, pe_keys))}

Plot: `benchmarks/results/peers_cost.png` (Christoffel time and memory against d; D·v cost
against N).
"""
    print(body)
    print(f"\nwritten to {write_results('peers', 'grd against peers (issue 8)', body)}")


if __name__ == "__main__":
    main()
