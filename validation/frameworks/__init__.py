"""Adapters that drive real SNN frameworks as refsnn's LIF neuron (validation only).

One module per framework, each with the same surface:

- ``configure(spec) -> Setup``: the framework configured to reproduce eq. (1)-(3) of the spec
  (its ``call`` says how a user writes it, ``run(x, target, params)`` returns refsnn.grad's
  ``loss`` and ``grad/...`` keys plus the spikes ``S/{i}``), or ``Unsupported`` saying why not;
  ``grad(spec, x, target, params)`` is the shortcut;
- ``DEFAULTS``: the framework's default configuration(s), each with the refsnn constants it
  implies and the reset mode it is claimed to compute (tests/test_cross_validation.py and the
  conformance report measure it against every mode);
- ``SURROGATE_MAP``, ``LIMITATIONS`` and ``probes()``: the surrogate equivalences, what cannot
  match eq. (1)-(3) and why, and the framework facts the adapter relies on, measured.

snntorch_adapter needs snnTorch 1.0.0, spikingjelly_adapter SpikingJelly 2.0.0, norse_adapter
Norse 1.1.0 (installed with --no-deps, see .ci/run). Nothing under refsnn/ imports them.
"""
