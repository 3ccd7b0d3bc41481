"""Any params pytree: the one place where grd splits params into what it differentiates.

grd differentiates the *inexact-array* leaves of ``params`` (``equinox.is_inexact_array``:
floating-point ``jax.Array`` / ``np.ndarray``) and holds every other leaf fixed — functions
(``eqx.nn.MLP``'s activation), bools (``eqx.nn.Dropout``'s ``inference``), integers, PRNG keys,
``None``. Two framework conventions refine this:

* **flax.nnx**: only ``nnx.Param`` variables are differentiated; ``BatchStat``, ``RngState``
  and other variables are held fixed (as ``nnx.Optimizer(wrt=nnx.Param)`` does).
* **flax.linen variables dicts** ``{"params": …, "batch_stats": …}`` (a mapping with a
  ``"params"`` entry beside other collections): only the ``"params"`` collection.

Outputs shaped like ``params`` (D·v, Γ(v, v), eigenvectors, flow states, optax updates) hold
the differentiated leaves and ``None`` at every other leaf — equinox's ``filter_grad``
convention; ``eqx.combine(out, params)`` rebuilds a full model. Inputs shaped like ``params``
(``v``, ``v0``) may be either: their leaves at held-fixed positions are ignored.

:func:`accepts_any_params` applies this at the boundary of every public function; the internal
code only ever sees the differentiable part and a loss that recombines it with the rest.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from ._batched import PerExample, is_batched


def _nnx_variable_type():
    nnx = sys.modules.get("flax.nnx")  # only if the user imported flax.nnx
    return (nnx.Variable, nnx.Param) if nnx is not None else (None, None)


def _is_flax_variables(params) -> bool:
    return (
        isinstance(params, Mapping)
        and "params" in params
        and len(params) > 1
        and all(isinstance(v, Mapping) for v in params.values())
    )


def differentiable_mask(params):
    """A pytree of bools like ``params``: True at the leaves grd differentiates."""
    variable, param = _nnx_variable_type()
    is_var = (lambda x: isinstance(x, variable)) if variable is not None else None

    def leaf(x):
        if is_var is not None and is_var(x):
            trainable = isinstance(x, param)
            return jax.tree.map(lambda y: trainable and eqx.is_inexact_array(y), x)
        return eqx.is_inexact_array(x)

    mask = jax.tree.map(leaf, params, is_leaf=is_var)
    if _is_flax_variables(params):
        fixed = lambda t: jax.tree.map(lambda _: False, t)
        mask = type(params)({k: (m if k == "params" else fixed(m)) for k, m in mask.items()})
    return mask


def split_params(params, *, name: str = "params"):
    """``(diff, static, mask)``: the differentiated part (``None`` elsewhere), the rest, and
    the boolean mask. Raises, naming the leaf, for what cannot be differentiated."""
    mask = differentiable_mask(params)
    _check_differentiable(params, mask, name)
    diff, static = eqx.partition(params, mask)
    return diff, static, mask


def _check_differentiable(params, mask, name):
    path_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    flags = jax.tree_util.tree_leaves(mask)
    diff, fixed = [], []
    for (path, x), m in zip(path_leaves, flags, strict=True):
        (diff if m else fixed).append((jax.tree_util.keystr(path) or "<root>", x))
    if not diff:
        found = ", ".join(f"{p}: {_describe(x)}" for p, x in fixed[:6]) or "no leaves"
        raise TypeError(
            f"`{name}` has no floating-point array leaf to differentiate (found {found}). "
            "grd differentiates the floating-point arrays of params and holds every other "
            "leaf fixed; cast the parameters to floating point, e.g. "
            "jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)."
        )
    for p, x in diff:
        if jnp.issubdtype(jnp.result_type(x), jnp.complexfloating):
            raise TypeError(
                f"`{name}` leaf {p} is {jnp.result_type(x)}; grd needs real floating-point "
                "parameters (split a complex parameter into its real and imaginary parts)."
            )
    dtypes = {}
    for p, x in diff:
        dtypes.setdefault(str(jnp.result_type(x)), p)
    if len(dtypes) > 1:
        detail = ", ".join(f"{dt} (e.g. {p})" for dt, p in sorted(dtypes.items()))
        raise TypeError(
            f"`{name}` mixes floating dtypes: {detail}; cast every differentiated leaf to one "
            "dtype (e.g. with jax.tree.map(lambda x: x.astype(jnp.float64), params))."
        )


def _describe(x):
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return f"{x.dtype}{list(x.shape)}"
    return type(x).__name__


def filter_like(v, mask, *, name: str = "v"):
    """``v`` restricted to the differentiated leaves (``None`` elsewhere)."""
    try:
        return jax.tree.map(lambda m, x: x if m else None, mask, v)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"`{name}` must have the pytree structure of `params` (or of its differentiable "
            f"part, with None at the other leaves): {err}"
        ) from None


def prepare(loss_fn, params, *, name: str = "params"):
    """``(loss_fn', diff, mask)`` with ``loss_fn'(diff, example) = loss_fn(params, example)``.

    When every leaf is differentiated nothing changes (``loss_fn`` and ``params`` are
    returned as given; ``mask`` is None).
    """
    diff, static, mask = split_params(params, name=name)
    if not jax.tree_util.tree_leaves(static):
        return loss_fn, params, None
    if isinstance(loss_fn, PerExample):
        loss_fn = loss_fn.bind(static)
    elif loss_fn is not None:
        loss_fn = PerExample(loss_fn, False, static)
    return loss_fn, diff, mask


def reject_chunking(loss_fn, chunk_size):
    if is_batched(loss_fn) and chunk_size is not None:
        raise ValueError(
            "`chunk_size` cannot be used with a batch-coupled loss (grd.batched): a chunk of "
            "the batch is a different batch (BatchNorm would normalise over the chunk), so D "
            "would change. Pass chunk_size=None (memory is one batch gradient)."
        )


def accepts_any_params(fn=None, *, guard: bool = False):
    """Decorate a public ``fn(loss_fn, params|params0, batch, [v|v0], …)``.

    Splits ``params`` (see the module docstring), binds the held-fixed part into the loss,
    restricts ``v``/``v0`` to the differentiated leaves and rejects ``chunk_size`` for a
    batched loss. ``guard=True`` adds the constant-loss check on the result
    (:func:`check_not_constant`).
    """
    if fn is None:
        return functools.partial(accepts_any_params, guard=guard)
    sig = inspect.signature(fn)
    pname = next(n for n in ("params", "params0") if n in sig.parameters)
    vnames = tuple(n for n in ("v", "v0") if n in sig.parameters)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        a = bound.arguments
        loss, params, mask = prepare(a.get("loss_fn"), a[pname], name=pname)
        a["loss_fn"], a[pname] = loss, params
        if mask is not None:
            for n in vnames:
                if a.get(n) is not None:
                    a[n] = filter_like(a[n], mask, name=n)
        reject_chunking(loss, a.get("chunk_size"))
        from ._streamed import STREAMED, is_streamed

        if is_streamed(a.get("batch")):
            if fn.__name__ not in STREAMED:
                raise TypeError(
                    f"`batch=grd.streamed(...)` is not supported by grd.{fn.__name__}; it is by "
                    f"{', '.join(sorted(STREAMED))}."
                )
            return STREAMED[fn.__name__](**a)
        out = fn(*bound.args, **bound.kwargs)
        if guard:
            check_not_constant(loss, params, a["batch"], out, a.get("chunk_size"))
        return out

    return wrapper


# --------------------------------------------------------------------------------------------
# The constant-loss guard.


def check_not_constant(loss_fn, params, batch, result, chunk_size=None):
    """Raise if D vanishes because the loss does not depend on the example.

    Runs eagerly after ``diffusion_spectrum`` / ``diffusion_trace`` (and so ``lambda_max``)
    when their result is concrete; inside ``jit`` it is skipped. Cost: one compiled forward
    pass (the per-example losses), plus one mean gradient only when those are all equal. It
    fires when (1) every example has the same loss (to 8 ulp), (2) the result is at
    round-off level, ≤ (64 N eps ‖ḡ‖)², i.e. every per-example gradient is the same, and
    (3) the examples are not all identical. Equal losses with different gradients (a
    zero-initialised output layer) do not trigger it (D is then large); nor does a batch of
    identical examples (D = 0 genuinely).
    """
    from . import _validation as val
    from ._diffusion import Spectrum

    if not val.CHECKS_ENABLED:
        return
    value = result.eigenvalues[0] if isinstance(result, Spectrum) else result
    leaves = jax.tree_util.tree_leaves((value, params, batch))
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return
    equal, gbar_norm, identical = _constant_stats(loss_fn, params, batch, chunk_size)
    if not bool(equal) or bool(identical):
        return
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    eps = float(jnp.finfo(jnp.result_type(value)).eps)
    if float(value) > (64 * n * eps * max(float(gbar_norm), 1e-30)) ** 2:
        return
    raise ValueError(
        "D ≡ 0 by construction: every example has the same loss and the same gradient although "
        "the examples differ, so the loss does not depend on the example. Likely cause: a layer "
        "that normalises over the batch (BatchNorm in training mode) evaluated one example at a "
        "time by a per-example loss_fn, or the model ignoring its input. Evaluate the model on "
        "the whole batch with grd.batched(losses_fn), or use BatchNorm in inference mode "
        "(use_running_average=True). (This eager check is off with GRD_CHECKS=0.)"
    )


@eqx.filter_jit
def _constant_stats(loss_fn, params, batch, chunk_size):
    """``(losses all equal, ‖ḡ‖ if so else 0, examples all identical)`` in one compiled call."""
    from ._batched import example_losses
    from ._primitives import mean_weights, per_example_map, weighted_grad
    from ._tree import tree_dtype, tree_norm

    losses = example_losses(loss_fn, params, batch, per_example_map, chunk_size)
    losses = losses[0] if isinstance(losses, tuple) else losses
    tol = 8 * jnp.finfo(losses.dtype).eps * jnp.maximum(jnp.max(jnp.abs(losses)), 1e-30)
    equal = jnp.max(losses) - jnp.min(losses) <= tol
    n = losses.shape[0]

    def gbar_norm():
        w = mean_weights(n, tree_dtype(params))
        return tree_norm(weighted_grad(loss_fn, params, batch, w, chunk_size=chunk_size)).astype(
            losses.dtype
        )

    norm = jax.lax.cond(equal, gbar_norm, lambda: jnp.zeros((), losses.dtype))
    identical = jnp.all(jnp.stack([jnp.all(x == x[:1]) for x in jax.tree_util.tree_leaves(batch)]))
    return equal, norm, identical


# --------------------------------------------------------------------------------------------
# The optax transform: params and updates may be any pytree, or masked by optax.


def _is_masked_node(x) -> bool:
    return type(x).__name__ == "MaskedNode" and type(x).__module__.startswith("optax")


def fill_masked(per_example_loss_fn, params):
    """``per_example_loss_fn`` for use inside ``optax.masked`` / ``optax.multi_transform``.

    Inside those wrappers :func:`grd.scale_by_diffusion_metric` receives params whose
    masked-out leaves are ``optax.MaskedNode()``; this fills them from the full ``params``
    before calling ``per_example_loss_fn`` (which then sees a complete model). D is the
    diffusion matrix of the unmasked leaves (the masked ones held fixed)::

        tx = optax.multi_transform({"ngd": grd.diffusion_ngd(0.1, 0.5, relative=True),
                                    "sgd": optax.sgd(0.1)}, labels)
        updates, state = tx.update(grads, state, params,
                                   per_example_loss_fn=grd.fill_masked(losses, params))
    """

    def fill(p):
        return jax.tree.map(
            lambda m, full: full if _is_masked_node(m) else m, p, params, is_leaf=_is_masked_node
        )

    return lambda p: per_example_loss_fn(fill(p))


def optax_loss_shape(per_example_loss_fn, params):
    """``eval_shape`` of ``per_example_loss_fn(params)``, explaining a failure under masking."""
    masked = any(
        _is_masked_node(x) for x in jax.tree_util.tree_leaves(params, is_leaf=_is_masked_node)
    )
    if not masked:
        return jax.eval_shape(per_example_loss_fn, params)
    try:
        return jax.eval_shape(per_example_loss_fn, params)
    except Exception as err:  # the user's function on masked params: re-raise with the fix
        raise TypeError(
            "scale_by_diffusion_metric runs inside optax.masked / optax.multi_transform: its "
            "params have the masked-out leaves replaced by optax.MaskedNode(), and "
            "`per_example_loss_fn(params)` failed on them "
            f"({type(err).__name__}: {err}). Pass "
            "per_example_loss_fn=grd.fill_masked(per_example_loss_fn, params) with the full "
            "params (D is then that of the unmasked leaves)."
        ) from err


def optax_inputs(per_example_loss_fn, params, updates, per_example_grads):
    """Restrict the optax inputs to the differentiated leaves of ``params``.

    Returns ``(loss_fn', params', updates', per_example_grads', restore)``; ``restore(out)``
    puts the incoming updates back at the held-fixed leaves (``None`` stays ``None``).
    """
    diff, static, mask = split_params(params)
    if not jax.tree_util.tree_leaves(static):
        return per_example_loss_fn, params, updates, per_example_grads, lambda out: out
    if per_example_loss_fn is not None:
        fn = per_example_loss_fn
        per_example_loss_fn = lambda p: fn(eqx.combine(p, static))
    upd = filter_like(updates, mask, name="updates")
    if per_example_grads is not None:
        per_example_grads = filter_like(per_example_grads, mask, name="per_example_grads")

    def restore(out):
        return jax.tree.map(lambda m, u, o: o if m else u, mask, updates, out)

    return per_example_loss_fn, diff, upd, per_example_grads, restore
