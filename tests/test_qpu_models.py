"""Today's QPUs offline: the D-Wave stand-ins on Advantage2's Zephyr and Advantage's Pegasus
graphs, solver selection for the real `dwave` backend, the emulator's noise profiles, Origin's
current chips, and a working default K for every backend with a K limit (docs/sources.md)."""

import numpy as np
import pytest
import torch

from qsample import ConfigError, QuantumSampler, SamplerConfig
from qsample.backends.dwave import DEFAULT_TOPOLOGY, TOPOLOGIES, solver_filter
from qsample.backends.registry import make_backend
from qsample.candidates import select_candidates
from qsample.tools.stats import chi_square, counts_of

pytest.importorskip("dwave.system")
pytestmark = pytest.mark.filterwarnings("ignore:boltzmann mode on backend")

ALPHA = 1e-3
STAND_IN_DRAWS = 4000  # chi-square draws of the ideal stand-in on Zephyr
K = 8


def logits(batch: int, vocab: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * 1.5


# -- a working default K, and errors that name the backend the user chose ----------------------

@pytest.mark.parametrize("backend, k", [("batched-sa", 64), ("neal", 64), ("tree", 16),
                                        ("exact", 12), ("dwave-mock", 16),
                                        ("dwave-noisy", 16)])
def test_a_config_without_top_k_takes_the_backends_default(backend, k):
    assert SamplerConfig(backend=backend).top_k == k
    assert SamplerConfig(backend=backend, top_k=5).top_k == 5


@pytest.mark.parametrize("backend", ["tree", "exact", "dwave-mock"])
def test_the_default_k_runs_and_errors_name_the_chosen_backend(backend):
    sampler = QuantumSampler(SamplerConfig(mode="gumbel", backend=backend, seed=0))
    assert sampler.sample(logits(2)).shape == (2,)
    with pytest.raises(ConfigError, match=f"with backend '{backend}'") as error:
        QuantumSampler(SamplerConfig(mode="gumbel", backend=backend, top_k=64))
    assert error.value.field == "top_k"


def test_generate_dry_run_on_the_mock_names_the_topology(capsys):
    from qsample.cli import main

    assert main(["generate", "Hello", "--backend", "dwave-mock", "--dry-run",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "dwave-mock, top_k=16" in out and "zephyr (12, 4) topology" in out
    assert "solver mock-zephyr-12x4" in out


# -- D-Wave topologies ---------------------------------------------------------------------------

def mock(topology: str | None, tmp_path, backend: str = "dwave-mock"):
    params = {} if topology is None else {"topology": topology}
    made = make_backend(backend, params)
    made.packing.folder = tmp_path  # embeddings of this test only
    return made


@pytest.mark.parametrize("topology, qubits, degree", [("zephyr", 4800, 20), ("pegasus", 5640, 15)])
def test_stand_ins_have_the_graph_of_each_system(tmp_path, topology, qubits, degree):
    backend = mock(topology, tmp_path)
    graph = backend.sampler.to_networkx_graph()
    assert backend.topology_type == topology and len(graph) == qubits
    assert max(d for _, d in graph.degree) == degree
    assert backend.solver_id == f"mock-{topology}-{'x'.join(map(str, TOPOLOGIES[topology]))}"


def test_the_default_topology_is_advantage2s_zephyr(tmp_path):
    assert DEFAULT_TOPOLOGY == "zephyr" and mock(None, tmp_path).topology_type == "zephyr"
    sampler = QuantumSampler(SamplerConfig(backend="dwave-mock", top_k=K,
                                           backend_params={"topology": "pegasus"}))
    assert sampler.backend.topology_type == "pegasus"


@pytest.mark.parametrize("backend", ["dwave-mock", "dwave-noisy"])
def test_an_unknown_topology_is_refused_naming_the_field(backend):
    with pytest.raises(ConfigError) as error:
        QuantumSampler(SamplerConfig(backend=backend, top_k=K,
                                     backend_params={"topology": "chimera"}))
    assert error.value.field == "backend_params.topology"
    assert "'zephyr'" in str(error.value) and "'pegasus'" in str(error.value)


@pytest.mark.parametrize("topology", ["zephyr", "pegasus"])
def test_both_topologies_pack_rows_and_embedding_keeps_the_energies(tmp_path, topology):
    backend = mock(topology, tmp_path)
    sampler = QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=K, seed=0))
    block = select_candidates(logits(6), temperature=1.0, top_k=K, top_p=1.0, min_p=0.0)
    problems = sampler.mode.encode(block, np.arange(6, dtype=np.uint64), 1.5)
    (rows, chains), = backend.plan(problems)
    assert len(rows) == 6  # one call for the step
    _, bqm, embedding, target = backend.embed(problems, rows, chains, sampler.request)
    rng = np.random.default_rng(1)
    for _ in range(20):  # intact chains: embedded energy = logical energy
        logical = {v: int(rng.integers(2)) for v in bqm.variables}
        physical = {q: logical[v] for v, chain in embedding.items() for q in chain}
        assert target.binary.energy(physical) == pytest.approx(bqm.binary.energy(logical),
                                                               abs=1e-9)


@pytest.mark.parametrize("topology, k, measured", [("zephyr", 16, 73), ("pegasus", 64, 8)])
def test_the_dry_runs_rows_per_call_is_the_packing(tmp_path, topology, k, measured):
    """What the dry run reports is what one call packs: as many rows as disjoint K-cliques
    qsample's packing finds on the full graph (scripts/qpu_packing.py measured 73 rows of K 16 on
    Zephyr and 8 of K 64 on Pegasus; docs/noise.md has the table)."""
    backend = mock(topology, tmp_path)
    cost = backend.estimate(batch=4 * measured, top_k=k, num_reads=10, steps=1)
    assert cost["topology"].startswith(topology)
    assert cost["rows_per_call"] == len(backend.packing.cliques(k, 4 * measured)) == measured
    assert cost["calls_per_step"] == 4


def test_the_ideal_stand_in_on_zephyr_samples_the_target(tmp_path):
    """boltzmann on the ideal stand-in at Zephyr: 4,000 draws of one row at K = 8 pass the
    chi-square against softmax; a wrong target (T 1.5) fails it."""
    backend = mock("zephyr", tmp_path)
    sampler = QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=K, seed=3,
                                           temperature=1.0))
    row = logits(1)
    tokens = torch.cat([sampler.sample(row.repeat(500, 1)) for _ in range(STAND_IN_DRAWS // 500)])
    top = row[0].topk(K)
    index = {int(t): i for i, t in enumerate(top.indices)}
    counts = counts_of(np.array([index[int(t)] for t in tokens]), K)
    fit = chi_square(counts, torch.softmax(top.values.double(), 0).numpy())
    assert fit.p_value >= ALPHA, fit
    wrong = chi_square(counts, torch.softmax(top.values.double() / 1.5, 0).numpy())
    assert wrong.p_value < ALPHA


# -- the real dwave backend picks its solver -----------------------------------------------------

def test_a_topology_selects_the_solver_by_feature_filter(monkeypatch, tmp_path):
    from qsample.backends import dwave

    asked = []
    monkeypatch.setattr(dwave, "connect", lambda solver=None: (asked.append(solver),
                                                               mock("zephyr", tmp_path).sampler)[1])
    make_backend("dwave", {"solver": "zephyr"})
    make_backend("dwave", {"solver": "Advantage2_system1"})
    make_backend("dwave", {})
    assert asked == [{"topology__type": "zephyr"}, "Advantage2_system1", None]
    assert solver_filter("pegasus") == {"topology__type": "pegasus"}
    with pytest.raises(ConfigError) as error:
        solver_filter("")
    assert error.value.field == "backend_params.solver"


# -- noise profiles ------------------------------------------------------------------------------

def test_each_topology_gets_its_systems_noise_profile(tmp_path):
    from qsample.backends.dwave_noisy import NOISE_PARAMETER, PROFILES

    assert PROFILES["advantage2"].beta_error == pytest.approx(1 / 0.112 / 6 - 1)
    assert PROFILES["advantage"].beta_error == pytest.approx(-0.16)
    for topology, profile in (("zephyr", "advantage2"), ("pegasus", "advantage")):
        sampler = QuantumSampler(SamplerConfig(mode="boltzmann", backend="dwave-noisy", top_k=K,
                                               backend_params={"topology": topology}))
        assert sampler.request.settings["sample"][NOISE_PARAMETER] == PROFILES[profile]
    chosen = QuantumSampler(SamplerConfig(mode="boltzmann", backend="dwave-noisy", top_k=K,
                                          backend_params={"profile": "advantage",
                                                          "ice_h": 0.0}))
    noise = chosen.request.settings["sample"][NOISE_PARAMETER]
    assert noise.beta_error == pytest.approx(-0.16) and noise.ice_h == 0.0
    with pytest.raises(ConfigError) as error:
        QuantumSampler(SamplerConfig(mode="boltzmann", backend="dwave-noisy", top_k=K,
                                     backend_params={"profile": "2000q"}))
    assert error.value.field == "backend_params.profile"


# -- Origin's current chips ----------------------------------------------------------------------

pytest.importorskip("pyqpanda3")


def origin(params: dict):
    from qsample.backends.originq_mock import OriginQMockBackend

    backend = OriginQMockBackend()
    return backend, backend.chip_name(params)


def test_the_default_chip_is_the_newest_the_service_lists():
    backend, chip = origin({})
    assert chip == "WK_C180" and backend.qubit_budget({}) == 180
    assert backend.qubit_budget({"chip": "72"}) == 66  # the published snapshot


def test_a_chip_the_service_does_not_list_is_refused_naming_what_it_lists():
    with pytest.raises(ConfigError) as error:
        origin({"chip": "WK_C999"})
    assert error.value.field == "backend_params.chip"
    assert "WK_C180" in str(error.value) and "72" in str(error.value)


def test_without_an_available_preferred_chip_the_error_lists_the_services():
    from qsample.backends.originq import OriginQBackend
    from qsample.backends.originq_mock import StandInCloudService

    class Elsewhere(StandInCloudService):
        def backends(self):
            return {"WK_C180": False, "PQPUMESH8": True}

    backend = OriginQBackend(Elsewhere())
    with pytest.raises(ConfigError) as error:
        backend.chip_name({})
    assert "PQPUMESH8" in str(error.value) and "WK_C180 (unavailable)" in str(error.value)
    with pytest.raises(ConfigError, match="lists as available"):
        backend.chip_name({"chip": "WK_C180"})


def test_the_dry_run_on_the_stand_in_names_the_chip(capsys):
    from qsample.cli import main

    assert main(["generate", "Hello", "--backend", "originq-mock", "--dry-run",
                 "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "chip WK_C180: 180 qubits available" in out and "top_k=16" in out


def test_a_machine_key_a_prebuilt_backend_cannot_honour_is_refused(tmp_path):
    """A backend instance is built for one machine: a config asking it for another topology is
    refused naming the key, never silently run on the instance's machine."""
    backend = mock("pegasus", tmp_path)
    QuantumSampler(SamplerConfig(backend=backend, top_k=K, backend_params={"topology": "pegasus"}))
    with pytest.raises(ConfigError) as error:
        QuantumSampler(SamplerConfig(backend=backend, top_k=K,
                                     backend_params={"topology": "zephyr"}))
    assert error.value.field == "backend_params.topology" and "'pegasus'" in str(error.value)
