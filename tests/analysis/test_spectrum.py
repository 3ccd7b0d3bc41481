"""Tests for grd.analysis.spectrum: D's spectrum, rank and moments along training (float64)."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from grd.analysis import (
    TrajectoryRecorder,
    load_trajectory,
    plot_spectrum_histogram,
    spectrum_along_training,
    spectrum_table,
)

EPS32 = np.finfo(np.float32).eps


def _problem(n=10, d_in=3, hidden=4, seed=0):
    """tanh network with squared error; d = 3·4 + 4 + 4·2 = 24 > N − 1 (rank-limited by N)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "w1": jax.random.normal(k[0], (d_in, hidden), jnp.float64) / np.sqrt(d_in),
        "b1": 0.1 * jax.random.normal(k[1], (hidden,), jnp.float64),
        "w2": jax.random.normal(k[2], (hidden, 2), jnp.float64) / np.sqrt(hidden),
    }
    batch = {
        "x": jax.random.normal(k[3], (n, d_in), jnp.float64),
        "y": jnp.sin(jnp.arange(2 * n, dtype=jnp.float64)).reshape(n, 2),
    }

    def loss_fn(p, ex):
        h = jnp.tanh(ex["x"] @ p["w1"] + p["b1"])
        return 0.5 * jnp.sum((h @ p["w2"] - ex["y"]) ** 2)

    return loss_fn, params, batch


def _checkpoints(params, t=3):
    flat, unravel = ravel_pytree(params)
    return [unravel(flat * (1.0 + 0.3 * i)) for i in range(t)], unravel


def _dense_eigenvalues(loss_fn, params, batch):
    """Oracle: eigenvalues of the dense (d, d) covariance of per-example gradients (numpy)."""
    w, unravel = ravel_pytree(params)

    def losses(u):
        return jax.vmap(loss_fn, (None, 0))(unravel(u), batch)

    G = np.asarray(jax.jit(jax.jacrev(losses))(w))
    C = G - G.mean(axis=0)
    D = C.T @ C / G.shape[0]
    return np.sort(np.linalg.eigvalsh(D))[::-1]


def test_gram_matches_dense_oracle():
    loss_fn, params, batch = _problem()
    cks, _ = _checkpoints(params)
    lam0 = _dense_eigenvalues(loss_fn, cks[0], batch)
    atol = float(np.sqrt(lam0[3] * lam0[4]))  # between the 4th and 5th eigenvalue
    res = spectrum_along_training(loss_fn, cks, batch, atol=atol, steps=[10, 20, 30])
    n, d = 10, 24
    assert res.eigenvalues.shape == (3, n - 1)
    assert (res.d, res.n) == (d, n)
    np.testing.assert_array_equal(res.steps, [10, 20, 30])
    for i, p in enumerate(cks):
        lam = _dense_eigenvalues(loss_fn, p, batch)
        np.testing.assert_allclose(res.eigenvalues[i], lam[: n - 1], rtol=1e-9, atol=1e-13)
        assert np.all(np.abs(lam[n - 1 :]) < 1e-12)  # rank D ≤ N − 1
        tol = lam[0] * d * EPS32
        assert res.rank_relative[i] == np.sum(lam > tol)
        assert res.rank_absolute[i] == np.sum(lam > atol)
        np.testing.assert_allclose(res.relative_threshold[i], tol, rtol=1e-9)
        np.testing.assert_allclose(res.mean[i], lam[: n - 1].mean(), rtol=1e-9)
        np.testing.assert_allclose(res.std[i], lam[: n - 1].std(), rtol=1e-9)
        np.testing.assert_allclose(res.trace[i], lam.sum(), rtol=1e-9)
    # generic data: full rank N − 1 under the relative rule; the absolute rule cuts some
    assert np.all(res.rank_relative == n - 1)
    assert res.rank_absolute[0] == 4
    np.testing.assert_allclose(res.rank_fraction_relative, res.rank_relative / d)
    np.testing.assert_allclose(res.rank_fraction_absolute, res.rank_absolute / d)


def test_rank_detects_duplicated_examples():
    """Duplicated examples lower the rank: 4 distinct examples ⇒ rank D ≤ 3."""
    loss_fn, params, batch = _problem(n=4)
    dup = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, x, x]), batch)
    res = spectrum_along_training(loss_fn, [params], dup)
    assert res.eigenvalues.shape == (1, 11)
    assert res.rank_relative[0] == 3


