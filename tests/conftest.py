import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def shaped_logits(shape: str, k: int) -> np.ndarray:
    """Test distributions over K candidates, sorted descending.

    flat: N(0, 0.5^2) logits (probabilities within a factor of about 5 of each other);
    peaked: Zipf with exponent 2, l_i = -2 log(i + 1) (p_max = 0.61 at K = 64).
    """
    if shape == "flat":
        values = np.random.default_rng(k).normal(0.0, 0.5, k)
        return np.sort(values)[::-1].copy()
    if shape == "peaked":
        return -2.0 * np.log1p(np.arange(k))
    raise ValueError(shape)


def softmax(values: np.ndarray) -> np.ndarray:
    weights = np.exp(values - values.max())
    return weights / weights.sum()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
