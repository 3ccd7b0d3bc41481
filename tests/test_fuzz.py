"""Fuzzing (issue 9): the theory page's identities on random models, the CLI on random arguments.

Random models: depth 1–3, width 1–6, activation tanh/relu/softplus/sin, squared-error or
cross-entropy loss, parameters as nested dicts, lists or tuples; every identity of the theory page
§2–§4 is checked in float64 against an independent oracle (pair form, explicit metric,
finite differences, numpy). Few examples per test: compilation dominates the cost.

CLI: random argument lists built from the flags of ``grd.cli.build_parser()`` with random
values (negative numbers, nan/inf, text, paths to files, unknown sections). No traceback may
escape; bad arguments exit 2 with one line on stderr.
"""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import explicit_metric_christoffel, pair_form_diffusion
from hypothesis import HealthCheck, given, settings, strategies as st
from jax.flatten_util import ravel_pytree

import grd
import grd._reproduce as rp
from grd import cli

TOL64 = 1e-9  # float64 round-off (1e-16) times sums over d ≲ 150 terms with O(1–100) entries

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "softplus": jax.nn.softplus, "sin": jnp.sin}


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def pack(layers, container):
    """Put the per-layer (w, b) pairs in a nested pytree of the chosen kind."""
    if container == "dict":
        return {f"layer{i}": {"w": w, "b": b} for i, (w, b) in enumerate(layers)}
    if container == "list":
        return [[w, b] for w, b in layers]
    return {"net": tuple((w, (b,)) for w, b in layers)}  # tuples nested in a dict


def unpack(params, container):
    if container == "dict":
        return [(params[f"layer{i}"]["w"], params[f"layer{i}"]["b"]) for i in range(len(params))]
    if container == "list":
        return [(w, b) for w, b in params]
    return [(w, bt[0]) for w, bt in params["net"]]


@st.composite
def models(draw):
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 6)) for _ in range(depth - 1)]
    d_in = draw(st.integers(1, 3))
    loss = draw(st.sampled_from(["squared", "cross_entropy"]))
    d_out = draw(st.integers(1, 3)) if loss == "squared" else draw(st.integers(2, 3))
    act = ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))]
    container = draw(st.sampled_from(["dict", "list", "tuple"]))
    n = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**16))
    sizes = [d_in, *widths, d_out]
    rng = np.random.default_rng(seed)
    layers = [(rng.normal(size=(a, b)) / np.sqrt(a), 0.3 * rng.normal(size=b))
              for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    params = jax.tree_util.tree_map(jnp.asarray, pack(layers, container))
    x = jnp.asarray(rng.normal(size=(n, d_in)))
    if loss == "squared":
        y = jnp.asarray(rng.normal(size=(n, d_out)))
    else:
        y = jnp.asarray(rng.integers(0, d_out, size=n))

    def loss_fn(p, ex):
        h = ex["x"]
        ls = unpack(p, container)
        for i, (w, b) in enumerate(ls):
            h = h @ w + b
            if i < len(ls) - 1:
                h = act(h)
        if loss == "squared":
            return 0.5 * jnp.sum((h - ex["y"]) ** 2)
        return jax.nn.logsumexp(h) - h[ex["y"]]

    v = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), params)
    return loss_fn, params, {"x": x, "y": y}, v, n


FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=4, **FUZZ)
@given(models(), st.sampled_from([0.05, 0.7, 5.0]))
def test_spec_identities_on_random_models(model, eps):
    """theory §2: D·v = dense D v = pair form, D PSD, tr D = Σλ, chunked = unchunked.
    theory §3: g·(g⁻¹v) = v for CG and Woodbury."""
    loss_fn, params, batch, v, n = model
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    np.testing.assert_allclose(D, pair_form_diffusion(loss_fn, params, batch), atol=TOL64)
    lam = np.linalg.eigvalsh(D)
    assert lam.min() >= -TOL64 * max(1.0, lam.max())  # positive semi-definite
    vf = flat(v)
    Dv = flat(grd.diffusion_matvec(loss_fn, params, batch, v))
    scale = max(1.0, np.abs(D).max() * np.abs(vf).sum())
    np.testing.assert_allclose(Dv, D @ vf, atol=TOL64 * scale)
    Dv_chunked = flat(grd.diffusion_matvec(loss_fn, params, batch, v, chunk_size=max(1, n // 2)))
    np.testing.assert_allclose(Dv_chunked, Dv, atol=TOL64 * max(1.0, np.abs(Dv).max()))
    sp = np.asarray(grd.diffusion_spectrum(loss_fn, params, batch).eigenvalues)
    tr = float(grd.diffusion_trace(loss_fn, params, batch))
    np.testing.assert_allclose(tr, np.trace(D), rtol=1e-10, atol=TOL64)
    np.testing.assert_allclose(np.sum(sp), tr, rtol=1e-9, atol=TOL64)  # rank D ≤ N − 1
    gv = grd.metric_apply(loss_fn, params, batch, v, eps)
    for method in ("cg", "woodbury"):
        back = grd.metric_inverse(loss_fn, params, batch, gv, eps, method=method,
                                  rtol=1e-12, atol=1e-14, max_steps=500)
        np.testing.assert_allclose(flat(back), vf, atol=1e-8 * (1 + eps * lam.max()))


@settings(max_examples=3, **FUZZ)
@given(models(), st.sampled_from([0.1, 2.0]))
def test_christoffel_identities_on_random_models(model, eps):
    """theory §4: Γ_first(v,v) = the explicit metric's Γ contracted with v twice;
    ½∂g(v,v)·u = ½ d/dt vᵀ g(w + t u) v (central differences); chunked = unchunked."""
    loss_fn, params, batch, v, n = model
    w0, unravel = ravel_pytree(params)
    if w0.size > 40:  # the explicit oracle is O(N² d³): keep it small
        return
    gamma, _, _ = explicit_metric_christoffel(loss_fn, params, batch, eps)
    vf = flat(v)
    ref = np.einsum("kij,i,j->k", gamma, vf, vf)
    out = flat(grd.christoffel_contract(loss_fn, params, batch, v, eps))
    np.testing.assert_allclose(out, ref, atol=TOL64 * max(1.0, np.abs(ref).max()) * 10)
    out_c = flat(grd.christoffel_contract(loss_fn, params, batch, v, eps, chunk_size=max(1, n - 1)))
    np.testing.assert_allclose(out_c, out, atol=TOL64 * max(1.0, np.abs(out).max()))
    # finite differences of q(w) = vᵀ g(w) v along a random direction u
    u = np.random.default_rng(n).normal(size=w0.size)
    vj = jnp.asarray(vf)
    q = jax.jit(lambda w: jnp.vdot(vj, ravel_pytree(
        grd.metric_apply(loss_fn, unravel(w), batch, unravel(vj), eps))[0]))
    h = 1e-4
    fd = 0.5 * (q(w0 + h * u) - q(w0 - h * u)) / (2 * h)
    half_dg = flat(grd.metric_derivative_contract(loss_fn, params, batch, v, eps))
    # central differences: truncation h²·|q'''|/6 and round-off eps64·|q|/h
    scale = max(1.0, abs(float(q(w0))))
    assert abs(half_dg @ u - float(fd)) <= 1e-6 * scale * np.linalg.norm(u), (half_dg @ u, fd)


# ------------------------------------------------------------------ CLI


class ComputeReached(Exception):
    """Raised in place of the minutes-long ``reproduce`` run once the arguments validated."""


def _options(parser):
    return [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]


_SUB = {name: p for a in cli.build_parser()._actions if hasattr(a, "choices") and a.choices
        for name, p in a.choices.items()}
VALUES = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "", " ", "0", "-0", "1e309", "0x10", "1,2,,3",
                     "diffusion_maps", "diffusion_maps.lr=0.01", "all", "nonsense", "x.y=1",
                     "0.5,1.5",
                     "--", "-", "é", "FILE", "DIR", "NEWPATH", "--bogus"]),
    st.text(max_size=8),
)


@st.composite
def cli_args(draw):
    command = draw(st.sampled_from(["reproduce", "reproduce", "reproduce", "bench", "info",
                                    "unknown-cmd"]))
    opts = _options(_SUB[command]) + ["--bogus"] if command in _SUB else ["--bogus", "-x"]
    argv = [command]
    for _ in range(draw(st.integers(0, 6))):
        argv.append(draw(st.sampled_from(opts)))
        if draw(st.booleans()):
            argv.append(draw(VALUES))
    return argv


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=cli_args())
def test_cli_arguments_never_traceback(argv, tmp_path_factory, monkeypatch, capsys):
    """Random arguments: exit 0 (info, --list), 2 with one line (bad arguments), or — only
    when every value validated — the reproduce run is reached (it is replaced by a sentinel
    exception here, so nothing long runs). ``bench`` always points at an empty directory,
    so it never runs a script."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "file").write_text("x")
    (tmp / "dir").mkdir()
    (tmp / "dir" / "keep").write_text("x")
    paths = {"FILE": str(tmp / "file"), "DIR": str(tmp / "dir"), "NEWPATH": str(tmp / "new")}
    argv = [paths.get(a, a) for a in argv]
    if argv[0] == "bench":
        (tmp / "empty").mkdir()
        argv += ["--dir", str(tmp / "empty")]
    if argv[0] == "reproduce" and not any(a in ("--out", "-o") for a in argv):
        argv += ["--out", str(tmp / "out")]
    reached = []

    def sentinel(plan, out, **kwargs):
        for config in plan.configs.values():  # what the CLI passes on must be valid
            validate = getattr(config, "validate", None)
            if callable(validate):
                validate()
        reached.append(plan)
        raise ComputeReached("arguments validated")

    monkeypatch.setattr(rp, "reproduce", sentinel)
    code = cli.main(argv)
    captured = capsys.readouterr()
    if not (reached and "--debug" in argv):  # --debug prints the sentinel's traceback
        assert "Traceback" not in captured.err and "Traceback" not in captured.out, argv
    assert code in (0, 1, 2), (argv, code)
    if code == 2:
        assert len(captured.err.strip().splitlines()) == 1, (argv, captured.err)
        assert "error" in captured.err
    if code == 1:  # only the sentinel may fail a run here
        assert reached and "ComputeReached" in captured.err, (argv, captured.err)
    if reached:
        plan = reached[0]
        assert plan.seeds and len(set(plan.seeds)) == len(plan.seeds)
        assert plan.experiments and set(plan.configs) == set(plan.experiments)
    assert (tmp / "file").read_text() == "x" and (tmp / "dir" / "keep").read_text() == "x"


def test_cli_small_n_train_validates(tmp_path, monkeypatch, capsys):
    reached = []

    def sentinel(plan, out, **kwargs):
        reached.append(plan)
        return []

    monkeypatch.setattr(rp, "reproduce", sentinel)
    code = cli.main(
        ["reproduce", "--set", "diffusion_maps.n_train=100", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 0 and reached, err
