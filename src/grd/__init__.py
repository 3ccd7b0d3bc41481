"""grd: the geometry of stochastic gradient descent in JAX.

The diffusion matrix ``D(w)`` of SGD, the diffusion metric ``g = I + εD``, its Christoffel
symbols, and the flows (GRD, NGD, GD, SGD as an SDE) built on them. See SPEC.md.
"""

from ._christoffel import (
    christoffel_contract as christoffel_contract,
)
from ._christoffel import (
    christoffel_symbols as christoffel_symbols,
)
from ._christoffel import (
    metric_derivative_contract as metric_derivative_contract,
)
from ._diffusion import (
    Spectrum as Spectrum,
)
from ._diffusion import (
    centred_grad_matrix as centred_grad_matrix,
)
from ._diffusion import (
    diffusion_matrix as diffusion_matrix,
)
from ._diffusion import (
    diffusion_matvec as diffusion_matvec,
)
from ._diffusion import (
    diffusion_rank as diffusion_rank,
)
from ._diffusion import (
    diffusion_spectrum as diffusion_spectrum,
)
from ._diffusion import (
    diffusion_trace as diffusion_trace,
)
from ._diffusion import (
    lambda_max as lambda_max,
)
from ._diffusion import (
    per_example_grads as per_example_grads,
)
from ._diffusion import (
    per_example_losses as per_example_losses,
)
from ._metric import (
    DiffusionMetric as DiffusionMetric,
)
from ._metric import (
    InverseInfo as InverseInfo,
)
from ._metric import (
    metric_apply as metric_apply,
)
from ._metric import (
    metric_inverse as metric_inverse,
)
from ._validation import CHECKS_ENABLED as CHECKS_ENABLED

__version__ = "0.1.0"
