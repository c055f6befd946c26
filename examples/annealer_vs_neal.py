"""qsample's batched annealer as a plain dimod sampler, next to dwave-neal on the same BQMs.

Anneals 32 random dense spin glasses (K = 48) with both samplers, same reads, sweeps and
schedule (neal's default range of each BQM), and prints the mean energy, how often each found
the best energy either sampler saw, and the wall time: one kernel call for all 32 BQMs against
32 neal calls.
"""

import time

import dimod
import numpy as np
from dwave.samplers import SimulatedAnnealingSampler

from qsample.annealer import BatchedSimulatedAnnealingSampler

K, PROBLEMS, READS, SWEEPS = 48, 32, 20, 200


def spin_glass(seed: int) -> dimod.BinaryQuadraticModel:
    couplings = np.triu(np.random.default_rng(seed).normal(size=(K, K)), 1)
    rows, cols = np.nonzero(couplings)
    return dimod.BQM.from_ising({}, {(int(i), int(j)): float(couplings[i, j])
                                     for i, j in zip(rows, cols, strict=True)})


def main() -> None:
    bqms = [spin_glass(seed) for seed in range(PROBLEMS)]
    ours = BatchedSimulatedAnnealingSampler()
    ours.sample(bqms[0], num_reads=1, num_sweeps=1, seed=0)  # compile the kernel once
    start = time.perf_counter()
    batched = ours.sample_batch(bqms, num_reads=READS, num_sweeps=SWEEPS, seed=0)
    ours_s = time.perf_counter() - start
    neal = SimulatedAnnealingSampler()
    start = time.perf_counter()
    theirs = [neal.sample(bqm, num_reads=READS, num_sweeps=SWEEPS, seed=i)
              for i, bqm in enumerate(bqms)]
    neal_s = time.perf_counter() - start
    best = [min(a.first.energy, b.first.energy) for a, b in zip(batched, theirs, strict=True)]
    for name, sets, seconds in (("batched-sa", batched, ours_s), ("neal", theirs, neal_s)):
        mean = np.mean([s.record.energy.mean() for s in sets])
        hits = np.mean([(s.record.energy <= e + 1e-9).mean() for s, e in zip(sets, best,
                                                                              strict=True)])
        print(f"{name:10s} mean energy {mean:9.2f}   best-energy hit rate {hits:6.1%}   "
              f"{1e3 * seconds:8.1f} ms for {PROBLEMS} BQMs")


if __name__ == "__main__":
    main()
