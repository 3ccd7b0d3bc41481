"""Data larger than memory: D over a data set read batch by batch (``grd.streamed``).

``D = (1/N) Σ_a (g_a − ḡ)(g_a − ḡ)ᵀ`` over *all* N examples needs the global mean gradient
ḡ, so every quantity starts with one **mean pass** (N and ḡ = (1/N) Σ_a g_a). After it, with
``s̄ = ḡ·v`` known, one product is **one pass**:

    D v = (1/N) Σ_batches Σ_a (s_a − ḡ·v) g_a,     s_a = g_a·v

(per batch one JVP and one VJP with the weights ``s_a − ḡ·v`` held fixed; centred, so no
float32 cancellation; exact). Passes per call: ``diffusion_matvec`` 2; ``diffusion_trace``
(exact) 2; ``lambda_max`` / ``diffusion_spectrum(method="lanczos")`` 1 + ``num_matvecs``;
``metric_inverse`` (CG) 1 + CG steps + 1. Memory: one batch, and O(d) (O(num_matvecs·d) for
Lanczos). Each batch's kernel is compiled once per shape (keep the batch size fixed; a
smaller last batch compiles once more).

**Several processes** (``jax.process_count() > 1``, e.g. after
:func:`grd.sharding.initialize`): by default each process's ``make_iter`` yields only *its
own* examples (a disjoint share of the data set), each pass accumulates this process's partial
sums on its first local device, and the partial sums are added across processes at the end of
the pass, so every process ends with the same D of the whole data set:

    N = Σ_p N_p,   ḡ = (1/N) Σ_p Σ_{a∈p} g_a,   D v = (1/N) Σ_p Σ_{a∈p} (s_a − ḡ·v) g_a

Communication per pass: the mean pass all-reduces d + 1 numbers (Σ g_a and N_p), a D·v pass
d numbers, the trace pass one. Lanczos and CG then run the same float64 host loop on every
process with bitwise equal products (an all-reduce hands every process the same sum; XLA's
own SPMD loops rely on that too), so every process makes the same passes and stops at the
same step. Memory per process: one batch of its own and O(d).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _validation as val
from ._batched import is_batched
from ._primitives import jvp_values, weighted_grad
from ._tree import tree_ravel


class Streamed:
    """A data set given as ``make_iter()``, a fresh iterator over batch pytrees; see
    :func:`streamed`."""

    def __init__(
        self,
        make_iter,
        *,
        progress: bool = True,
        desc: str = "grd pass",
        across_processes: bool | None = None,
    ):
        if not callable(make_iter):
            raise TypeError(
                "`make_iter` must be a function returning a fresh iterator over batches "
                f"(e.g. lambda: iter(loader)); got {type(make_iter).__name__}."
            )
        if across_processes not in (None, True, False):
            raise TypeError(
                f"`across_processes` must be None, True or False; got {across_processes!r}."
            )
        self.make_iter = make_iter
        self.progress = progress
        self.desc = desc
        self._across = across_processes

    @property
    def across_processes(self) -> bool:
        """Whether each process streams its own share and the sums are all-reduced."""
        if self._across is None:
            return jax.process_count() > 1
        return self._across

    def batches(self, what: str):
        it = self.make_iter()
        if self.progress and not (self.across_processes and jax.process_index() != 0):
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"{self.desc}: {what}", delay=2.0, leave=False, unit="batch")
        return it


def streamed(make_iter, *, progress: bool = True, across_processes: bool | None = None) -> Streamed:
    """Pass a data set too large for memory as ``batch``: ``make_iter()`` returns a fresh
    iterator over batch pytrees (each with a leading example axis).

    Accepted by :func:`grd.diffusion_matvec`, :func:`grd.diffusion_trace` (exact),
    :func:`grd.diffusion_spectrum` (``method="lanczos"``), :func:`grd.lambda_max` and
    :func:`grd.metric_inverse` (``method="cg"``). D is that of the whole data set, exactly:
    one pass for the global mean gradient, then one pass per D·v product (see the module
    docstring for the count per function). ``progress`` shows a tqdm bar for passes longer
    than 2 s. ``make_iter`` must yield the same examples in every pass (shuffle with a fixed
    seed, or not at all).

    On several JAX processes (``across_processes=None``, the default, means
    ``jax.process_count() > 1``) each process's ``make_iter`` yields only its own share of the
    examples, disjoint from the others' (any split: unequal shares and an empty one are
    fine), and the per-process sums are all-reduced after each pass: ``N = Σ_p N_p`` and D
    is that of the union of all shares, on every process (one all-reduce of size d per D·v,
    d + 1 for the mean pass; see the module docstring). Every process must make the same
    calls in the same order, with the same ``params``, vectors and ``key`` (they may be
    replicated global arrays, e.g. from :func:`grd.sharding.replicate`); the results are
    process-local arrays, equal on every process. ``across_processes=False``: each process
    streams a whole data set alone, with no communication.

    Example:
      >>> data = grd.streamed(lambda: (load(i) for i in range(num_shards)))
      >>> lam = grd.lambda_max(loss_fn, params, data)

      On P processes, process p reading files p, p + P, p + 2P, …:
      >>> mine = range(jax.process_index(), num_shards, jax.process_count())
      >>> data = grd.streamed(lambda: (load(i) for i in mine))
    """
    return Streamed(make_iter, progress=progress, across_processes=across_processes)


def is_streamed(batch) -> bool:
    return isinstance(batch, Streamed)


# --------------------------------------------------------------------------------------------
# Sums across processes.


def _process_mesh() -> Mesh:
    """One device per process (its first local device, where its streamed kernels run)."""
    return Mesh(
        np.array([jax.local_devices(process_index=i)[0] for i in range(jax.process_count())]),
        ("processes",),
    )


_SUMS: dict = {}


def process_sum(x):
    """``Σ_p x_p`` over the JAX processes (each passes its own ``x_p``): one all-reduce.

    Every process must call it with an array of the same shape and dtype; each gets the
    same sum as a local array on its first local device. On one process: ``x`` itself.
    """
    x = jnp.asarray(x)
    if jax.process_count() == 1:
        return x
    mesh = _process_mesh()
    if mesh not in _SUMS:
        _SUMS[mesh] = jax.jit(
            lambda a: jnp.sum(a, axis=0), out_shardings=NamedSharding(mesh, PartitionSpec())
        )
    stacked = jax.make_array_from_process_local_data(
        NamedSharding(mesh, PartitionSpec("processes")),
        np.asarray(x)[None],
        (jax.process_count(), *x.shape),
    )
    return _SUMS[mesh](stacked).addressable_data(0)


def _local(tree, name: str):
    """Replicated global arrays (spanning processes) as this process's local copy."""

    def one(path, x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError(
                    f"leaf {jax.tree_util.keystr(path)} of `{name}` is split over processes; "
                    "grd.streamed needs it whole on every process: replicate it "
                    "(grd.sharding.replicate) or pass the same NumPy/JAX value on every process."
                )
            return x.addressable_data(0)
        return x

    return jax.tree_util.tree_map_with_path(one, tree)


# --------------------------------------------------------------------------------------------
# Per-batch kernels (compiled once per loss_fn and batch shape).


@eqx.filter_jit
def _grad_sum(loss_fn, params, batch, chunk_size):
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    ones = jnp.ones((n,), jax.tree_util.tree_leaves(params)[0].dtype)
    return tree_ravel(weighted_grad(loss_fn, params, batch, ones, chunk_size=chunk_size))[0]


@eqx.filter_jit
def _dv_sum(loss_fn, params, batch, v, sbar, chunk_size):
    s = jvp_values(loss_fn, params, batch, v, chunk_size=chunk_size)
    w = s - sbar
    return tree_ravel(weighted_grad(loss_fn, params, batch, w, chunk_size=chunk_size))[0]


@eqx.filter_jit
def _sq_sum(loss_fn, params, batch, gbar, chunk_size):
    from ._batched import centred_sq_norms
    from ._primitives import per_example_map

    return jnp.sum(centred_sq_norms(loss_fn, params, batch, gbar, per_example_map, chunk_size))


class _Pass:
    """The mean pass and the one-pass products for one (loss_fn, params, data)."""

    def __init__(self, loss_fn, params, data: Streamed, chunk_size):
        if is_batched(loss_fn):
            raise ValueError(
                "grd.streamed takes a per-example loss_fn: a batch-coupled loss "
                "(grd.batched) has no D over batches read separately."
            )
        params = _local(params, "params")
        self.loss_fn, self.params, self.data, self.chunk = loss_fn, params, data, chunk_size
        self.across = data.across_processes
        self.flat, self.unravel = tree_ravel(params)
        total, n, first = jnp.zeros_like(self.flat), 0, True
        for b in data.batches("mean gradient"):
            if first:
                val.core_inputs(loss_fn, params, b, min_size=1)
                first = False
            total = total + _grad_sum(loss_fn, params, b, chunk_size)
            n += jax.tree_util.tree_leaves(b)[0].shape[0]
        if self.across:  # Σ_p of the gradient sums and of the counts (N as an integer)
            total = process_sum(total)
            n = int(process_sum(jnp.asarray([n]))[0])
        if n == 0:
            raise ValueError("`make_iter()` yielded no batch.")
        if n < 2:
            raise ValueError(f"the streamed data set has N = {n}; D needs N ≥ 2.")
        self.n, self.gbar = n, total / n

    def matvec_flat(self, x):
        x = jnp.asarray(x, self.flat.dtype)
        v = self.unravel(x)
        sbar = jnp.vdot(self.gbar, x)
        total = jnp.zeros_like(self.flat)
        for b in self.data.batches("D·v"):
            total = total + _dv_sum(self.loss_fn, self.params, b, v, sbar, self.chunk)
        if self.across:
            total = process_sum(total)
        return total / self.n

    def trace(self):
        total = jnp.zeros((), self.flat.dtype)
        for b in self.data.batches("trace"):
            total = total + _sq_sum(self.loss_fn, self.params, b, self.gbar, self.chunk)
        if self.across:
            total = process_sum(total)
        return total / self.n


# --------------------------------------------------------------------------------------------
# The streamed versions of the public functions (called by grd._params.accepts_any_params).


def _matvec(loss_fn, params, batch, v, *, chunk_size=None):
    val.same_structure(v, params)
    v = _local(v, "v")
    p = _Pass(loss_fn, params, batch, chunk_size)
    return p.unravel(p.matvec_flat(tree_ravel(v)[0]))


def _trace(loss_fn, params, batch, *, method="exact", chunk_size=None, **_):
    if method != "exact":
        raise ValueError("grd.streamed supports diffusion_trace(method='exact') only.")
    return _Pass(loss_fn, params, batch, chunk_size).trace()


def _lanczos(matvec, v0, m):
    """Lanczos with full reorthogonalisation (float64 bookkeeping): ``m`` products."""
    d = v0.shape[0]
    Q = np.zeros((m, d))
    alpha, beta = np.zeros(m), np.zeros(m)
    q = v0 / np.linalg.norm(v0)
    k = m
    for j in range(m):
        Q[j] = q
        w = np.asarray(matvec(q), dtype=np.float64)
        alpha[j] = q @ w
        for _ in range(2):
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        if j + 1 == m or beta[j] <= 1e-12 * max(abs(alpha[: j + 1]).max(), 1e-300):
            k = j + 1
            break
        q = w / beta[j]
    T = np.diag(alpha[:k]) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
    theta, S = np.linalg.eigh(T)
    order = np.argsort(theta)[::-1]
    return theta[order], (S[:, order].T @ Q[:k])


def _spectrum(
    loss_fn, params, batch, k=None, *, method="lanczos", num_matvecs=None, key=None,
    return_eigenvectors=False, chunk_size=None,
):  # fmt: skip
    from ._diffusion import Spectrum

    if method != "lanczos":
        raise ValueError("grd.streamed supports diffusion_spectrum(method='lanczos') only.")
    if k is None:
        raise ValueError("`k` is required for method='lanczos' (the number of top eigenvalues).")
    p = _Pass(loss_fn, params, batch, chunk_size)
    d = p.flat.shape[0]
    cap = min(d, p.n)
    m = num_matvecs if num_matvecs is not None else min(cap, max(2 * k + 10, 30))
    if not 1 <= k <= m <= cap:
        raise ValueError(f"need 1 ≤ k ≤ num_matvecs ≤ min(d, N) = {cap}; got k={k}, {m}.")
    key = jax.random.PRNGKey(0) if key is None else _local(key, "key")
    v0 = np.asarray(jax.random.normal(key, (d,), p.flat.dtype), dtype=np.float64)
    theta, V = _lanczos(lambda x: p.matvec_flat(x), v0, m)
    lam = jnp.asarray(np.clip(theta[:k], 0.0, None), p.flat.dtype)
    vecs = None
    if return_eigenvectors:
        vecs = jax.vmap(p.unravel)(jnp.asarray(V[:k], p.flat.dtype))
    return Spectrum(lam, vecs)


def _lambda_max(loss_fn, params, batch, *, num_matvecs=20, key=None, chunk_size=None):
    p = _Pass(loss_fn, params, batch, chunk_size)
    m = min(num_matvecs, p.flat.shape[0], p.n)
    key = jax.random.PRNGKey(0) if key is None else _local(key, "key")
    v0 = np.asarray(jax.random.normal(key, p.flat.shape, p.flat.dtype), dtype=np.float64)
    theta, _ = _lanczos(lambda x: p.matvec_flat(x), v0, m)
    return jnp.asarray(max(theta[0], 0.0), p.flat.dtype)


def _metric_inverse(
    loss_fn, params, batch, v, eps, *, method="cg", rtol=1e-6, atol=1e-6, max_steps=100,
    chunk_size=None, return_info=False, **_,
):  # fmt: skip
    from ._metric import InverseInfo

    if method != "cg":
        raise ValueError("grd.streamed supports metric_inverse(method='cg') only.")
    val.same_structure(v, params)
    v = _local(v, "v")
    eps = float(val.check_eps(eps))
    p = _Pass(loss_fn, params, batch, chunk_size)
    b = tree_ravel(v)[0]
    A = lambda x: x + eps * p.matvec_flat(x)
    x = jnp.zeros_like(b)
    r, q = b, b
    rr = float(jnp.vdot(r, r))
    tol2 = max(rtol**2 * rr, atol**2)
    steps = 0
    while rr > tol2 and steps < max_steps:
        Aq = A(q)
        alpha = rr / float(jnp.vdot(q, Aq))
        x, r = x + alpha * q, r - alpha * Aq
        rr_new = float(jnp.vdot(r, r))
        q = r + (rr_new / rr) * q
        rr, steps = rr_new, steps + 1
    resid = float(jnp.linalg.norm(b - A(x)))  # the true residual (one more pass)
    if val.CHECKS_ENABLED and not resid <= max(rtol * float(jnp.linalg.norm(b)), atol) * 10:
        raise ValueError(
            f"conjugate gradients did not converge within `max_steps` = {max_steps} "
            f"(residual {resid:.3g}); raise `max_steps` or loosen `rtol`/`atol`."
        )
    out = p.unravel(x)
    if return_info:
        return out, InverseInfo(jnp.asarray(steps), jnp.asarray(resid))
    return out


STREAMED = {
    "diffusion_matvec": _matvec,
    "diffusion_trace": _trace,
    "diffusion_spectrum": _spectrum,
    "lambda_max": _lambda_max,
    "metric_inverse": _metric_inverse,
}
