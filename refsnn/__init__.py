"""refsnn: a pure-NumPy reference for surrogate-gradient BPTT in spiking neural networks.

Every backward pass is written by hand and cites the equation it implements (Yang 2020,
"Temporal surrogate back-propagation", eq. 1-10, with the reset term). No autograd framework
is imported anywhere under refsnn/.
"""

import os as _os
import sys as _sys

# OpenBLAS's idle worker threads busy-wait up to 2^28 cycles (~0.1 s) after every matrix product,
# on the cores that refsnn's own threads need for the elementwise loops in between (parallel.py):
# measured on 2 cores, a forward+backward of the N-MNIST network took 0.11-0.14 s with the default
# and 0.074-0.081 s with a timeout of 2^4 cycles (docs/performance.md). OpenBLAS reads the setting
# once, when numpy loads it, so it can only be given here if refsnn is imported before numpy;
# a value the user set is kept. It changes no number, only when an idle thread goes to sleep.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .errors import RefsnnError, SpecError  # noqa: E402
from .network import Spec, init_params, parse_spec  # noqa: E402
from .oracle import grad, loss_function  # noqa: E402
from .surrogates import SURROGATES, make_surrogate  # noqa: E402

__version__ = "0.1.0"

__all__ = ["grad", "loss_function", "parse_spec", "init_params", "Spec", "make_surrogate",
           "SURROGATES", "RefsnnError", "SpecError", "__version__"]
