"""The on-disk cache of generated modules.

A generated module is written to `<cache dir>/<key>/<module>.py`, where the key hashes the
spec, the options, the target, the lstmc and Numba versions and lstmc_runtime's sources.
Numba's own cache (`cache=True`) then stores the machine code beside it, so a second process
loads a compiled kernel without compiling. Writes are atomic (a temporary file, then a hard link that fails if another process
won the race), so two processes compiling the same spec both succeed and nobody ever reads a
half-written file. The cache directory is `$LSTMC_CACHE_DIR`, else `~/.cache/lstmc`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType


def cache_dir() -> Path:
    root = os.environ.get("LSTMC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lstmc"
    )
    return Path(root)


@functools.cache
def runtime_digest() -> str:
    """A hash of lstmc_runtime's sources. A compiled kernel holds its own copy of the runtime
    functions it calls (Numba links them into the kernel's cached machine code), and Numba's
    cache index only watches the generated module's file: without this, a changed runtime
    would keep running the old copy from the cache until the version number moved."""
    import lstmc_runtime

    digest = hashlib.sha256()
    for path in sorted(Path(lstmc_runtime.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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


def write_atomic(path: Path, text: str) -> bool:
    """Create `path` with `text` unless it exists already. Returns whether this call wrote it.

    Never overwrites: an existing file keeps its mtime, which Numba's cache index depends on.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
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


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a generated module from its file (so tracebacks show generated lines)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_generated(source: str, key: str, stem: str, use_cache: bool = True) -> ModuleType:
    """Write `source` under its key (once) and import it."""
    if use_cache:
        folder = cache_dir() / key[:2] / key
    else:
        folder = Path(tempfile.mkdtemp(prefix="lstmc-"))
    path = folder / f"{stem}.py"
    if not write_atomic(path, source) and path.read_text(encoding="utf-8") != source:
        # Same key but different text: a corrupted entry. Replace it atomically.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".py")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.replace(tmp, path)
    name = f"lstmc_generated_{stem}_{key[:16]}"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded  # this process imported it already
    return import_file(path, name)
