"""Input validation shared by every public function.

Structural checks (pytree structure, leading axes, dtypes, scalar losses) run eagerly in
Python, at trace time, so they cost nothing at run time. Value checks (finite inputs, ε ≥ 0,
ε·λ_max < 1 for the weak-field inverse) run inside compiled code through
:func:`equinox.error_if`, so they also fire under ``jax.jit``.

Value checks can be switched off for speed by setting the environment variable
``GRD_CHECKS=0`` before importing grd (read once, at import time).
"""

from __future__ import annotations

import functools
import os

import equinox as eqx
import jax
import jax.numpy as jnp

CHECKS_ENABLED: bool = os.environ.get("GRD_CHECKS", "1").strip().lower() not in (
    "0",
    "false",
    "off",
    "no",
)


def batch_size(batch, *, name: str = "batch", min_size: int = 1) -> int:
    """Return the common leading-axis length N of ``batch``; raise if leaves disagree."""
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError(f"`{name}` is an empty pytree; expected arrays with a leading axis N.")
    sizes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"`{name}` leaf {jax.tree_util.keystr(path)} is a scalar; every leaf needs a "
                "leading example axis N."
            )
        sizes.append((jax.tree_util.keystr(path), shape[0]))
    if len({s for _, s in sizes}) != 1:
        detail = ", ".join(f"{p or '<root>'}: {s}" for p, s in sizes)
        raise ValueError(
            f"`{name}` leaves have mismatched leading axes ({detail}); every leaf must have "
            "the same number of examples N on axis 0."
        )
    n = sizes[0][1]
    if n == 0:
        raise ValueError(f"`{name}` is empty (N = 0); pass at least {max(min_size, 1)} examples.")
    if n < min_size:
        raise ValueError(
            f"`{name}` has N = {n} example(s); this needs N ≥ {min_size} "
            "(a covariance over one example is zero by definition)."
        )
    return n


def same_structure(v, params, *, name: str = "v") -> None:
    """Raise if ``v`` does not have the pytree structure and leaf shapes of ``params``."""
    sv, sp = jax.tree_util.tree_structure(v), jax.tree_util.tree_structure(params)
    if sv != sp:
        raise ValueError(
            f"`{name}` must have the pytree structure of `params`; got {sv}, expected {sp}."
        )
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(v)[0], jax.tree_util.tree_leaves(params), strict=True
    ):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"`{name}` leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(a)}; "
                f"the matching leaf of `params` has shape {jnp.shape(b)}."
            )
        if not isinstance(a, int | float) and jnp.result_type(a) != jnp.result_type(b):
            raise TypeError(
                f"`{name}` leaf {jax.tree_util.keystr(path)} has dtype {jnp.result_type(a)}; "
                f"the matching leaf of `params` has dtype {jnp.result_type(b)}. Cast `{name}` "
                "to the dtype of `params` (mixed float32/float64 is rejected, not promoted)."
            )


def floating_params(params, *, name: str = "params") -> None:
    """Raise unless every leaf of ``params`` is a floating-point array of one dtype."""
    dtypes = {jnp.result_type(x) for x in jax.tree_util.tree_leaves(params)}
    if not dtypes:
        raise ValueError(f"`{name}` has no array leaves.")
    for dt in dtypes:
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"`{name}` must hold floating-point arrays; found dtype {dt}.")
    if len(dtypes) > 1:
        raise TypeError(
            f"`{name}` mixes floating dtypes {sorted(map(str, dtypes))}; cast every leaf to one "
            "dtype (e.g. with jax.tree.map(lambda x: x.astype(jnp.float64), params))."
        )


def scalar_loss(loss_fn, params, batch) -> None:
    """Raise if ``loss_fn(params, example)`` is not a scalar for one example of ``batch``."""
    key = _signature(loss_fn, params, batch)
    if key is not None and key in _CHECKED:  # no retrace per eager call (grd._params wraps
        return  # loss_fn in a fresh module per call; eval_shape would trace it each time)
    if hasattr(loss_fn, "check_output"):  # a batch-coupled loss (grd.batched): (N,) losses
        loss_fn.check_output(params, batch)
        return _remember(key)
    example = jax.tree_util.tree_map(lambda x: x[0], batch)
    out = jax.eval_shape(loss_fn, params, example)
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"`loss_fn(params, example)` must return a scalar per example; got shape {shape}. "
            "Reduce it (e.g. with .sum() or .mean()) inside loss_fn."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            f"`loss_fn(params, example)` must return a floating-point scalar; got dtype "
            f"{out.dtype}. Compute the loss in floating point (it is differentiated)."
        )
    _remember(key)


_CHECKED: dict = {}


def _signature(loss_fn, params, batch):
    """A hashable key of (loss_fn, shapes and dtypes of params and batch), or None."""
    leaves, treedef = jax.tree_util.tree_flatten((loss_fn, params, batch))
    sig = tuple((jnp.shape(x), jnp.result_type(x)) if hasattr(x, "shape") else x for x in leaves)
    try:
        hash((treedef, sig))
    except TypeError:
        return None
    return treedef, sig


def _remember(key):
    if key is not None:
        if len(_CHECKED) >= 256:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[key] = True


