"""Make examples/inputs.npz: the single-neuron toy problem of Yang 2020 (Table 1).

One LIF neuron reads 50 inputs for T = 100 steps (B = 1 sample). Each input spikes with
probability 1/10 on each step, the desired output with probability 1/20; both are drawn from a
fixed seed so that the file is reproducible. The spikes are stored as uint8 0/1 (refsnn reads
any integer, boolean or float array as float64):

    x       (100, 1, 50)   input spike trains   (T, B, *input_shape)
    target  (100, 1, 1)    desired spike train  (T, B, n_out)

examples/spec.json holds the matching network (architecture "1", tau_m 6, tau_s 2, theta 1,
sigmoid surrogate T 0.3, van Rossum loss with tau 2, inputs filtered by the tau_s trace).

    python examples/make_example.py            # rewrites examples/inputs.npz
    python examples/make_example.py FOLDER     # writes FOLDER/inputs.npz instead
    refsnn grad examples/spec.json examples/inputs.npz --out out.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 2011_09964            # the paper's arXiv number
T, B, N_IN, N_OUT = 100, 1, 50, 1
P_INPUT, P_TARGET = 1 / 10, 1 / 20


def make_inputs(seed: int = SEED) -> dict[str, np.ndarray]:
    """The toy inputs: Bernoulli spike trains, x (T, B, N_IN) and target (T, B, N_OUT), uint8."""
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, N_IN)) < P_INPUT).astype(np.uint8)
    target = (rng.random((T, B, N_OUT)) < P_TARGET).astype(np.uint8)
    return {"x": x, "target": target}


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parent
    arrays = make_inputs()
    np.savez_compressed(folder / "inputs.npz", **arrays)
    print(f"wrote {folder / 'inputs.npz'}: x {arrays['x'].shape} with {int(arrays['x'].sum())} spikes, "
          f"target {arrays['target'].shape} with {int(arrays['target'].sum())} spikes")


if __name__ == "__main__":
    main(sys.argv[1:])
