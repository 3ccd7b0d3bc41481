"""SGD analysis suite (SPEC §6): spectrum and rank of D, its alignment with the Hessian, noise
scale, directional statistics, diffusion maps, limit cycles, recording.

Every function takes arrays (or pytrees, for :func:`minibatch_gradients`), is pure, and is
jit-able where its math allows; each docstring gives the formula and the paper it follows.
"""

from grd.analysis.alignment import (
    HessianAlignment,
    diffusion_hessian_alignment,
    subspace_overlap,
)
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
from grd.analysis.noise_scale import (
    CurvatureNoiseScale,
    SimpleNoiseScale,
    noise_scale_curvature,
    noise_scale_simple,
    sgd_temperature,
)
from grd.analysis.recorder import Trajectory, TrajectoryRecorder, load_trajectory
from grd.analysis.spectrum import (
    SpectrumAlongTraining,
    plot_spectrum_histogram,
    spectrum_along_training,
    spectrum_table,
)

__all__ = [
    "Autocorrelation",
    "CurvatureNoiseScale",
    "DiffusionMap",
    "HessianAlignment",
    "IncrementSpectrum",
    "IntrinsicDimension",
    "NonequilibriumDecomposition",
    "SimpleNoiseScale",
    "SpectrumAlongTraining",
    "Trajectory",
    "TrajectoryRecorder",
    "autocorrelation",
    "diffusion_hessian_alignment",
    "diffusion_map",
    "gradient_norm_stochasticity",
    "gradient_stochasticity",
    "increment_spectrum",
    "intrinsic_dimension",
    "load_trajectory",
    "lyapunov_solve",
    "mean_resultant_length",
    "minibatch_gradients",
    "noise_scale_curvature",
    "noise_scale_simple",
    "nonequilibrium_decomposition",
    "plot_spectrum_histogram",
    "rotation_rate",
    "sgd_temperature",
    "shuffled_surrogate",
    "spectrum_along_training",
    "spectrum_table",
    "squared_distances",
    "subspace_overlap",
    "top_eigenplane",
    "uniform_concentration_baseline",
    "vmf_concentration",
    "vmf_mean_resultant_length",
]
