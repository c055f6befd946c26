"""Request admission: the operator's config, a request's qsample settings, and the checks that
turn every configuration mistake into an HTTP 400 before the request runs.

A request opts in with ``"qsample": 1`` and/or ``qsample_<field>`` keys in
``SamplingParams.extra_args`` (the server's ``vllm_xargs``). `admit` is what
``validate_params`` runs in the API server: it parses the keys (`request_config`), builds the
sampler the request would use once per distinct configuration (so the backend's own limits,
modes, parameters and credentials are checked, `Admission`), caps the annealing cost per step,
and fixes everything random that decides the request's tokens (`check_request`).

Seeds. Every rank of a tensor-parallel engine, and every data-parallel replica, reads the
request as the API server sent it, so what the engine needs at random is drawn here, once: a
request that brings no seed gets a fresh stream seed under `STREAM_KEY` (``n = 1``) or as its
vLLM ``seed`` (``n > 1``, so that vLLM gives each child its own), never a draw in the engine.

Joint sampling (``qsample_coupling``): vLLM splits an ``n > 1`` request into n child requests
after ``validate_params`` and gives the engine no parent link, but copies ``extra_args`` to
every child. `admit` therefore stamps a coupled ``n > 1`` request with a fresh random group id
and the seed of its joint sample (the request's stream seed, so a seeded request reproduces
whatever order its children arrive in) under `GROUP_KEY`, in a new ``extra_args`` dict of
that request's own (vLLM may share one dict among the prompts of a request, or a caller among
its calls), and the engine couples only rows
that carry the same id (`request_group`): one request's children, never another request's
rows. The keys of `SERVER_KEYS` are the plugin's own: a value a request brings is replaced or
dropped by `admit` and refused by the middleware, so no request can join another's group.

Streaming requests are validated by vLLM only once the response has started (HTTP 200, then
an error event); `admission_middleware`, passed to the server as
``--middleware qsample.plugins.vllm.admission_middleware``, runs the same checks on the raw JSON
body first, so streamed and non-streamed requests get the same HTTP 400. It also refuses JSON
booleans, which vLLM's request model would turn into 1 and 0 before any plugin sees them.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, NamedTuple

from starlette.responses import JSONResponse

from qsample import ConfigError, QuantumSampler, SamplerConfig
from qsample import rng as qrng

from .metrics import count_admitted, count_refusal

logger = logging.getLogger("vllm.qsample")

#: Per-request keys (``qsample_<field>``) and the SamplerConfig field each sets.
REQUEST_FIELDS = ("mode", "backend", "top_k", "top_p", "min_p", "temperature", "seed",
                  "num_reads", "num_sweeps", "penalty", "coupling", "coupling_scope")
OPT_IN_KEY = "qsample"
#: The coupling group `admit` stamps on a coupled ``n > 1`` request, ``[group id, joint seed]``
#: (see the module docstring).
GROUP_KEY = "qsample_group"
#: The stream seed `admit` stamps on a request that brings no seed (see the module docstring).
STREAM_KEY = "qsample_stream"
#: Keys only the server sets: a client's value is refused by the middleware and dropped by
#: `admit`.
SERVER_KEYS = (GROUP_KEY, STREAM_KEY)
#: The group of a row sampled alone (`QuantumSampler.sample`'s ``groups``).
UNCOUPLED = -1
#: vLLM seeds are signed 64-bit and children of an ``n > 1`` request add their index.
SEED_MODULUS = 2**62
SEED_LIMIT = 2**64  # qsample's counter-based keys are uint64
#: Annealing cost caps per step (reads x sweeps x top_k, `QuantumSampler.cost`) by backend,
#: measured so that one opted-in request at the cap slows a plain neighbour by at most 1.5x on
#: a 2-core CPU server with the default model (docs/benchmarks.md#neighbour); "*": any other.
DEFAULT_MAX_COST = {"batched-sa": 1_000_000, "neal": 500_000, "*": 250_000}
DEFAULT_FIELD_CAPS = {"top_k": 256, "num_reads": 32, "num_sweeps": 2000}
#: Distinct configurations whose samplers are kept (admission and engine alike).
SAMPLER_CACHE_SIZE = 64
#: Paths whose JSON bodies `admission_middleware` checks.
ADMITTED_PATHS = ("/v1/completions", "/v1/chat/completions")


class QSampleRequestError(ValueError):
    """A request's qsample settings, refused at admission (vLLM answers HTTP 400).

    Attributes:
        key: the request argument at fault (``qsample_top_k``, ...).
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator allows (JSON file named by ``QSAMPLE_VLLM_CONFIG``).

    Example file::

        {"defaults": {"mode": "gumbel", "backend": "batched-sa", "top_k": 64},
         "allowed_backends": ["batched-sa", "neal"],
         "max": {"top_k": 256, "num_reads": 32, "num_sweeps": 2000},
         "max_cost": {"batched-sa": 1000000, "neal": 500000, "*": 250000},
         "fallback": "exact"}

    ``backend_modules`` (optional) names modules imported when the file is read, in the API
    server and in every engine worker alike, so that the backends they register
    (`qsample.backends.register_backend`) can be allowed: a backend of one's own in serving.
    ``defaults`` are SamplerConfig fields applied under each request's keys (``backend``
    defaults to the first allowed backend); ``allowed_backends`` lists the backends requests
    may choose; ``max`` caps single fields; ``max_cost`` caps a request's annealing work per
    step, num_reads x num_sweeps x top_k, per backend (``"*"``: every backend not named), so
    that one request cannot slow its neighbours without bound; ``fallback`` is what a step
    failure does: ``"exact"`` samples the rows classically from the same target with the
    request's own keys (reproducible), ``"error"`` leaves them to vLLM's own sampler. Either
    way the failure is counted and logged.
    """

    defaults: dict[str, Any] = field(default_factory=lambda: {"backend": "batched-sa"})
    allowed_backends: tuple[str, ...] = ("batched-sa", "neal")
    max: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_FIELD_CAPS))
    max_cost: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_COST))
    fallback: str = "exact"
    backend_modules: tuple[str, ...] = ()
    source: str = "built-in defaults"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> OperatorConfig:
        """Validate an operator file's contents; errors name ``source: key``."""
        known = ("defaults", "allowed_backends", "max", "max_cost", "fallback",
                 "backend_modules")
        for key in data:
            if key not in known:
                raise ConfigError(f"{source}: {key}", data[key], "one of " + ", ".join(known))
        modules = tuple(data.get("backend_modules", ()))
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(f"{source}: backend_modules", name,
                                  f"an importable module ({exc})") from None
        allowed = tuple(data.get("allowed_backends", cls.allowed_backends))
        defaults = dict(data.get("defaults", {"backend": allowed[0] if allowed else None}))
        if allowed:  # without a default backend, requests get the first allowed one
            defaults.setdefault("backend", allowed[0])
        caps = {**DEFAULT_FIELD_CAPS, **data.get("max", {})}
        for name in caps:
            if name not in DEFAULT_FIELD_CAPS:
                raise ConfigError(f"{source}: max.{name}", caps[name],
                                  "a cap on one of " + ", ".join(DEFAULT_FIELD_CAPS))
        costs = {**DEFAULT_MAX_COST, **data.get("max_cost", {})}
        for name, cap in costs.items():
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                raise ConfigError(f"{source}: max_cost.{name}", cap, "an integer >= 1")
        config = cls(defaults=defaults, allowed_backends=allowed, max=caps, max_cost=costs,
                     fallback=data.get("fallback", "exact"), backend_modules=modules,
                     source=source)
        try:
            SamplerConfig.from_dict({**config.defaults, "fallback": config.fallback})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc.field}", exc.value, exc.allowed) from None
        return config

    @classmethod
    def from_env(cls) -> OperatorConfig:
        path = os.environ.get("QSAMPLE_VLLM_CONFIG")
        if not path:
            return cls()
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle), path)

    def cost_cap(self, backend: str) -> int:
        return self.max_cost.get(backend, self.max_cost["*"])

    def describe(self) -> str:
        """One log line."""
        return (f"operator config from {self.source}: backends {', '.join(self.allowed_backends)}"
                f"; defaults {self.defaults}; caps {self.max}; cost caps per step {self.max_cost}"
                f"; fallback {self.fallback}")


