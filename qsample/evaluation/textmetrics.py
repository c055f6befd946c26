"""Text and fidelity metrics of generated samples.

Text (on token ids, so that they do not depend on a word tokenizer):

- distinct-n: distinct n-grams / n-grams over a set of continuations;
- self-BLEU: mean BLEU-4 (uniform weights, add-one smoothing for n >= 2) of each sample
  of a prompt against the other samples of that prompt; higher means less diverse;
- seq-rep-n: 1 - distinct n-grams / n-grams within one continuation (Welleck et al. 2019);
- duplicates: in a group of n continuations drawn together, those identical to an earlier
  sibling, n - (number of distinct sequences), from 0 to n - 1;
- accuracy: the prompt's answer appears as the first number (for numeric answers) or as a word
  (otherwise) of the continuation.

Fidelity: the randomised probability-integral transform of each chosen token under the arm's
target distribution p over its candidates sorted by probability, u = F(r - 1) + V p_r with
V ~ U(0, 1) and r the chosen rank, is uniform on (0, 1) for a faithful sampler; a KS test per
arm checks it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams over all n-grams of ``samples`` (nan when there are none)."""
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def seq_rep_n(tokens: Sequence[int], n: int = 4) -> float:
    """1 - distinct / total n-grams within one continuation (0: no repeated n-gram)."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def duplicates(samples: Sequence[Sequence[int]]) -> int:
    """Samples identical to an earlier one: len(samples) - distinct sequences (0 .. n - 1)."""
    return len(samples) - len({tuple(s) for s in samples})


def bleu(candidate: Sequence[int], references: Sequence[Sequence[int]], max_n: int = 4) -> float:
    """Sentence BLEU-4 with uniform weights; n-gram precisions for n >= 2 add one to numerator
    and denominator, so short sentences do not score zero for a missing 4-gram."""
    if not candidate or not references:
        return 0.0
    logs = []
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(candidate, n))
        best: Counter = Counter()
        for ref in references:
            for gram, c in Counter(ngrams(ref, n)).items():
                best[gram] = max(best[gram], c)
        matched = sum(min(c, best[g]) for g, c in counts.items())
        total = sum(counts.values())
        if n == 1 and matched == 0:
            return 0.0
        smooth = 0 if n == 1 else 1  # add-one for n >= 2 only (Lin & Och's smoothing 2)
        logs.append(math.log((matched + smooth) / (total + smooth)))
    closest = min((abs(len(r) - len(candidate)), len(r)) for r in references)[1]
    brevity = 1.0 if len(candidate) > closest else math.exp(1 - closest / max(len(candidate), 1))
    return brevity * math.exp(sum(logs) / max_n)


def self_bleu(samples: Sequence[Sequence[int]]) -> float:
    """Mean BLEU of each sample against the others (nan with fewer than two samples)."""
    if len(samples) < 2:
        return float("nan")
    return float(np.mean([bleu(s, [o for j, o in enumerate(samples) if j != i])
                          for i, s in enumerate(samples)]))


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def is_correct(text: str, answer: str) -> bool:
    """Numeric answers: the first number in ``text`` equals it; others: it appears as a word
    (case-insensitive)."""
    if _NUMBER.fullmatch(answer.strip()):
        found = _NUMBER.search(text)
        return found is not None and float(found.group()) == float(answer)
    return re.search(rf"\b{re.escape(answer.strip())}\b", text, re.IGNORECASE) is not None


def pit(probs_sorted: np.ndarray, rank: int, u: float) -> float:
    """Randomised PIT of choosing ``rank`` from probabilities sorted descending."""
    return float(probs_sorted[:rank].sum() + u * probs_sorted[rank])


def ks_uniform(values: Sequence[float]) -> tuple[float, float]:
    """(statistic, p-value) of the KS test of ``values`` against U(0, 1)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    result = scipy_stats.kstest(values, "uniform")
    return float(result.statistic), float(result.pvalue)
