"""Atomic writes: a file replaced in one rename, a missing directory appearing complete or not
at all. On any failure, or an interrupt, what was there before is left exactly as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_file(target: Path, data: bytes, outside: bool = True) -> None:
    """Replace `target` in one rename. With `outside`, the temporary file goes in the parent of
    the target's directory, so that the directory never holds a partial or stray file; where
    that is not possible (a read-only parent, another file system), beside the target."""
    folder = target.parent
    places = [folder.resolve().parent, folder] if outside else [folder]
    failure: OSError | None = None
    for place in places:
        try:
            fd, tmp = tempfile.mkstemp(dir=place, prefix=f".{target.name}.lstmc-")
        except OSError as exc:
            failure = exc
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and place is not places[-1]:
                failure = exc
                continue
            raise
        _fsync_dir(folder)
        return
    raise failure


def install(out_dir: Path, filename: str, text: str, owned: bytes = b"") -> bool:
    """Put `text` at out_dir/filename, atomically. Returns False if an identical file was there
    already (left alone: Numba's cache beside it stays valid). A file there that does not
    start with `owned` (another program's, the user's own code) is refused, not replaced.

    A missing DIR is built as a hidden sibling and renamed into place, so it appears complete
    or not at all; missing parents are created, and removed again if the write fails."""
    from lstmc.errors import LstmcError

    try:
        return _install(out_dir, filename, text, owned)
    except OSError as exc:  # name what the user asked for, not our temporary files
        target = out_dir / filename if out_dir.is_dir() else out_dir
        raise LstmcError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _install(out_dir: Path, filename: str, text: str, owned: bytes) -> bool:
    from lstmc.errors import LstmcError

    data = text.encode("utf-8")
    target = out_dir / filename
    if out_dir.is_dir():
        return _replace_in(out_dir, target, data, owned)
    if out_dir.exists():
        if out_dir.is_dir():  # made by another process since the test above
            return _replace_in(out_dir, target, data, owned)
        raise LstmcError(f"{out_dir} exists and is not a directory")
    parent = out_dir.absolute().parent
    created = []
    try:
        for folder in reversed([parent, *parent.parents]):
            if not folder.exists():
                try:
                    folder.mkdir()
                except FileExistsError:  # another process made it meanwhile: not ours
                    if not folder.is_dir():
                        raise
                else:
                    created.append(folder)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out_dir.name}.lstmc-"))
        try:
            _write_synced(tmp / filename, data)
            os.chmod(tmp, 0o777 & ~_umask())
            os.rename(tmp, out_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not out_dir.is_dir():  # not just another process creating DIR meanwhile
                raise
            _replace_in(out_dir, target, data, owned)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(parent)
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return True


def _replace_in(out_dir: Path, target: Path, data: bytes, owned: bytes) -> bool:
    """`target` in the existing `out_dir` made to hold `data` (False: it held it already)."""
    from lstmc.errors import LstmcError

    if target.is_dir() or (target.exists() and not target.is_file()):
        raise LstmcError(f"{target} exists and is not a file")
    if target.is_file():
        try:
            old = target.read_bytes()
        except OSError as exc:  # whose it is can't be told: not ours to replace
            raise LstmcError(f"{target} exists and can't be read: {exc.strerror or exc}") from exc
        if old == data:
            return False
        if not old.startswith(owned):
            raise LstmcError(
                f"{target} exists and was not written by lstmc; remove it, or write elsewhere "
                "(-o) or under another name (--name)"
            )
    replace_file(target, data)
    return True


def write_into(path: Path, data: bytes) -> None:
    """Write `data` to the file `path` names, as a shell's `>` would where that is not a
    regular file to replace (a FIFO, a device, /dev/stdout), and through a symlink to the
    file it points at; else replace it atomically, beside itself."""
    from lstmc.errors import LstmcError

    real = Path(os.path.realpath(path))
    if not real.parent.is_dir():  # a symlink into a folder that is gone
        raise LstmcError(f"cannot write {path}: it leads to {real}, in no directory")
    if real.exists() and not real.is_file():
        with open(real, "wb") as f:
            f.write(data)
        return
    replace_file(real, data, outside=False)
