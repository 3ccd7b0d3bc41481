"""Float64 for the oracle tests of grd.analysis (also set by tests/conftest.py; repeated here
so this folder runs on its own)."""

import jax

jax.config.update("jax_enable_x64", True)
