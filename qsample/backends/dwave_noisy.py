"""`dwave-noisy`: the `dwave` path on a QPU emulator with the published imperfections of
D-Wave's annealers (profiles `PROFILES`: Advantage2, the default, on its Zephyr graph, and
Advantage on Pegasus).

Everything qsample does for a real QPU runs unchanged (`DWaveBackend`: clique packing, chains,
majority-vote unembedding, chain-break and QPU-time telemetry, retries, fallback); only the
sampler behind dwave-system's ``MockDWaveSampler`` differs from `dwave-mock`'s ideal one. Per
call, on the programmed (embedded) Ising problem (h, J):

1. integrated control errors (ICE): h_i + dh_i and J_ij + dJ_ij, dh ~ N(0, ice_h^2) on every
   programmed qubit and dJ ~ N(0, ice_j^2) on every programmed coupler (chains included), drawn
   afresh per call (D-Wave models ICE as such Gaussian perturbations);
2. temperature: the call's inverse temperature beta_c = beta_0 (1 + beta_error) e^(s_c z_c),
   beta_0 = `MOCK_BETA_QPU` (what the backend assumes), and each qubit its own scale
   g_i = e^(s_q z_i): h_i -> g_i h_i, J_ij -> sqrt(g_i g_j) J_ij (log-normal, medians kept);
3. sampling: exact Boltzmann samples exp(-beta_c E) of that perturbed embedded problem, by tree
   decomposition per packed component (as `dwave-mock`; single-spin-flip annealing at fixed beta
   freezes embedded chains: a chain moves only when all its qubits flip together), so chains
   are sampled, not assumed intact: a chain
   breaks when its perturbed, locally heated couplers let it;
4. readout: each qubit of each read flipped with probability ``readout_error``.

Chain breaks come from steps 1-4 together (most from readout on chains of 2-3 qubits); the
backend's ``chains_broken`` telemetry counts them. ``noise_scale`` multiplies every noise figure
(ice_h, ice_j, beta_error, beta_call_sd, beta_qubit_sd, readout_error): 0 is `dwave-mock` exactly,
1 the published figures (docs/noise.md gives each one's source), 2 twice them. Exact sampling
bounds K (`MOCK_MAX_K`) as for `dwave-mock`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import dimod
import numpy as np

from ..errors import ConfigError
from .base import SolveRequest, number_param
from .dwave import DEFAULT_TOPOLOGY
from .dwave_mock import MOCK_BETA_QPU, IdealQPUStandIn, MockDWaveBackend, mock_sampler

# Published figures (docs/sources.md has each source); the defaults of `NoiseModel`.
ICE_H_SD = 0.02  # sd of dh, programmed Ising units (D-Wave's ICE data, flux noise x 2)
ICE_J_SD = 0.015  # sd of dJ, programmed Ising units (D-Wave's ICE data)
# relative error of the median effective beta against the assumed 6: Advantage_system4.1's
# published average single-qubit temperature 0.198 (h units) is beta 5.05
BETA_ERROR = -0.16
# Advantage2_system1's published average single-qubit temperature 0.112 (h units) is beta 8.93
ADVANTAGE2_BETA_ERROR = 1.0 / 0.112 / MOCK_BETA_QPU - 1.0
BETA_CALL_SD = 0.05  # log-sd of the effective beta between calls (an estimate: "a few mK")
BETA_QUBIT_SD = 0.05  # log-sd of the effective beta between qubits (an estimate)
READOUT_ERROR = 0.001  # probability that a qubit is read wrong (published bound "<= 0.001")
NOISE_PARAMETER = "qsample_noise"  # the emulator's keyword: a call's `NoiseModel`
PROFILE_PARAMETER = "profile"  # ``backend_params.profile``: a name of `PROFILES`
NOISE_STREAM = 0x9E3779B9  # the noise draws' stream, apart from the exact sampler's seeds
MAX_READOUT_ERROR = 0.5


@dataclass(frozen=True)
class NoiseModel:
    """The emulator's knobs (``backend_params`` of `dwave-noisy`); see the module docstring.

    Attributes:
        ice_h, ice_j: sd of the Gaussian control errors on h and J (programmed Ising units).
        beta_error: relative error of the median effective inverse temperature against the
            nominal `MOCK_BETA_QPU` the backend assumes (> -1).
        beta_call_sd, beta_qubit_sd: log-sd of the effective beta between calls and qubits.
        readout_error: per-qubit probability of reading the wrong state.
        noise_scale: multiplies all of the above (0: ideal, 1: published, 2: twice).
    """

    ice_h: float = ICE_H_SD
    ice_j: float = ICE_J_SD
    beta_error: float = BETA_ERROR
    beta_call_sd: float = BETA_CALL_SD
    beta_qubit_sd: float = BETA_QUBIT_SD
    readout_error: float = READOUT_ERROR
    noise_scale: float = 1.0

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        """Every field: the noise figures, then ``noise_scale``."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def figures(cls) -> tuple[str, ...]:
        """The noise figures ``noise_scale`` multiplies (every knob but itself)."""
        return tuple(k for k in cls.knobs() if k != "noise_scale")

    @classmethod
    def from_params(cls, params: dict[str, Any], profile: str) -> NoiseModel:
        """The model of ``backend_params`` over the figures of ``profile`` (`PROFILES`;
        ``backend_params.profile`` overrides it; other keys ignored); a bad value raises
        `ConfigError` naming ``backend_params.<knob>``."""
        profile = params.get(PROFILE_PARAMETER, profile)
        if profile not in PROFILES:
            raise ConfigError("backend_params.profile", profile,
                              "one of " + ", ".join(map(repr, PROFILES)))
        values = dataclasses.asdict(PROFILES[profile])
        for name in cls.knobs():
            if name not in params:
                continue
            relative = name == "beta_error"  # a relative error: > -1; the others >= 0
            values[name] = number_param(name, params[name], -1.0 if relative else 0.0,
                                        above=relative)
        model = cls(**values)
        scaled = model.scaled()
        if scaled.readout_error > MAX_READOUT_ERROR or scaled.beta_error <= -1:
            raise ConfigError("backend_params.noise_scale", model.noise_scale,
                              f"a scale leaving readout_error <= {MAX_READOUT_ERROR} and "
                              "beta_error > -1")
        return model

    def scaled(self) -> NoiseModel:
        """The figures in effect: each multiplied by ``noise_scale`` (which becomes 1)."""
        return dataclasses.replace(self, noise_scale=1.0, **{
            k: getattr(self, k) * self.noise_scale for k in self.figures()})

    @property
    def ideal(self) -> bool:
        """Whether every figure in effect is 0 (the emulator is then `dwave-mock`)."""
        scaled = self.scaled()
        return not any(getattr(scaled, k) for k in self.figures())