_OPERATOR: OperatorConfig | None = None


def operator_config() -> OperatorConfig:
    """The process's operator config, read once."""
    global _OPERATOR
    if _OPERATOR is None:
        _OPERATOR = OperatorConfig.from_env()
    return _OPERATOR


def reset_operator_config() -> None:
    """Read ``QSAMPLE_VLLM_CONFIG`` again at the next use (tests, reloads)."""
    global _OPERATOR
    _OPERATOR = None
    ADMISSION.clear()


class RequestPlan(NamedTuple):
    """An opted-in request: the sampler config (seed 0: rows are keyed per request), the seed
    of the request's stream (a row's key is hash(seed, output position)), and whether the
    request brought that seed (``qsample_seed`` or ``seed``) rather than the server."""

    config: SamplerConfig
    seed: int
    seeded: bool = True


def request_config(params: Any) -> RequestPlan | None:
    """Parse a request's qsample keys; None when it does not opt in.

    The stream seed is ``qsample_seed``, or the request's own vLLM ``seed``, or the one `admit`
    stamped under `STREAM_KEY` (fresh entropy drawn once, in the API server); with both
    ``qsample_seed`` and ``seed``, hash(qsample_seed, seed), so the children of an ``n > 1``
    request (vLLM gives child i the seed ``seed + i``) get distinct, reproducible streams.

    Raises:
        QSampleRequestError: a bad, unknown or disallowed value, naming the key.
    """
    extra = getattr(params, "extra_args", None) or {}
    keys = [k for k in extra
            if (k == OPT_IN_KEY or k.startswith(OPT_IN_KEY + "_")) and k not in SERVER_KEYS]
    if not keys or (keys == [OPT_IN_KEY] and not _truthy(extra[OPT_IN_KEY])):
        return None
    operator = operator_config()
    values: dict[str, Any] = dict(operator.defaults)
    values.update(_from_sampling_params(params))
    for key in keys:
        if key == OPT_IN_KEY:
            continue
        name = key[len(OPT_IN_KEY) + 1:]
        if name not in REQUEST_FIELDS:
            raise QSampleRequestError(key, f"unknown request argument {key!r}: allowed are "
                                      + ", ".join(f"qsample_{f}" for f in REQUEST_FIELDS))
        values[name] = extra[key]
    try:
        config = SamplerConfig.from_dict({**values, "fallback": operator.fallback})
    except ConfigError as exc:
        raise _refusal(exc) from None
    if config.backend_name not in operator.allowed_backends:
        raise QSampleRequestError(
            "qsample_backend", f"qsample_backend={config.backend_name!r} is not allowed on this "
            f"server: expected one of {', '.join(operator.allowed_backends)}")
    for name, cap in operator.max.items():
        value = getattr(config, name, None)
        if value is not None and value > cap:
            raise QSampleRequestError(f"qsample_{name}",
                                      f"qsample_{name}={value} exceeds this server's cap of {cap}")
    if config.seed is not None and config.seed >= SEED_LIMIT:
        raise QSampleRequestError("qsample_seed", f"qsample_seed={config.seed} is not allowed: "
                                  f"expected an integer in [0, 2^64)")
    vllm_seed = getattr(params, "seed", None)
    if vllm_seed is not None:
        vllm_seed = int(vllm_seed) % SEED_LIMIT
    if config.seed is None:
        seed = vllm_seed if vllm_seed is not None else extra.get(STREAM_KEY)
        if seed is None:  # not admitted by `admit` (a processor used outside vLLM): this
            seed = qrng.fresh_seed()  # process's own draw, used only where it samples
    else:
        seed = config.seed if vllm_seed is None else int(qrng.combine(config.seed, vllm_seed))
    return RequestPlan(config.replace(seed=0), int(seed),
                       config.seed is not None or vllm_seed is not None)


