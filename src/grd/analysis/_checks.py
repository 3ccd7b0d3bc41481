"""Argument checks shared by the analysis functions.

Shapes are checked eagerly (they are static under ``jax.jit``). Values (NaN/inf, zero rows)
are checked eagerly with a ``ValueError`` naming the argument and the offending rows when the
input is concrete, and in-graph with :func:`equinox.error_if` when it is traced.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from grd._validation import CHECKS_ENABLED


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(map(str, idx[:limit]))
    return shown + (", …" if idx.size > limit else "")


def as_matrix(x, name: str, *, min_rows: int = 1, min_cols: int = 1, what: str = "rows"):
    """Return ``x`` as a floating (n, p) array after checking its shape."""
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array of shape (n, p); got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    n, p = x.shape
    if n < min_rows:
        raise ValueError(f"`{name}` has {n} {what}; this needs at least {min_rows}.")
    if p < min_cols:
        raise ValueError(f"`{name}` has {p} column(s); this needs at least {min_cols}.")
    return x


def finite_rows(x, name: str):
    """Return ``x`` after checking that every entry is finite (error names the bad rows)."""
    if not _is_traced(x):
        bad = ~np.all(np.isfinite(np.asarray(x)), axis=tuple(range(1, np.ndim(x))))
        if bad.any():
            raise ValueError(
                f"`{name}` has NaN or inf in row(s) {_rows(bad)}; drop or repair those rows."
            )
        return x
    if not CHECKS_ENABLED:
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"`{name}` contains NaN or inf.")


def nonzero_rows(x, norms, name: str):
    """Return ``x`` after checking that no row has zero norm (``norms`` are the row norms)."""
    if not _is_traced(norms):
        bad = np.asarray(norms) == 0
        if bad.any():
            raise ValueError(
                f"`{name}` has all-zero row(s) {_rows(bad)}: a zero vector has no direction "
                "(a zero gradient). Drop those rows."
            )
        return x
    if not CHECKS_ENABLED:
        return x
    return eqx.error_if(x, jnp.any(norms == 0), f"`{name}` has an all-zero row (no direction).")
