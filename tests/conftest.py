"""Test-session setup: float64 available for the oracle tests.

float32 tests build their inputs explicitly in float32 (Python scalars stay weakly typed,
so they do not promote), so enabling x64 here does not change them.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

# One persistent XLA compilation cache for the whole session: the xdist workers, the `grd`
# CLI subprocesses (the tiny report, the refusal/kill/resume runs) and the notebook kernels
# inherit it, so a program compiled once is not compiled again by the next process. Created
# by the first process (the xdist controller) and removed when it exits; a cache the user set
# is left alone.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="grd-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile("ci", deadline=None, max_examples=15, derandomize=True)
settings.load_profile("ci")


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4 — each worker imports
    JAX and compiles its own programs (≈ 1 GB each), and beyond 4 the suite is bound by its
    longest test file (``--dist loadfile`` keeps a file's module fixtures in one worker)."""
    return max(1, min(os.cpu_count() or 1, 4))
