"""grd: the geometry of stochastic gradient descent in JAX.

The diffusion matrix ``D(w)`` of SGD, the diffusion metric ``g = I + εD``, its Christoffel
symbols, and the flows (GRD, NGD, GD, SGD as an SDE) built on them. The mathematics:
docs/theory.md (in the built site, the Theory page).
"""

from . import (
    analysis as analysis,
    checkpoint as checkpoint,
    data as data,
    models as models,
    sharding as sharding,
)
from ._batched import (
    batched as batched,
    example_keys as example_keys,
    per_example as per_example,
)
from ._christoffel import (
    christoffel_contract as christoffel_contract,
    christoffel_symbols as christoffel_symbols,
    metric_derivative_contract as metric_derivative_contract,
)
from ._diffusion import (
    Spectrum as Spectrum,
    centred_grad_matrix as centred_grad_matrix,
    diffusion_matrix as diffusion_matrix,
    diffusion_matvec as diffusion_matvec,
    diffusion_rank as diffusion_rank,
    diffusion_spectrum as diffusion_spectrum,
    diffusion_trace as diffusion_trace,
    lambda_max as lambda_max,
    per_example_grads as per_example_grads,
    per_example_losses as per_example_losses,
)
from ._flows import (
    GDField as GDField,
    GRDField as GRDField,
    NGD2Field as NGD2Field,
    NGDField as NGDField,
    SGDDiffusion as SGDDiffusion,
    flow_field as flow_field,
    integrate as integrate,
    ngd_velocity as ngd_velocity,
)
from ._metric import (
    DiffusionMetric as DiffusionMetric,
    InverseInfo as InverseInfo,
    conjugate_gradients as conjugate_gradients,
    default_cg_rtol as default_cg_rtol,
    lambda_max_upper_bound as lambda_max_upper_bound,
    metric_apply as metric_apply,
    metric_inverse as metric_inverse,
)
from ._operators import (
    diffusion_operator as diffusion_operator,
    metric_operator as metric_operator,
    to_scipy as to_scipy,
)
from ._optim import (
    ScaleByDiffusionMetricState as ScaleByDiffusionMetricState,
    diffusion_ngd as diffusion_ngd,
    scale_by_diffusion_metric as scale_by_diffusion_metric,
)
from ._params import fill_masked as fill_masked
from ._residual import (
    FlowComparison as FlowComparison,
    compare_flows as compare_flows,
    grd_residual as grd_residual,
)
from ._spectral import (
    SpectralDensity as SpectralDensity,
    diffusion_diagonal as diffusion_diagonal,
    diffusion_spectral_density as diffusion_spectral_density,
    hessian_spectrum as hessian_spectrum,
    lanczos_eigh as lanczos_eigh,
)
from ._streamed import streamed as streamed
from ._validation import CHECKS_ENABLED as CHECKS_ENABLED

__version__ = "0.1.0"
