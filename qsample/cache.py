"""qsample's cache folder and its one way of writing it: nothing half-written is ever read.

Three users share it: the transformers adapter's converted default model (a folder, `build_folder`),
the D-Wave backend's clique embeddings and `qsample calibrate`'s results (small JSON files,
`write_json`; calibrations through `load_calibration` / `save_calibration`).

- A file is written to a temporary name next to its place and renamed over it (`os.replace` is
  atomic on POSIX): a reader sees the old or the new content.
- A folder is built in a temporary folder under an ``fcntl.flock`` lock, finished by a manifest
  (written last: every file and its size) and renamed into place. A folder without a valid
  manifest, or whose files do not have the recorded sizes, is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, cast

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: fall back to the rename race check alone
    fcntl = None  # type: ignore[assignment]

MANIFEST = "qsample-manifest.json"
LOCK = ".qsample.lock"
CALIBRATION_FOLDER = "calibration"
EMBEDDING_FOLDER = "embeddings"


def cache_root() -> Path:
    """The qsample cache folder: ``$QSAMPLE_CACHE``, else ``$XDG_CACHE_HOME/qsample``,
    else ``~/.cache/qsample``. It is not created here."""
    if os.environ.get("QSAMPLE_CACHE"):
        return Path(os.environ["QSAMPLE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "qsample"
    return Path.home() / ".cache" / "qsample"


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


STDERR = cast(TextIO, _CurrentStderr())
"""Progress stream for cache builds: the current ``sys.stderr``, looked up at each write."""


def say(progress: TextIO | None, message: str) -> None:
    """One ``qsample:`` progress line on ``progress`` (None: silent)."""
    if progress is not None:
        progress.write(f"qsample: {message}\n")
        progress.flush()


# --- files -------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary name in the same folder, then rename),
    creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], payload: Any, *, indent: int | None = 2) -> Path:
    """``payload`` as JSON at ``path``, atomically (every qsample JSON file: caches, reports)."""
    return write_text(Path(path), json.dumps(payload, indent=indent) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON at ``path``, or None when there is no file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


# --- calibrations ------------------------------------------------------------------------------


def calibration_path(backend: str, solver: str) -> Path:
    """Where the calibration of (backend, solver) is kept."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{backend}-{solver}")
    return cache_root() / CALIBRATION_FOLDER / f"{safe}.json"


def load_calibration(backend: str, solver: str) -> dict[str, Any] | None:
    """The saved calibration of (backend, solver), or None."""
    return read_json(calibration_path(backend, solver))


def save_calibration(record: dict[str, Any]) -> Path:
    """Keep a calibration record (it names its ``backend`` and ``solver``) for
    `load_calibration`."""
    return write_json(calibration_path(record["backend"], record["solver"]), record)


# --- folders -----------------------------------------------------------------------------------


def folder_is_valid(path: Path) -> bool:
    """Whether ``path`` is a complete cache folder: its manifest parses and every file it lists
    exists with the recorded size (sizes only, no hashing, so the check is cheap)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            return False
        for name, size in files.items():
            rel = Path(name)
            if rel.is_absolute() or ".." in rel.parts or not isinstance(size, int):
                return False
            file = path / rel
            if not file.is_file() or file.stat().st_size != size:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def write_manifest(folder: Path, source: dict[str, Any] | None = None) -> None:
    """Write the manifest of ``folder`` (every regular file and its size); call it last."""
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST
    }
    if not files:
        raise RuntimeError(f"qsample: the cache build wrote no files into {folder}")
    manifest = {"created": time.time(), "source": source, "files": files}
    write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def locked(lock_path: Path, progress: TextIO | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (says so when it has to wait)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(progress, f"waiting for another process to finish building ({lock_path})")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    """Remove a file or folder, first renaming a folder aside so nothing half-deleted keeps
    the name."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=".stale-"))
        os.replace(path, aside / path.name)
        shutil.rmtree(aside, ignore_errors=True)


def build_folder(
    final: Path,
    build: Callable[[Path], None],
    progress: TextIO | None = STDERR,
    *,
    intro: str | None = None,
    source: dict[str, Any] | None = None,
) -> Path:
    """Return ``final`` as a valid cache folder, building it with ``build(tmp_dir)`` if needed.

    Serialised across processes by a lock file in ``final.parent``; after taking the lock the
    cache is checked again (another process may have built it). An invalid folder is removed
    and rebuilt. ``build`` writes into a fresh temporary folder next to ``final``; then the
    manifest is written and the folder renamed to ``final``. If ``build`` raises, the
    temporary folder is removed and the error propagates.
    """
    if folder_is_valid(final):
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / LOCK, progress):
        if folder_is_valid(final):  # built by another process while we waited
            return final
        for leftover in [*root.glob(".tmp-*"), *root.glob(".stale-*")]:
            # Every build in this root holds the lock, so these are from dead processes.
            shutil.rmtree(leftover, ignore_errors=True)
        if final.exists() or final.is_symlink():
            say(progress, f"removing an incomplete or corrupted cache {final}")
            _remove(final)
        start = time.monotonic()
        if intro:
            say(progress, intro)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        try:
            build(tmp)
            write_manifest(tmp, source)
            tmp.chmod(0o755)  # mkdtemp makes it private; a cache folder is normally readable
            try:
                os.rename(tmp, final)
            except OSError:
                if not folder_is_valid(final):  # not a lost race: a real error
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process won; use its result
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not folder_is_valid(final):
            raise RuntimeError(f"qsample: the cache {final} is not valid right after building it")
        say(progress, f"done in {time.monotonic() - start:.1f} s -> {final}")
    return final
