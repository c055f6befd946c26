"""Where qsample keeps files between runs (converted models, embeddings, calibrations)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The qsample cache folder: ``$QSAMPLE_CACHE``, else ``$XDG_CACHE_HOME/qsample``,
    else ``~/.cache/qsample``. It is not created here."""
    if os.environ.get("QSAMPLE_CACHE"):
        return Path(os.environ["QSAMPLE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "qsample"
    return Path.home() / ".cache" / "qsample"
