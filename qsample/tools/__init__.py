"""Measurement tools above the core: they build samplers and measure them, and the core never
imports them.

- `bench`: sampler step time against the classical floor, and the shared timing/report helpers;
- `anneal_bench`: the batched annealer against dwave-neal on the same BQMs;
- `fidelity`: chi-square / total variation of sampled tokens against the exact target;
- `calibration`: a backend's effective temperature in ``boltzmann`` mode;
- `stats`: goodness of fit and paired A/B statistics.
"""