class JointGroup(NamedTuple):
    """The coupling group of a request's children: its id (unique per request) and the seed of
    its joint sample."""

    id: int
    seed: int


#: The group of a request coupled to none.
NO_GROUP = JointGroup(UNCOUPLED, 0)


def request_group(params: Any, config: SamplerConfig) -> JointGroup:
    """The coupling group `admit` stamped on a coupled request (each child inherits it), or
    `NO_GROUP`."""
    if not config.coupling:
        return NO_GROUP
    group = (params.extra_args or {}).get(GROUP_KEY)
    return NO_GROUP if group is None else JointGroup(int(group[0]), int(group[1]))


def _refusal(exc: ConfigError) -> QSampleRequestError:
    return QSampleRequestError(f"qsample_{exc.field}", f"qsample_{exc.field}={exc.value!r} is "
                               f"not allowed: expected {exc.allowed}")


def _from_sampling_params(params: Any) -> dict[str, Any]:
    """The request's own temperature / top-k / top-p / min-p as qsample settings."""
    out: dict[str, Any] = {}
    temperature = getattr(params, "temperature", None)
    if temperature is not None:
        out["temperature"] = max(float(temperature), 0.0)
    top_k = getattr(params, "top_k", None)
    if top_k is not None and top_k > 0:
        out["top_k"] = int(top_k)
    top_p = getattr(params, "top_p", None)
    if top_p is not None and 0 < top_p < 1:
        out["top_p"] = float(top_p)
    min_p = getattr(params, "min_p", None)
    if min_p:
        out["min_p"] = float(min_p)
    return out


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "no", "off", "none")


