"""qsample: annealer-based token sampling for LLM inference.

Each next-token distribution p = softmax(l / T) over a candidate set becomes a one-hot QUBO
E(x) = -sum_i w_i x_i + A (sum_i x_i - 1)^2, solved by a dimod-compatible annealer; the one-hot
sample is the token.
"""

from .backends import Backend, available_backends, make_backend, register_backend
from .config import SamplerConfig
from .errors import BackendError, ConfigError, LogitsError, QSampleError
from .sampler import QuantumSampler, sample_target
from .telemetry import StepTelemetry, TelemetryLog

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "ConfigError",
    "LogitsError",
    "QSampleError",
    "QuantumSampler",
    "SamplerConfig",
    "StepTelemetry",
    "TelemetryLog",
    "available_backends",
    "make_backend",
    "register_backend",
    "sample_target",
]
