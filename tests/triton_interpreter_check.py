"""Runs the Triton kernels in Triton's interpreter on CPU tensors and prints JSON results.

Triton fixes interpreter mode when it is first imported, so `test_annealer_triton.py` runs this
file in its own process with TRITON_INTERPRET=1.
"""

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from annealer_cases import (  # noqa: E402
    boltzmann,
    dense_energies,
    dense_problem,
    fit_states,
    onehot_energies,
)

from qsample import QuantumSampler, SamplerConfig, rng  # noqa: E402
from qsample.annealer import anneal_dense, anneal_onehot, beta_schedule  # noqa: E402
from qsample.annealer.step import sample_step  # noqa: E402
from qsample.modes import MODES  # noqa: E402
from qsample.telemetry import DeferredStep  # noqa: E402

torch.set_num_threads(1)
READS = 2048
results = {}

# one-hot model, exact Boltzmann over all 2^K states, every (acceptance, order)
k, penalty = 6, 1.5
w = np.log(np.random.default_rng(3).dirichlet(np.ones(k)))
target = boltzmann(onehot_energies(w, penalty), 1.0)
hotter = boltzmann(onehot_energies(w, penalty), 0.6)
for acceptance in ("metropolis", "gibbs"):
    for order in ("sequential", "random"):
        out = anneal_onehot(torch.tensor(w[None]), torch.tensor([penalty]),
                            betas=beta_schedule(25, "fixed", beta=1.0), num_reads=READS,
                            acceptance=acceptance, order=order, seed=5, engine="triton")
        states = out.states[0].numpy()
        results[f"onehot/{acceptance}/{order}"] = fit_states(states, target).p_value
        results[f"onehot/{acceptance}/{order}/control"] = fit_states(states, hotter).p_value

# dense model, exact Boltzmann
h, j = dense_problem(5, seed=5)
target = boltzmann(dense_energies(h, j), 1.0)
for acceptance in ("metropolis", "gibbs"):
    out = anneal_dense(torch.tensor(h[None]), torch.tensor(j[None]),
                       betas=beta_schedule(30, "fixed", beta=1.0), num_reads=READS,
                       acceptance=acceptance, order="random", seed=7, engine="triton")
    results[f"dense/{acceptance}/random"] = fit_states(out.states[0].numpy(), target).p_value

# energies agree with the states; keep_best; padding; determinism
draw = np.random.default_rng(0)
h2, j2 = np.stack([dense_problem(7, seed=s)[0] for s in (1, 2)]), np.stack(
    [dense_problem(7, seed=s)[1] for s in (1, 2)])
args = dict(betas=beta_schedule(10, "geometric", (0.1, 3.0)), num_reads=6, seed=3,
            engine="triton")
every = anneal_dense(torch.tensor(h2), torch.tensor(j2), torch.tensor([0.5, -1.0]),
                     sizes=torch.tensor([7, 4]), **args)
x = every.states.double().numpy()
expected = (np.array([[0.5], [-1.0]]) + np.einsum("brk,bk->br", x, h2 * (np.arange(7) < [[7], [4]]))
            + np.einsum("bri,bij,brj->br", x, j2, x))
results["dense energy error"] = float(np.abs(expected - every.energies.numpy()).max())
results["padding stays zero"] = bool((every.states[1, :, 4:] == 0).all())
best = anneal_dense(torch.tensor(h2), torch.tensor(j2), torch.tensor([0.5, -1.0]),
                    sizes=torch.tensor([7, 4]), keep_best=True, **args)
results["keep_best energy error"] = float(
    np.abs(best.energies[:, 0].numpy() - every.energies.numpy().min(axis=1)).max())
again = anneal_dense(torch.tensor(h2), torch.tensor(j2), torch.tensor([0.5, -1.0]),
                     sizes=torch.tensor([7, 4]), **args)
results["same seed same states"] = bool(torch.equal(every.states, again.states))
part = anneal_onehot(torch.tensor(w[None]), torch.tensor([penalty]), betas=np.ones(4),
                     num_reads=3, keys=np.array([11], np.uint64), engine="triton")