class SamplerCache:
    """One `QuantumSampler` per distinct config, built once; a config whose build raised
    `ConfigError` raises the same error again without another build (no connection attempt
    per step for a backend that cannot start)."""

    def __init__(self, size: int = SAMPLER_CACHE_SIZE) -> None:
        self.size = size
        self._built: OrderedDict[SamplerConfig, QuantumSampler | ConfigError] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # samplers built (tests count them)

    def get(self, config: SamplerConfig) -> QuantumSampler:
        with self._lock:
            entry = self._built.get(config)
            if entry is None:
                self.builds += 1
                try:
                    entry = QuantumSampler(config, max_telemetry_steps=1)
                except ConfigError as exc:
                    entry = exc
                self._built[config] = entry
                if len(self._built) > self.size:
                    self._built.popitem(last=False)
            self._built.move_to_end(config)
        if isinstance(entry, ConfigError):
            raise entry
        return entry

    def clear(self) -> None:
        with self._lock:
            self._built.clear()


ADMISSION = SamplerCache()


def admit(params: Any) -> RequestPlan | None:
    """`check_request`, counted in the ``qsample_requests_*`` series: what vLLM's
    ``validate_params`` runs for every request, in the API server."""
    try:
        plan = check_request(params)
    except QSampleRequestError as exc:
        count_refusal(exc)
        raise
    if plan is not None:
        count_admitted()
    return plan


