"""Models for experiments with grd: a flax MLP classifier and a binary RBM."""

from . import mlp as mlp
from . import rbm as rbm