def test_lanczos_top_k_agrees_with_gram():
    loss_fn, params, batch = _problem(n=12)
    cks, _ = _checkpoints(params, t=2)
    gram = spectrum_along_training(loss_fn, cks, batch)
    lan = spectrum_along_training(loss_fn, cks, batch, k=3, method="lanczos", num_matvecs=12)
    assert lan.eigenvalues.shape == (2, 3)
    np.testing.assert_allclose(lan.eigenvalues, gram.eigenvalues[:, :3], rtol=1e-8)
    assert lan.method == "lanczos"


def test_trajectory_input_matches_list(tmp_path):
    loss_fn, params, batch = _problem()
    cks, unravel = _checkpoints(params, t=5)
    with TrajectoryRecorder(tmp_path / "run", every=2, chunk=2) as rec:
        for i, p in enumerate(cks):
            rec.record(2 * i, p)
    traj = load_trajectory(tmp_path / "run")
    res = spectrum_along_training(loss_fn, traj, batch, unravel=unravel, indices=[1, -1])
    ref = spectrum_along_training(loss_fn, [cks[1], cks[4]], batch)
    np.testing.assert_array_equal(res.steps, [2, 8])
    np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, rtol=1e-12)
    arr = spectrum_along_training(loss_fn, traj.as_array(), batch, unravel=unravel, indices=[4])
    np.testing.assert_array_equal(arr.steps, [4])
    np.testing.assert_allclose(arr.eigenvalues[0], ref.eigenvalues[1], rtol=1e-12)


def test_table_formats():
    loss_fn, params, batch = _problem()
    cks, _ = _checkpoints(params, t=2)
    res = spectrum_along_training(loss_fn, cks, batch, atol=1e-3)
    md = spectrum_table(res, labels=["early", "late"])
    lines = md.splitlines()
    assert lines[0].startswith("| checkpoint | λ_max")
    assert lines[2].startswith("| early |") and lines[3].startswith("| late |")
    assert f"{res.eigenvalues[1, 0]:.3e}" in lines[3]
    assert f"{100 * res.rank_relative[1] / res.d:.2f} %" in lines[3]
    assert "d = 24, N = 10" in md
    txt = spectrum_table(res, fmt="text")
    assert "|" not in txt.splitlines()[0] and txt.splitlines()[1].startswith("0 ")
    with pytest.raises(ValueError, match="fmt"):
        spectrum_table(res, fmt="html")
    with pytest.raises(ValueError, match="labels"):
        spectrum_table(res, labels=["one"])


def test_histogram_figure():
    from matplotlib.figure import Figure

    loss_fn, params, batch = _problem()
    cks, _ = _checkpoints(params, t=3)
    res = spectrum_along_training(loss_fn, cks, batch, atol=1e-3)
    fig = plot_spectrum_histogram(res, labels=["20 %", "40 %", "100 %"], bins=10)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 3 and texts[0].startswith("20 %: rank 9 ")
    # the step histograms count every eigenvalue above the threshold
    counts = [np.nansum(p.get_path().vertices[:, 1]) for p in ax.patches]
    assert len(counts) == 3
    fig_abs = plot_spectrum_histogram(res, threshold="absolute")
    assert f"rank {res.rank_absolute[0]} " in fig_abs.axes[0].get_legend().get_texts()[0].get_text()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_bad_inputs():
    loss_fn, params, batch = _problem()
    cks, unravel = _checkpoints(params)
    flat = np.stack([np.asarray(ravel_pytree(p)[0]) for p in cks])
    with pytest.raises(ValueError, match="unravel"):
        spectrum_along_training(loss_fn, flat, batch)
    with pytest.raises(ValueError, match="empty"):
        spectrum_along_training(loss_fn, [], batch)
    with pytest.raises(ValueError, match="indices"):
        spectrum_along_training(loss_fn, flat, batch, unravel=unravel, indices=[5])
    with pytest.raises(ValueError, match="atol"):
        spectrum_along_training(loss_fn, cks, batch, atol=-1.0)
    with pytest.raises(ValueError, match="k"):
        spectrum_along_training(loss_fn, cks, batch, method="lanczos")
    with pytest.raises(ValueError, match="steps"):
        spectrum_along_training(loss_fn, cks, batch, steps=[1, 2])
    with pytest.raises(TypeError, match="checkpoints"):
        spectrum_along_training(loss_fn, params, batch)