both = anneal_onehot(torch.tensor(np.stack([-w, w])), torch.tensor([penalty, penalty]),
                     betas=np.ones(4), num_reads=3, keys=np.array([10, 11], np.uint64),
                     engine="triton")
results["batch composition independent"] = bool(torch.equal(part.states[0], both.states[1]))
gumbel = draw.gumbel(size=(3, 12))
gumbel -= gumbel.max(axis=1, keepdims=True)
ground = anneal_onehot(torch.tensor(gumbel), torch.ones(3), num_reads=8, keep_best=True,
                       betas=beta_schedule(40, "geometric", (0.1, 10.0)), seed=1,
                       engine="triton")
results["gumbel argmax found"] = bool(
    (ground.states[:, 0].argmax(dim=1).numpy() == gumbel.argmax(axis=1)).all())
# the fused step's Triton kernel against the numba one (chi-square tested through the sampler):
# the same rows, keys and draws; anneal uniforms at 24 bits instead of 32 and float32 weights
logits = torch.randn(16, 40, generator=torch.Generator().manual_seed(2)) * 2
logits[0, :] = float("-inf")
logits[0, 5] = 1.0  # one finite candidate
logits[1, [3, 7]] = float("inf")  # mass on the +inf tokens
logits[2, 6:] = float("-inf")  # fewer finite logits than k
logits[3, 4] = float("nan")
logits[4, :] = float("-inf")  # nothing finite
values, ids = torch.topk(logits, 8, dim=1)
keys = rng.row_keys(9, 0, 16)
for mode, betas, acceptance, extra in (
        ("gumbel", beta_schedule(10, "geometric", (0.1, 10.0)), "metropolis", {}),
        ("boltzmann", beta_schedule(8, "fixed", beta=1.0), "gibbs", {"top_p": 0.9, "min_p": 0.05})):
    args = dict(temperature=0.8, top_p=1.0, min_p=0.0, mode=MODES[mode].kernel, penalty=1.0,
                betas=betas,
                num_reads=4, acceptance=acceptance, order="sequential") | extra
    cpu = sample_step(values.numpy().copy(), ids.numpy().copy(), keys, **args)
    gpu = sample_step(values.contiguous(), ids.contiguous(),
                      torch.from_numpy(keys.view(np.int64)), **args)
    for name in ("status", "size"):
        results[f"step/{mode}/{name} equal"] = bool(
            (getattr(cpu, name) == getattr(gpu, name).numpy()).all())
    sampled = cpu.status <= 1
    results[f"step/{mode}/token agreement"] = float(
        (cpu.token[sampled] == gpu.token.numpy()[sampled]).mean())
    results[f"step/{mode}/substitutes equal"] = bool(
        (cpu.token[~sampled] == gpu.token.numpy()[~sampled]).all())
    results[f"step/{mode}/probability error"] = float(
        np.abs(cpu.target_prob[sampled] - gpu.target_prob.numpy()[sampled]).max())

# QuantumSampler's device-resident path (CUDA's), run on CPU tensors in the interpreter
# (`runs_resident`), against the staged path (the numpy specification)
config = SamplerConfig(mode="boltzmann", top_k=8, seed=5, num_sweeps=8)
resident = QuantumSampler(config)
staged = QuantumSampler(config, fused=False)
clean = torch.cat([logits[:3], logits[5:]])
results["resident/token agreement"] = float(
    (resident.sample(clean) == staged.sample(clean)).float().mean())
results["resident/deferred"] = isinstance(resident.last_step_nowait, DeferredStep)
bad = resident.sample(logits)  # rows 3 (NaN) and 4 (all -inf): the one bad-logits policy
step = resident.last_step()
results["resident/bad rows as the staged path"] = bool(
    torch.equal(bad[[3, 4]], staged.sample(logits)[[3, 4]]))
results["resident/bad rows counted"] = [int(r) for r in np.flatnonzero(step.fallback_kind)]
results["resident/bad rows fallback"] = sorted({str(f) for f in step.fallback[[3, 4]]})
results["resident/bad rows kind"] = sorted({int(k) for k in step.fallback_kind[[3, 4]]})
results["resident/steps"] = len(resident.telemetry.steps())
print(json.dumps(results))
