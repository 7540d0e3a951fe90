"""refsnn: a pure-NumPy reference for surrogate-gradient BPTT in spiking neural networks.

Every backward pass is written by hand and cites the equation it implements (Yang 2020,
"Temporal surrogate back-propagation", eq. 1-10, with the reset term). No autograd framework
is imported anywhere under refsnn/.
"""

from .errors import RefsnnError, SpecError
from .network import Spec, init_params, parse_spec
from .oracle import grad, loss_function
from .surrogates import SURROGATES, make_surrogate

__version__ = "0.1.0"

__all__ = ["grad", "loss_function", "parse_spec", "init_params", "Spec", "make_surrogate",
           "SURROGATES", "RefsnnError", "SpecError", "__version__"]