def check_request(params: Any) -> RequestPlan | None:
    """Everything a request is checked against before it runs (see the module docstring).

    Mutates ``params``, so that everything random that decides a token is fixed here, once,
    and every engine rank (and data-parallel replica) reads the same values:

    - a request with neither ``qsample_seed`` nor a vLLM seed gets a fresh stream seed: an
      ``n = 1`` request under `STREAM_KEY`, an ``n > 1`` request as its vLLM ``seed`` (below
      2^62), so that vLLM gives its children distinct seeds;
    - an ``n > 1`` request with ``qsample_seed`` and no vLLM seed gets ``seed = qsample_seed
      mod 2^62``, for the same reason;
    - a coupled ``n > 1`` request gets a fresh group id and its joint seed under `GROUP_KEY`;
    - a value under a `SERVER_KEYS` key that the request brought is dropped.

    Keys are written to a new ``extra_args`` dict of the request's own (see the module
    docstring).

    Raises:
        QSampleRequestError: naming the key (vLLM answers HTTP 400 with the message).
    """
    plan = request_config(params)
    if plan is None:
        return None
    config = plan.config
    try:
        sampler = ADMISSION.get(config)
    except ConfigError as exc:
        raise _refusal(exc) from None
    cap = operator_config().cost_cap(config.backend_name)
    n = getattr(params, "n", 1) or 1
    group = n if config.coupling and n > 1 else 1  # a coupled row anneals n x the reads
    if sampler.cost * group > cap:
        request = sampler.request
        siblings = f" x {group} coupled children" if group > 1 else ""
        raise QSampleRequestError(
            "qsample_num_sweeps",
            f"this request's annealing cost per step, num_reads {request.num_reads} x num_sweeps "
            f"{request.num_sweeps} x top_k {config.top_k}{siblings} = {sampler.cost * group}, "
            f"exceeds this server's cap of {cap} for backend '{config.backend_name}': lower "
            f"qsample_num_sweeps, qsample_num_reads or qsample_top_k")
    if math.isinf(config.coupling) and n > config.top_k:
        raise QSampleRequestError(
            "qsample_coupling", f"qsample_coupling='distinct' gives each of the n = {n} "
            f"children its own token: top_k = {config.top_k} candidates are too few")
    siblings = n > 1
    extra = {k: v for k, v in params.extra_args.items() if k not in SERVER_KEYS}
    if getattr(params, "seed", None) is None:
        if not plan.seeded:  # drawn once, here, for every rank and replica
            fresh = qrng.fresh_seed()
            plan = plan._replace(seed=fresh % SEED_MODULUS if siblings else fresh)
            if not siblings:
                extra[STREAM_KEY] = fresh
        if siblings:  # vLLM gives child i the seed ``seed + i``
            params.seed = plan.seed % SEED_MODULUS
    if siblings and config.coupling:
        extra[GROUP_KEY] = [qrng.fresh_seed(), plan.seed]
    if extra != params.extra_args:
        params.extra_args = extra
    return plan


def check_raw_arguments(xargs: dict[str, Any]) -> None:
    """Refuse JSON booleans among qsample keys of a raw ``vllm_xargs`` object (vLLM's request
    model turns ``true`` into 1: ``qsample_top_k: true`` would silently mean greedy), and
    `GROUP_KEY`, which only the server sets."""
    if GROUP_KEY in xargs:
        raise QSampleRequestError(GROUP_KEY, f"{GROUP_KEY} is set by the server (it couples the "
                                  "children of one n > 1 request): use qsample_coupling")
    if STREAM_KEY in xargs:
        raise QSampleRequestError(STREAM_KEY, f"{STREAM_KEY} is set by the server (the stream "
                                  "seed of a request that brings none): use qsample_seed")
    for key, value in xargs.items():
        if key.startswith(OPT_IN_KEY + "_") and isinstance(value, bool):
            raise QSampleRequestError(key, f"{key}={json.dumps(value)} is not allowed: expected "
                                      "a number or a string, not a boolean")


def check_raw_request(body: dict[str, Any]) -> None:
    """`check_request` on a raw OpenAI request body (completions or chat)."""
    xargs = body.get("vllm_xargs")
    if not isinstance(xargs, dict):
        return
    check_raw_arguments(xargs)
    params = SimpleNamespace(
        extra_args=xargs, temperature=body.get("temperature"), top_k=body.get("top_k"),
        top_p=body.get("top_p"), min_p=body.get("min_p"), seed=body.get("seed"),
        n=body.get("n") or 1)
    check_request(params)


async def admission_middleware(request: Any, call_next: Any) -> Any:
    """Starlette HTTP middleware for vLLM's OpenAI server
    (``--middleware qsample.plugins.vllm.admission_middleware``): the same HTTP 400 for
    streamed and non-streamed requests, and booleans refused (see the module docstring)."""
    if request.method == "POST" and request.url.path in ADMITTED_PATHS:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None  # vLLM answers malformed JSON itself
        if isinstance(body, dict):
            try:
                check_raw_request(body)
            except QSampleRequestError as exc:
                count_refusal(exc)
                logger.info("qsample refused a request (HTTP 400): %s", exc)
                status = int(HTTPStatus.BAD_REQUEST)
                return JSONResponse(status_code=status, content={"error": {
                    "message": str(exc), "type": "BadRequestError", "param": exc.key,
                    "code": status}})
    return await call_next(request)
