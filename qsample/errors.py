"""Exceptions raised by qsample. Every error names the offending field or rows."""

from __future__ import annotations


class QSampleError(Exception):
    """Base class of every qsample error."""


class ConfigError(QSampleError, ValueError):
    """A configuration value is unknown or out of range.

    Attributes:
        field: the configuration field.
        value: the value that was given.
        allowed: a human-readable description of the allowed values.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: expected {allowed}")


class LogitsError(QSampleError, ValueError):
    """The logits tensor cannot be sampled (wrong shape or dtype, NaN rows, all -inf rows)."""


class BackendError(QSampleError, RuntimeError):
    """A backend raised, or returned samples that do not fit the problem, and the
    configured fallback policy is ``"error"``."""
