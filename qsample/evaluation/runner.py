"""Runs an A/B comparison: every arm on the same prompts and seeds, resumable.

Each (arm, prompt, sample, member) becomes one JSON line of ``samples.jsonl`` in the output
folder, the arms interleaved per (prompt, sample); a rerun with the same folder skips the groups
already there. Sample s of prompt p uses the seed hash(seed, p, s) in every arm, so the arms are
paired (an arm with a ``seed`` of its own is an independent replicate: `sample_seed`). An arm
with ``n > 1`` draws sample s as one group of n members (``member`` 0 .. n-1) in
one engine call; for n = 1 the group is the sample itself (member 0). The engine generates
(`engine.Engine`); the runner scores each generation (`score_steps`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import rng
from ..candidates import CandidateBlock, select_candidates
from ..tools.fidelity import candidate_ranks
from ..tools.stats import counts_of, total_variation, tv_noise_floor
from .config import ABConfig, Arm
from .engine import Engine, Generation, Resampler
from .prompts import Prompt, load_prompts
from .textmetrics import pit


class KeptStep(NamedTuple):
    """One kept step re-sampled by `tv_estimate`: TV and its noise floor, the candidates' counts
    [K] (tokens outside them dropped) and the target [K]."""

    tv: float
    floor: float
    counts: np.ndarray
    target: np.ndarray


def sample_seed(seed: int, prompt_index: int, sample_index: int, arm: Arm | None = None) -> int:
    """The seed of (prompt, sample), shared by every arm; an arm with a ``seed`` of its own
    draws with hash(seed, its seed, prompt, sample) instead: an independent replicate."""
    if arm is not None and arm.config.seed is not None:
        seed = int(rng.combine(seed, arm.config.seed))
    return int(rng.combine(seed, prompt_index, sample_index) >> np.uint64(33))  # top 31 bits


def arm_target(logits: torch.Tensor, arm: Arm) -> CandidateBlock:
    """The arm's candidates of each logits row [N, V], sorted by their target probability
    softmax(l / T_target) (``target_probs``), at the arm's top-k / top-p / min-p."""
    cfg = arm.config
    return select_candidates(logits, temperature=arm.target_temperature, top_k=cfg.top_k,
                             top_p=cfg.top_p, min_p=cfg.min_p)


def score_steps(raw_logits: torch.Tensor, chosen: torch.Tensor, arm: Arm, seed: int,
                keep_steps: int = 0, chosen_logprob: list[float] | None = None
                ) -> dict[str, Any]:
    """Per-step fidelity data of one continuation from the model's raw logits [T, V].

    rank: position of the chosen token among the arm's target candidates (sorted by
    probability; -1 outside them); target_prob: its target probability; pit: the randomised
    PIT (`textmetrics.pit`); logprob: its log-probability under the model at T = 1 (for
    likelihood and perplexity; ``chosen_logprob`` overrides it when the engine only has the
    top-k logits, e.g. vLLM's logprobs). The first ``keep_steps`` steps also keep the top-k
    logits, so that the step can be re-sampled later for an exact total-variation estimate.
    """
    logits = raw_logits.float()
    block = arm_target(logits, arm)
    probs = block.target_probs()
    ids = chosen.cpu().numpy()
    ranks = candidate_ranks(block.token_ids, ids)
    logprob = torch.log_softmax(logits, dim=1).gather(1, chosen[:, None].to(logits.device))
    u = rng.uniform(rng.combine(seed, np.arange(len(ids), dtype=np.uint64)), rng.STREAM_PIT,
                    1)[:, 0]
    target = [float(probs[t, r]) if r >= 0 else 0.0 for t, r in enumerate(ranks)]
    pits = [pit(probs[t], r, float(u[t])) if r >= 0 else float("nan")
            for t, r in enumerate(ranks)]
    kept = []
    k = min(arm.config.top_k, logits.shape[1])
    for t in range(min(keep_steps, len(ids))):
        values, index = torch.topk(logits[t], k)
        kept.append({"vocab": int(logits.shape[1]), "ids": index.tolist(),
                     "values": [round(v, 6) for v in values.tolist()]})
    return {"rank": ranks.tolist(), "target_prob": target, "pit": pits,
            "logprob": chosen_logprob if chosen_logprob is not None
            else logprob[:, 0].cpu().tolist(), "tv_logits": kept}


