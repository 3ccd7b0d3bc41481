"""Models for experiments with grd: a flax MLP classifier and a binary RBM."""

from . import mlp as mlp, rbm as rbm
