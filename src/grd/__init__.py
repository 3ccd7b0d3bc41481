"""grd: the geometry of stochastic gradient descent in JAX."""

__version__ = "0.1.0"
