"""vLLM plugin: per-request annealer sampling in vLLM serving.

- `QSampleVLLMProcessor` (`processor`): the logits processor, loaded by vLLM from the
  ``vllm.logits_processors`` entry point for every model (a no-op for requests that do not
  opt in); under either model runner it builds the adapter of that runner's interface,
  `QSampleV1Processor` or `QSampleV2Processor`, both over one `RowSamplingCore`;
- `admission`: the operator's config, request parsing and the admission checks (HTTP 400),
  and `admission_middleware` for the OpenAI server (``--middleware
  qsample.plugins.vllm.admission_middleware``: the same 400 for streamed requests);
- `metrics`: Prometheus series under vLLM's ``/metrics``;
- `register`: the ``vllm.general_plugins`` entry point, run by vLLM in the API server before
  the engine starts: it sets up the metrics transport, logs the operator config, and makes a
  refused streamed request one log line instead of a traceback.

Requests opt in through ``SamplingParams(extra_args={...})`` or the server's ``vllm_xargs``:
``"qsample": 1`` (operator defaults) and/or ``qsample_<field>`` for the fields in
`admission.REQUEST_FIELDS`. Temperature / top-k / top-p / min-p default to the request's own
sampling parameters, so the annealer samples the distribution the request asked for. An
``n > 1`` request with ``qsample_coupling`` (and ``qsample_coupling_scope``) has its children
sampled jointly, never with another request's rows (`admission.GROUP_KEY`).
"""

from __future__ import annotations

import logging
import sys

from . import metrics
from .admission import (
    GROUP_KEY,
    OPT_IN_KEY,
    REQUEST_FIELDS,
    STREAM_KEY,
    OperatorConfig,
    QSampleRequestError,
    RequestPlan,
    admission_middleware,
    admit,
    operator_config,
    request_config,
    reset_operator_config,
)
from .processor import (
    PluginStats,
    QSampleV1Processor,
    QSampleV2Processor,
    QSampleVLLMProcessor,
    RowSamplingCore,
)

__all__ = [
    "GROUP_KEY",
    "OPT_IN_KEY",
    "REQUEST_FIELDS",
    "STREAM_KEY",
    "OperatorConfig",
    "PluginStats",
    "QSampleRequestError",
    "QSampleV1Processor",
    "QSampleV2Processor",
    "QSampleVLLMProcessor",
    "RequestPlan",
    "RowSamplingCore",
    "admission_middleware",
    "admit",
    "operator_config",
    "register",
    "request_config",
    "reset_operator_config",
]

logger = logging.getLogger("vllm.qsample")
#: The loggers of vLLM 0.32's OpenAI serving code that log a failed stream with its traceback.
STREAM_ERROR_LOGGERS = ("vllm.entrypoints.openai.completion.serving",
                        "vllm.entrypoints.openai.chat_completion.serving")


class OneLineRefusals(logging.Filter):
    """Turns vLLM's traceback for a streamed request that qsample refused (vLLM validates
    logits-processor arguments only once a stream has started, and logs the error with
    ``logger.exception``) into one line naming the argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while error is not None and not isinstance(error, QSampleRequestError):
            error = error.__cause__ or error.__context__
        if error is not None:
            record.msg, record.args = "qsample refused a streamed request: %s", (error,)
            record.exc_info, record.exc_text = None, None
        return True


def register() -> None:
    """vLLM general plugin (see the module docstring); idempotent."""
    if metrics.install() is None:
        return  # an engine or worker process, or already done in this process tree
    refusals = OneLineRefusals()
    for name in STREAM_ERROR_LOGGERS:
        logging.getLogger(name).addFilter(refusals)
    line = f"qsample: {operator_config().describe()}"  # a bad operator file fails start-up
    if logging.getLogger("vllm").hasHandlers():
        logger.info(line)
    else:  # vLLM configures its logging only after loading general plugins
        print(f"INFO {line}", file=sys.stderr, flush=True)
