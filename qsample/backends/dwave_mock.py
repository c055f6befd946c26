"""The offline D-Wave QPU: ``MockDWaveSampler`` with an ideal stand-in, for tests and
`qsample calibrate` without a token (backend ``"dwave-mock"``)."""

from __future__ import annotations

from typing import Any

import dimod
import numpy as np

from ..errors import ConfigError
from .dwave import (
    CALL_PARAMS,
    DEFAULT_TOPOLOGY,
    MAX_GROUP_PROPERTY,
    MAX_K_PROPERTY,
    TOPOLOGIES,
    DWaveBackend,
)

MOCK_BETA_QPU = 6.0  # the mock's stand-in samples the programmed problem at this beta
# Exact sampling of an embedded component costs exponentially in its treewidth: about K for a
# row's clique. A coupled group (n K-cliques plus sibling edges on one (n x K)-clique's chains,
# 10 reads) took at most 0.25 s at n x K = 20 (n = 2..10) and up to 12 s at n x K = 30.
MOCK_MAX_K = 20  # the largest K of a row
MOCK_MAX_GROUP = 20  # the most variables n x K of a coupled group
MOCK_DEFAULT_TOP_K = 16  # a config's K on the stand-ins when it gives none


class IdealQPUStandIn(dimod.Sampler):
    """An idealised QPU for offline tests: exact Boltzmann samples exp(-beta E') of the
    *programmed* (embedded) problem E' at a known beta (tree decomposition), ignoring QPU-only
    keyword arguments. Real QPUs are roughly this, with beta_eff near 6 and extra noise; single
    spin-flip annealers are a poor stand-in because they cannot move embedded chains.

    Args:
        beta: the inverse temperature of its samples, in programmed-energy units.
        seed: seeds the generator of the calls' seeds (None: fresh entropy).
    """

    def __init__(self, beta: float = MOCK_BETA_QPU, seed: int | None = None) -> None:
        from dwave.samplers import TreeDecompositionSampler

        self.beta = beta
        self._exact = TreeDecompositionSampler()
        self._seeds = np.random.default_rng(seed)  # a call's seed when it passes none

    @property
    def parameters(self) -> dict[str, list]:
        return {"num_reads": [], "seed": []}

    @property
    def properties(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def sample(self, bqm, num_reads: int = 1, seed: int | None = None, **_: Any):
        """Exact samples, component by component (packed cliques and groups are disjoint: their
        cost then grows linearly with their number). Without ``seed`` (the QPU interface passes
        none) each call draws one from the stand-in's own generator."""
        labels = list(bqm.variables)
        samples = self.draw(bqm, num_reads, self.call_seed(seed), self.beta)
        return dimod.SampleSet.from_samples_bqm((samples, labels), bqm)

    def call_seed(self, seed: int | None) -> int:
        """``seed``, or a fresh one from the stand-in's generator when None."""
        return int(self._seeds.integers(2**31)) if seed is None else int(seed)

    def draw(self, bqm, num_reads: int, seed: int, beta: float) -> np.ndarray:
        """int8 [num_reads, len(bqm)] exact Boltzmann samples exp(-beta E) of ``bqm`` (columns in
        ``bqm.variables`` order, values in its vartype), component by component."""
        labels = list(bqm.variables)
        column = {v: n for n, v in enumerate(labels)}
        samples = np.zeros((num_reads, len(labels)), dtype=np.int8)
        for index, component in enumerate(dimod.traversal.connected_components(bqm)):
            part = dimod.BinaryQuadraticModel(
                {v: bqm.get_linear(v) for v in component},
                {(u, v): bias for u in component for v, bias in bqm.iter_neighborhood(u)
                 if column[u] < column[v]},
                0.0, bqm.vartype)
            draw = self._exact.sample(part, num_reads=num_reads, beta=beta,
                                      marginals=False,
                                      seed=(seed + index) % 2**31)
            columns = [column[v] for v in draw.variables]
            samples[:, columns] = np.asarray(draw.record.sample, dtype=np.int8)
        return samples


def check_topology(topology: Any) -> str:
    """``backend_params.topology`` of the stand-ins: a name of `TOPOLOGIES`."""
    if topology not in TOPOLOGIES:
        raise ConfigError("backend_params.topology", topology,
                          "one of " + ", ".join(map(repr, TOPOLOGIES))
                          + " (Advantage2's Zephyr Z(12, 4), Advantage's Pegasus P16)")
    return topology


def mock_sampler(topology: str = DEFAULT_TOPOLOGY, shape: tuple[int, ...] | None = None,
                 seed: int | None = None, stand_in: IdealQPUStandIn | None = None):
    """``dwave.system.testing.MockDWaveSampler`` (no token, no network) with the full working
    graph of ``topology`` (`TOPOLOGIES`) of ``shape`` (None: the generally available system's;
    a real system lacks a few percent of its qubits) whose stand-in is ``stand_in`` (default:
    `IdealQPUStandIn` at beta = MOCK_BETA_QPU, its draws seeded by ``seed``; None: fresh
    entropy): `qsample calibrate --backend dwave-mock` should find the backend's assumed
    beta_qpu (6) confirmed.
    Its ``chip_id`` names the topology (``mock-zephyr-12x4``), so that embeddings and
    calibrations are kept per topology."""
    from dwave.system.testing import MockDWaveSampler

    shape = tuple(shape or TOPOLOGIES[check_topology(topology)])
    sampler = MockDWaveSampler(topology_type=topology, topology_shape=list(shape),
                               parameter_warnings=False,
                               substitute_sampler=stand_in or IdealQPUStandIn(seed=seed))
    sampler.properties["chip_id"] = f"mock-{topology}-{'x'.join(map(str, shape))}"
    sampler.properties[MAX_K_PROPERTY] = MOCK_MAX_K
    sampler.properties[MAX_GROUP_PROPERTY] = MOCK_MAX_GROUP
    return sampler


class MockDWaveBackend(DWaveBackend):
    """Backend ``"dwave-mock"``: `DWaveBackend` on `mock_sampler` (K up to `MOCK_MAX_K`,
    coupled groups of n rows up to n K = `MOCK_MAX_GROUP`)."""

    name = "dwave-mock"
    default_top_k = MOCK_DEFAULT_TOP_K
    machine_params = ("topology",)
    params = CALL_PARAMS + machine_params

    def __init__(self, sampler: Any = None, *, topology: str = DEFAULT_TOPOLOGY,
                 **kwargs: Any) -> None:
        super().__init__(sampler if sampler is not None else self.machine(topology), **kwargs)

    @staticmethod
    def machine(topology: str):
        """The stand-in QPU of ``topology``."""
        return mock_sampler(topology)
