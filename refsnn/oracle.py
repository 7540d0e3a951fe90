"""The oracle interface: ``refsnn.grad`` and the files it reads and writes (docs/oracle.md).

    grad(spec, x, target, params=None, *, seed=0, adjoints=False) -> dict of numpy arrays

Keys of the result (and of OUT.npz):
    loss                                   0-d float64, eq. (6)
    grad/layers.{i}.weight, grad/layers.{i}.bias
    layers.{i}.weight, layers.{i}.bias     the parameters used (initialised from seed if not given)
  with adjoints=True, per LIF layer i, each (T, B, n_i):
    U/{i}, S/{i}, dL_dS/{i}, dL_dU/{i}, dL_dU_spatial/{i}, dL_dU_leak/{i}, dL_dU_reset/{i}
    output_error                            f(S)_t - f(d)_t of the output layer (Fig. 2A)

Files are numpy .npz archives read with allow_pickle=False and written atomically (a temporary
file in the same folder, renamed into place), so a failure never leaves a half-written OUT.npz.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .errors import RefsnnError, SpecError
from .network import (Spec, check_inputs, check_params, init_params, network_backward,
                      network_forward, parse_spec)


def grad(spec: Any, x: Any, target: Any, params: Mapping[str, Any] | None = None, *,
         seed: int = 0, adjoints: bool = False) -> dict[str, np.ndarray]:
    """Loss and exact BPTT gradients of the network ``spec`` on input ``x`` against ``target``.

    spec: a dict as in SPEC.json (or a parsed Spec); x: (T, B, *input_shape); target: (T, B, n_out);
    params: ``layers.{i}.weight`` (out, in) / ``layers.{i}.bias`` (out,), or None to initialise
    them from ``seed``. Inputs are never modified.
    """
    spec = parse_spec(spec)
    x, target = check_inputs(spec, x, target)
    if params is None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise RefsnnError(f"seed must be a non-negative integer, got {seed!r}")
        params = init_params(spec, int(seed))
    else:
        params = check_params(spec, params)
    loss, _, cache = network_forward(spec, params, x, target)
    result = {"loss": np.asarray(loss, dtype=np.float64)}
    result.update(network_backward(spec, cache, adjoints=adjoints))
    result.update({name: np.array(value) for name, value in params.items()})
    return result


def loss_function(spec: Any, x: Any, target: Any) -> Callable[[Mapping[str, np.ndarray]], float]:
    """params -> loss for fixed spec, x and target: the function that finite differences probe."""
    spec = parse_spec(spec)
    x, target = check_inputs(spec, x, target)

    def loss(params: Mapping[str, np.ndarray]) -> float:
        return network_forward(spec, params, x, target)[0]

    return loss


# ----------------------------------------------------------------------------- files

def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate SPEC.json."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RefsnnError(f"SPEC.json: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"SPEC.json: {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}") from None
    return parse_spec(data)


def load_npz(path: str | os.PathLike, what: str, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read an .npz archive without pickle; ``what`` names the argument in errors."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as exc:
                    if "pickle" in str(exc).lower():
                        raise RefsnnError(f"{what}: array {key!r} in {str(path)!r} is an object array "
                                          "that needs pickle; store plain numeric arrays") from None
                    raise
    except RefsnnError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise RefsnnError(f"{what}: cannot read {str(path)!r} as an .npz archive: {exc}") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise RefsnnError(f"{what}: {str(path)!r} is missing the array(s) {missing} "
                          f"(it has {sorted(arrays)})")
    return arrays


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (.npz, uncompressed) via a temporary file and a rename."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RefsnnError(f"--out: folder {str(folder)!r} does not exist")
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
