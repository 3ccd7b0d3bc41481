"""SGD analysis suite (SPEC §6): directional statistics, diffusion maps, limit cycles, recording.

Every function takes arrays (or pytrees, for :func:`minibatch_gradients`), is pure, and is
jit-able where its math allows; each docstring gives the formula and the paper it follows.
"""

from grd.analysis.diffusion_maps import (
    DiffusionMap,
    IntrinsicDimension,
    diffusion_map,
    intrinsic_dimension,
    squared_distances,
)
from grd.analysis.directional import (
    gradient_norm_stochasticity,
    gradient_stochasticity,
    mean_resultant_length,
    minibatch_gradients,
    uniform_concentration_baseline,
    vmf_concentration,
    vmf_mean_resultant_length,
)
from grd.analysis.limit_cycles import (
    Autocorrelation,
    IncrementSpectrum,
    NonequilibriumDecomposition,
    autocorrelation,
    increment_spectrum,
    lyapunov_solve,
    nonequilibrium_decomposition,
    rotation_rate,
    shuffled_surrogate,
    top_eigenplane,
)
from grd.analysis.recorder import Trajectory, TrajectoryRecorder, load_trajectory

# Functions that need the core diffusion operators (grd._diffusion) go here once it lands:
# the spectrum and rank of D along training, and the gradient noise scale / temperature
# (B_simple, B_noise, β⁻¹ = η/(2b)), from their own modules grd.analysis.spectrum and
# grd.analysis.noise_scale.

__all__ = [
    "Autocorrelation",
    "DiffusionMap",
    "IncrementSpectrum",
    "IntrinsicDimension",
    "NonequilibriumDecomposition",
    "Trajectory",
    "TrajectoryRecorder",
    "autocorrelation",
    "diffusion_map",
    "gradient_norm_stochasticity",
    "gradient_stochasticity",
    "increment_spectrum",
    "intrinsic_dimension",
    "load_trajectory",
    "lyapunov_solve",
    "mean_resultant_length",
    "minibatch_gradients",
    "nonequilibrium_decomposition",
    "rotation_rate",
    "shuffled_surrogate",
    "squared_distances",
    "top_eigenplane",
    "uniform_concentration_baseline",
    "vmf_concentration",
    "vmf_mean_resultant_length",
]
