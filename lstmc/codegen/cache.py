"""The on-disk cache of generated modules.

A generated module is written to `<cache dir>/<key>/<module>.py`, where the key hashes the
spec, the target, the lstmc and Numba versions and lstmc_runtime's sources. Numba's own cache
(`cache=True`) then stores the machine code beside it, so a second process loads a compiled
kernel without compiling. Writes are atomic (a temporary file, then a hard link that fails if
another process won the race), so two processes compiling the same spec both succeed and
nobody ever reads a half-written file. The cache directory is `$LSTMC_CACHE_DIR`, else
`~/.cache/lstmc`.

A cache is only ever a shortcut, so a bad one must not break compiling (a crash, a full disk,
a hand edit can leave one behind). Each bad entry is detected where it is read, reported
once with a `CacheWarning` that names the file, removed or rewritten, and compiled again:

- a module whose bytes differ from its source (truncated, empty, garbage): rewritten;
- a Python bytecode file (`__pycache__/*.pyc`) that won't load: removed;
- a Numba index (`*.nbi`) or data file (`*.nbc`) that won't load: Numba reads these lazily, at
  a kernel's first call, so each cached function of a loaded module is guarded (see
  `lstmc_runtime.cache_guard`): the function's index and data files are removed and it is compiled
  afresh, which writes a healthy entry for the next process. This costs nothing while the
  cache is healthy;
- a cache directory that can't be written (not a directory, no permission): the process
  compiles into a temporary directory instead, so a read-only home leaves lstmc usable.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import CodeType, ModuleType

# (re-exported: lstmc's users and tests know both from here)
from lstmc_runtime.cache_guard import warn_once
from lstmc_runtime.errors import CacheWarning
from lstmc_runtime.provenance import runtime_digest

__all__ = [
    "CacheWarning",
    "cache_dir",
    "cache_key",
    "load_generated",
    "runtime_digest",
]


def cache_dir() -> Path:
    root = os.environ.get("LSTMC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lstmc"
    )
    # absolute: a relative one, read again after a chdir, would be another directory, and
    # a module's __file__ (absolute) would never match its path (imported again each time)
    return Path(root).absolute()


def cache_key(parts: dict) -> str:
    import numba

    import lstmc

    payload = dict(
        parts,
        lstmc=lstmc.__version__,
        runtime=runtime_digest(),
        numba=numba.__version__,
        python=sys.version_info[:2],
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _write_temp(folder: Path, data: bytes) -> str:
    """A new temporary file in `folder` holding `data`, flushed to disk. Returns its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, text: str) -> bool:
    """Create `path` with `text` unless it exists already. Returns whether this call wrote it.

    Never overwrites: an existing file stays as Numba's cache index saw it.
    The file holds exactly `text` encoded as UTF-8 (no newline translation).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    tmp = _write_temp(path.parent, text.encode("utf-8"))
    try:
        try:
            os.link(tmp, path)  # atomic, and fails if another process linked first
            return True
        except FileExistsError:
            return False
        except OSError:  # file systems without hard links
            if not path.exists():
                os.replace(tmp, path)
                return True
            return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _store(path: Path, source: str) -> None:
    """Make `path` hold exactly `source`: write it if missing, rewrite it (atomically, with a
    warning) if what is there differs: a file with the same key but other bytes is corrupt."""
    if write_atomic(path, source):
        return
    data = source.encode("utf-8")
    try:
        healthy = path.read_bytes() == data
        why = "its content doesn't match its key, perhaps a write cut short"
    except OSError as exc:  # a directory where the module should be, no permission
        healthy = False
        why = f"unreadable: {type(exc).__name__}: {exc.strerror or exc}"
    if healthy:
        return
    warn_once(f"lstmc: the cached module {path} is corrupt ({why}); rewriting it")
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@functools.cache
def _scratch_dir() -> Path:
    """This process's stand-in for an unusable cache directory, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="lstmc-cache-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Python's loader for a source file, except that a corrupt bytecode file beside it is
    removed and the source compiled again. Python ignores a `__pycache__/<stem>.*.pyc` whose
    header is stale, but fails on one whose header is current and whose body isn't."""

    def get_code(self, fullname: str) -> CodeType:
        try:
            return super().get_code(fullname)
        except (ValueError, EOFError, TypeError, ImportError) as exc:  # from marshal.loads
            pyc = Path(importlib.util.cache_from_source(self.path))
            if not pyc.exists():
                raise
            warn_once(
                f"lstmc: the cached bytecode {pyc} is unreadable ({type(exc).__name__}: "
                f"{exc}); removing it"
            )
            pyc.unlink(missing_ok=True)
            return super().get_code(fullname)


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a generated module from its file (so tracebacks show generated lines)."""
    loader = _SourceLoader(module_name, str(path))
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _clear_the_way(entry: Path) -> None:
    """Remove a file (or a dangling symlink) where the folder of a cache entry, or the folder
    above it, should be: it made every process that compiled this spec report the whole
    cache directory unusable (mkdir's FileExistsError), for good."""
    for folder in (entry.parent, entry):
        if os.path.lexists(folder) and not folder.is_dir():
            warn_once(f"lstmc: {folder} should be a cache folder but is a file; removing it")
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                os.unlink(folder)
            return  # the folder below it, if any, went with it


# One import of a generated module at a time in this process: `import_file` puts a module in
# sys.modules before running it, so a second thread compiling the same spec found it there
# half-run (no `kernel` yet) and failed.
_import_lock = threading.RLock()


def load_generated(source: str, key: str, stem: str, use_cache: bool = True) -> ModuleType:
    """Write `source` under its key (once, or again when the entry there is corrupt) and
    import it (the module guards its cached Numba functions against corrupt cache files)."""
    if use_cache:
        folder = cache_dir() / key[:2] / key
    else:  # this process's alone, removed at exit
        folder = Path(tempfile.mkdtemp(prefix="lstmc-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / f"{stem}.py"
    try:
        if use_cache:
            _clear_the_way(folder)
        _store(path, source)
    except OSError as exc:
        if not use_cache:
            raise
        warn_once(  # once per directory, not per kernel: no file name from `exc`
            f"lstmc: cannot use the kernel cache directory {cache_dir()} "
            f"({type(exc).__name__}: {exc.strerror or exc}); compiling into a temporary "
            "directory instead, so kernels are compiled again in every process. Set "
            "LSTMC_CACHE_DIR to a writable directory to keep them."
        )
        folder = _scratch_dir() / key
        path = folder / f"{stem}.py"
        _store(path, source)
    name = f"lstmc_generated_{stem}_{key[:16]}"
    with _import_lock:
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__file__", None) == str(path):
            return loaded  # this process imported it already
        module = import_file(path, name)
    return module