#: Noise profiles by system (docs/sources.md): Advantage2 differs from Advantage only where
#: D-Wave publishes a figure for it (its temperature); ICE, the spreads and the readout error
#: have no Advantage2 figure and keep Advantage's.
PROFILES = {
    "advantage2": NoiseModel(beta_error=ADVANTAGE2_BETA_ERROR),
    "advantage": NoiseModel(),
}
#: The profile of each topology's system when ``backend_params.profile`` is not given.
TOPOLOGY_PROFILES = {"zephyr": "advantage2", "pegasus": "advantage"}

class NoisyQPUStandIn(IdealQPUStandIn):
    """`IdealQPUStandIn` with a call's `NoiseModel` applied (module docstring). With an ideal
    model (or none) its samples are `IdealQPUStandIn`'s, seed for seed."""

    @property
    def parameters(self) -> dict[str, list]:
        return {**super().parameters, NOISE_PARAMETER: []}

    def sample(self, bqm, num_reads: int = 1, seed: int | None = None,
               qsample_noise: NoiseModel | None = None, **kwargs: Any):
        noise = (qsample_noise or NoiseModel(noise_scale=0.0)).scaled()
        if noise.ideal:
            return super().sample(bqm, num_reads=num_reads, seed=seed, **kwargs)
        seed = self.call_seed(seed)
        rng = np.random.default_rng((seed, NOISE_STREAM))
        labels = list(bqm.variables)
        h, (row, col, j), offset = bqm.spin.to_numpy_vectors(labels)
        h = h + noise.ice_h * rng.standard_normal(h.size)
        j = j + noise.ice_j * rng.standard_normal(j.size)
        gain = np.exp(noise.beta_qubit_sd * rng.standard_normal(h.size))
        h, j = h * gain, j * np.sqrt(gain[row] * gain[col])
        beta = (self.beta * (1.0 + noise.beta_error)
                * math.exp(noise.beta_call_sd * rng.standard_normal()))
        realised = dimod.BinaryQuadraticModel.from_numpy_vectors(
            h, (row, col, j), offset, dimod.SPIN, variable_order=labels)
        spins = self.draw(realised, num_reads, seed, beta)
        spins[rng.random(spins.shape) < noise.readout_error] *= -1
        samples = spins if bqm.vartype is dimod.SPIN else (spins + 1) // 2
        return dimod.SampleSet.from_samples_bqm((samples, labels), bqm)


class NoisyDWaveBackend(MockDWaveBackend):
    """Backend ``"dwave-noisy"``: `DWaveBackend` on the emulator (`noisy_sampler`), its
    `NoiseModel` knobs taken from ``backend_params`` besides `DWaveBackend`'s own (module
    docstring)."""

    name = "dwave-noisy"
    params = MockDWaveBackend.params + NoiseModel.knobs() + (PROFILE_PARAMETER,)

    @staticmethod
    def machine(topology: str):
        """The emulated QPU of ``topology``."""
        return noisy_sampler(topology)

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """`DWaveBackend.settings` with the `NoiseModel` of ``backend_params`` among the
        emulator's call arguments (`NOISE_PARAMETER`)."""
        params = dict(request.params)
        noise = NoiseModel.from_params(params, TOPOLOGY_PROFILES.get(self.topology_type,
                                                                     "advantage"))
        rest = {k: v for k, v in params.items()
                if k not in NoiseModel.knobs() and k != PROFILE_PARAMETER}
        out = super().settings(dataclasses.replace(request, params=rest))
        out["sample"][NOISE_PARAMETER] = noise
        return out

    def fidelity_warning(self, request: SolveRequest, top_k: int) -> str | None:
        return ("backend 'dwave-noisy' emulates a D-Wave QPU's published imperfections (control "
                "errors, temperature spread, readout errors; docs/noise.md): its samples are "
                "deliberately not faithful; 'qsample calibrate' measures how far")


def noisy_sampler(topology: str = DEFAULT_TOPOLOGY, shape: tuple[int, ...] | None = None,
                  seed: int | None = None):
    """`mock_sampler` whose stand-in is `NoisyQPUStandIn` (draws seeded by ``seed``; None:
    fresh entropy), accepting the `NOISE_PARAMETER` keyword."""
    sampler = mock_sampler(topology, shape,
                           stand_in=NoisyQPUStandIn(beta=MOCK_BETA_QPU, seed=seed))
    sampler.parameters[NOISE_PARAMETER] = ["parameters"]
    return sampler

