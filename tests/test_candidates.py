"""Candidate selection: temperature, then top-k, then top-p, then min-p, as a sorted prefix."""

import numpy as np
import pytest
import torch

from qsample import LogitsError
from qsample.candidates import select_candidates


def reference_candidates(row, temperature, top_k, top_p, min_p):
    """Plain-Python statement of the target's candidate set, for comparison."""
    x = np.asarray(row, dtype=np.float64) / temperature
    order = np.argsort(-x, kind="stable")[: min(top_k, len(x))]
    order = [i for i in order if np.isfinite(x[i])]
    p = np.exp(x[order] - x[order][0])
    p /= p.sum()
    keep, mass = [], 0.0
    for i, pi in zip(order, p, strict=True):
        if mass >= top_p:
            break
        keep.append(i)
        mass += pi
    p_keep = np.exp(x[keep] - x[keep][0])
    p_keep /= p_keep.sum()
    return [i for i, pi in zip(keep, p_keep, strict=True) if pi >= min_p * p_keep[0]]


@pytest.mark.parametrize("top_k, top_p, min_p", [(5, 1.0, 0.0), (50, 0.8, 0.0), (50, 1.0, 0.1),
                                                 (20, 0.9, 0.05), (100, 0.3, 0.0)])
def test_matches_reference_filters(top_k, top_p, min_p):
    logits = torch.randn(16, 100, generator=torch.Generator().manual_seed(0)) * 2
    block = select_candidates(logits, temperature=0.7, top_k=top_k, top_p=top_p, min_p=min_p)
    for b in range(16):
        expected = reference_candidates(logits[b].numpy(), 0.7, top_k, top_p, min_p)
        assert block.token_ids[b, : block.sizes[b]].tolist() == expected
        kept = block.logits[b, : block.sizes[b]]
        want = logits[b, expected].double().numpy() / 0.7
        assert np.allclose(kept - kept[0], want - want[0], atol=1e-5)
        assert (block.token_ids[b, block.sizes[b]:] == -1).all()
        assert np.isneginf(block.logits[b, block.sizes[b]:]).all()


def test_target_probs_are_renormalised_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -5.0]])
    block = select_candidates(logits, temperature=2.0, top_k=3)
    expected = torch.softmax(logits[0, :3] / 2.0, dim=0).numpy()
    assert np.allclose(block.target_probs()[0], expected)


def test_fewer_finite_logits_than_top_k_shrinks_k():
    logits = torch.full((2, 10), float("-inf"))
    logits[0, [3, 7]] = torch.tensor([1.0, 2.0])
    logits[1, :5] = 0.0
    block = select_candidates(logits, temperature=1.0, top_k=8)
    assert block.sizes.tolist() == [2, 5]
    assert block.token_ids[0, :2].tolist() == [7, 3]
    assert block.width == 5


def test_top_k_larger_than_vocab_takes_the_vocab():
    block = select_candidates(torch.randn(3, 6), temperature=1.0, top_k=1000)
    assert block.sizes.tolist() == [6, 6, 6]


def test_posinf_logits_take_all_the_mass_uniformly():
    logits = torch.tensor([[0.0, float("inf"), 3.0, float("inf")], [0.0, 1.0, 2.0, 3.0]])
    block = select_candidates(logits, temperature=1.0, top_k=4)
    assert block.sizes.tolist() == [2, 4]
    assert sorted(block.token_ids[0, :2].tolist()) == [1, 3]
    assert np.allclose(block.target_probs()[0, :2], [0.5, 0.5])


def test_nan_rows_are_named():
    logits = torch.randn(5, 7)
    logits[1, 2] = float("nan")
    logits[3, 0] = float("nan")
    with pytest.raises(LogitsError, match=r"NaN in rows \[1, 3\]"):
        select_candidates(logits, temperature=1.0, top_k=3)


def test_all_neg_inf_rows_are_named():
    logits = torch.randn(3, 7)
    logits[2] = float("-inf")
    with pytest.raises(LogitsError, match=r"rows \[2\].*all -inf"):
        select_candidates(logits, temperature=1.0, top_k=3)


@pytest.mark.parametrize("bad, message", [
    (torch.randn(7), "2-D.*unsqueeze"),
    (torch.randn(2, 3, 4), "2-D"),
    (torch.ones(2, 3, dtype=torch.long), "floating"),
    (torch.randn(2, 0), "empty vocabulary"),
    ([[0.0, 1.0]], "torch.Tensor"),
])
def test_malformed_tensors_are_rejected(bad, message):
    with pytest.raises(LogitsError, match=message):
        select_candidates(bad, temperature=1.0, top_k=3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_dtype_is_upcast_to_the_same_candidates(dtype):
    logits = (torch.arange(50, dtype=torch.float32) / 7).reshape(2, 25)
    reference = select_candidates(logits, temperature=1.0, top_k=5)
    block = select_candidates(logits.to(dtype), temperature=1.0, top_k=5)
    assert (block.token_ids == reference.token_ids).all()


def test_non_contiguous_input():
    base = torch.randn(40, 6)
    logits = base.t()  # [6, 40], non-contiguous
    assert not logits.is_contiguous()
    block = select_candidates(logits, temperature=1.0, top_k=4)
    expected = select_candidates(logits.contiguous(), temperature=1.0, top_k=4)
    assert (block.token_ids == expected.token_ids).all()


def test_tiny_temperature_keeps_the_order_instead_of_overflowing():
    logits = torch.tensor([[3.0, 2.9, 1.0]])
    block = select_candidates(logits, temperature=1e-40, top_k=3)
    assert block.sizes.tolist() == [1]
    assert block.token_ids[0, 0] == 0