def cast_scalar(x, dtype, *, name: str):
    """Return the real scalar ``x`` as a 0-d array of ``dtype`` (the dtype of ``params``).

    The one place where grd's scalar arguments (ε, λ_max, learning rates, temperatures, times,
    tolerances) meet the parameters: Python, NumPy or JAX scalars of any float dtype, concrete
    or traced, are cast to ``dtype`` at the boundary, so a NumPy float64 ε with float32 params
    and x64 on neither promotes the computation nor breaks a ``while_loop`` carry or a
    ``jax.jvp`` (issue 15). ``None`` passes through.
    """
    if x is None:
        return None
    if isinstance(x, complex | bool) or not jnp.issubdtype(jnp.result_type(x), jnp.number):
        raise TypeError(f"`{name}` must be a real number; got {x!r}.")
    if jnp.issubdtype(jnp.result_type(x), jnp.complexfloating):
        raise TypeError(f"`{name}` must be a real number; got {x!r}.")
    if jnp.shape(x) != ():
        raise ValueError(f"`{name}` must be a scalar; got shape {jnp.shape(x)}.")
    return jnp.asarray(x, dtype=dtype)


def check_eps(eps, dtype=None):
    """Return ``eps`` after checking ε ≥ 0 and finite (eagerly, or in-graph when traced).

    With ``dtype`` (the dtype of ``params``) the result is cast to it (:func:`cast_scalar`).
    """
    if (
        isinstance(eps, complex)
        or not jnp.issubdtype(jnp.result_type(eps), jnp.number)
        or (jnp.issubdtype(jnp.result_type(eps), jnp.complexfloating))
    ):
        raise TypeError(f"`eps` must be a real number; got {eps!r}.")
    if jnp.shape(eps) != ():
        raise ValueError(f"`eps` must be a scalar; got shape {jnp.shape(eps)}.")
    if not isinstance(eps, jax.core.Tracer):  # concrete: check now, a plain ValueError
        value = float(eps)
        if not (value >= 0 and value != float("inf")):
            raise ValueError(f"`eps` must be a finite number ≥ 0; got {value}. Pass ε ≥ 0.")
        if dtype is None:
            return jnp.asarray(eps)  # an array, so jit does not recompile per value
        return cast_scalar(eps, dtype, name="eps")
    if CHECKS_ENABLED:
        eps = eqx.error_if(
            eps,
            ~(jnp.isfinite(eps) & (eps >= 0)),
            "`eps` must be a finite number ≥ 0; pass ε ≥ 0 (a NaN or negative ε was traced).",
        )
    return eps if dtype is None else cast_scalar(eps, dtype, name="eps")


def check_finite(tree, name: str):
    """Return ``tree`` after checking every leaf is finite (no NaN/inf).

    Concrete inputs are checked eagerly (a ``ValueError``, and no copy of the data); traced
    ones in-graph with :func:`equinox.error_if`.
    """
    if not CHECKS_ENABLED:
        return tree
    bad = _nonfinite(tree)
    msg = f"`{name}` contains NaN or inf; clean or mask the input."
    if not isinstance(bad, jax.core.Tracer):
        if bool(bad):
            raise ValueError(msg)
        return tree
    return eqx.error_if(tree, bad, msg)


def core_inputs(loss_fn, params, batch, *, min_size: int = 2, v=None):
    """Validate ``(loss_fn, params, batch[, v])``; return N and the (value-checked) trees."""
    n = batch_size(batch, min_size=min_size)
    floating_params(params)
    scalar_loss(loss_fn, params, batch)
    if v is not None:
        same_structure(v, params)
    if CHECKS_ENABLED:
        params, batch, v = _finite_checked(params, batch, v)
    return n, params, batch, v


@eqx.filter_jit
def _finite_checked(params, batch, v):
    """Attach one in-graph finiteness check of params, batch and v to ``params`` only.

    Only ``params`` (d numbers) passes through the check: routing the batch through
    ``error_if`` would make XLA copy the whole data set.
    """
    names = ("params", "batch", "v")
    bad = jnp.stack([_nonfinite(t) for t in (params, batch, v)])
    msgs = tuple(f"`{n}` contains NaN or inf; clean or mask the input." for n in names)
    params = eqx.branched_error_if(params, jnp.any(bad), jnp.argmax(bad), msgs)
    return params, batch, v


def _nonfinite(tree):
    leaves = [
        x
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    if not leaves:
        return jnp.asarray(False)
    return jnp.logical_not(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))


_MARKERS = ("equinox.EquinoxRuntimeError: ", "_EquinoxRuntimeError: ")


def message_first(fn):
    """Decorate a public function so a failed in-graph check reads as one line, message first.

    ``equinox.filter_jit`` reports an :func:`equinox.error_if` failure as
    ``EquinoxRuntimeError: Above is the stack outside of JIT …`` with grd's message in the
    middle, and an eager ``error_if`` as ``JaxRuntimeError: INTERNAL: CpuCallback error …``.
    Called eagerly, the decorated function re-raises either as ``EquinoxRuntimeError(message)``
    (same type, so ``except`` clauses keep working) whose first line is grd's message naming
    the argument and the fix. Inside the user's ``jax.jit`` the error is raised by XLA when
    the compiled program runs, after this wrapper has returned: there the message follows
    JAX's traceback (see docs/robustness.md).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError) as err:
            text = str(err)
            for marker in _MARKERS:
                if marker in text:
                    msg = text.split(marker, 1)[1].split("\n\n", 1)[0].strip()
                    raise eqx.EquinoxRuntimeError(msg) from None
            raise

    return wrapper