def sample_record(generation: Generation, arm: Arm, seed: int, keep_steps: int = 0
                  ) -> dict[str, Any]:
    """The record of one generation: its text, tokens and time, the fidelity data of its steps
    (`score_steps`) and the engine's own fields."""
    chosen = torch.as_tensor(generation.token_ids, dtype=torch.long)
    return {"text": generation.text, "token_ids": list(generation.token_ids),
            "seconds": generation.seconds,
            **score_steps(generation.logits, chosen, arm, seed, keep_steps, generation.logprob),
            **generation.record}


def run_ab(config: ABConfig, engine: Engine, out: str | Path, *, progress: bool = True,
           log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Generate every missing group into ``out/samples.jsonl``; return all records."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.jsonl"
    prompts = load_prompts(config.prompts)
    # a later line replaces an earlier one with the same key, so a group that an interrupted
    # run left incomplete is generated again in full and its new lines win on the next read
    latest = {(r["arm"], r["prompt_index"], r["sample"], r.get("member", 0)): r
              for r in _read(path)}
    size = {arm.name: arm.n for arm in config.arms}
    members = Counter(key[:3] for key in latest)
    done = {group for group, count in members.items() if count >= size.get(group[0], 1)}
    records = [r for key, r in latest.items() if key[:3] in done]
    # arms interleaved per (prompt, sample): machine-speed drift during the run affects every
    # arm alike, so the arms' tokens/s are comparable
    todo = [(arm, p, s) for p in range(len(prompts)) for s in range(config.samples)
            for arm in config.arms if (arm.name, p, s) not in done]
    pending = sum(arm.n for arm, _, _ in todo)
    if records:
        log(f"qsample ab: resuming, {len(records)} samples done, {pending} to go")
    bar = _progress(pending, progress)
    with open(path, "a", encoding="utf-8") as sink:
        for arm, p, s in todo:
            prompt: Prompt = prompts[p]
            seed = sample_seed(config.seed, p, s, arm)
            generations = engine.generate(prompt.text, arm, seed, config.max_new_tokens)
            if len(generations) != arm.n:
                raise RuntimeError(f"{type(engine).__name__}.generate gave {len(generations)} "
                                   f"continuations for arm {arm.name!r}, which has n = {arm.n}")
            lines = []
            for member, generation in enumerate(generations):
                keep = config.tv_steps if (p < config.tv_prompts and s == member == 0) else 0
                # sibling m's PIT draws use seed + m, as vLLM seeds the children of an n > 1
                # request; member 0 keeps the group's seed, so n = 1 scores as it always did
                record = sample_record(generation, arm, seed + member, keep)
                record.update({"arm": arm.name, "prompt_index": p, "sample": s,
                               "member": member, "seed": seed, "prompt": prompt.text,
                               "answer": prompt.answer, "kind": prompt.kind})
                lines.append(json.dumps(record, allow_nan=True) + "\n")
                records.append(record)
            sink.write("".join(lines))  # one write per group
            sink.flush()
            bar.update(arm.n)
    bar.close()
    return records


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by an interrupted run: regenerated
            continue
    return rows


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=not enabled or total == 0, desc="qsample ab",
                    unit="sample")
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, _n: int) -> None: ...

            def close(self) -> None: ...

        return _Null()


def tv_estimate(record: dict[str, Any], arm: Arm, draws: int,
                resampler: Callable[[Arm], Resampler]) -> list[KeptStep]:
    """The arm at each of the record's kept steps: re-sample the step ``draws`` times with
    ``resampler(arm)`` (the engine's own mechanism) and compare with its target (`arm_target`):
    TV (tokens outside the candidates count in full), the noise floor a faithful sampler would
    show (`tools.stats.tv_noise_floor`), and the counts for a temperature fit."""
    sample = resampler(arm)
    out = []
    for step in record.get("tv_logits") or []:
        row = torch.full((step["vocab"],), -math.inf)
        row[torch.tensor(step["ids"])] = torch.tensor(step["values"])
        block = arm_target(row[None], arm)
        target = block.target_probs()[0]
        tokens = sample(row[None].expand(draws, -1)).cpu().numpy()
        ranks = candidate_ranks(block.token_ids[0], tokens)
        k = len(target)
        counts = counts_of(np.where(ranks < 0, k, ranks), k + 1)  # bin k: outside the candidates
        out.append(KeptStep(total_variation(counts, np.append(target, 0.0)),
                            tv_noise_floor(target, draws), counts[:k], np.asarray(target)))
    return out
