"""Float64 for the oracle tests of grd.analysis (set once, before any array is created)."""

import jax

jax.config.update("jax_enable_x64", True)
