"""Safe files: atomic writes through unique temporary names, a lock against a second writer, and a test write
that finds an unwritable folder before any compute is spent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from igcorr.errors import InputError


def _describe(error: OSError) -> str:
    return error.strerror or type(error).__name__


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Make a test write where ``folder`` is or will be created; an :class:`InputError` names the problem.

    Nothing is left behind: a folder that does not exist yet is not created (its nearest existing parent is
    test-written instead, and it must be a folder).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".igcorr-write-test-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write the {what} in {folder}: {_describe(error)}; choose a writable folder "
                         "with free space") from error
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], what: str) -> Path:
    """Write ``path`` through a unique temporary file in the same folder, flushed and renamed over it.

    A failure (a full disk, a read-only folder) leaves no temporary file behind and raises an
    :class:`InputError` naming ``what`` and the path.
    """
    path = Path(path)
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".partial",
                                             delete=False)
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except OSError as error:
        if handle is not None:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
        raise InputError(f"could not write the {what} {path}: {_describe(error)}") from error
    except BaseException:
        if handle is not None:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
        raise
    return path


class WriterLock:
    """An exclusive lock file ``<path>.lock`` held while one run writes ``path``.

    A second process that tries to take it gets an :class:`InputError` naming the holder; a lock left by a
    process that no longer runs (on this host) is taken over.
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.what = what
        self.held = False

    def acquire(self) -> None:
        """Take the lock (raises InputError if another live process holds it)."""
        owner = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                descriptor = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise InputError(
                        f"the {self.what} {self.path} is being written by another run ({self._owner()}); wait for "
                        f"it to finish, give this run another path, or delete {self.lock_path} if no run uses it"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.lock_path)
                continue
            except OSError as error:
                raise InputError(f"cannot write the {self.what} in {self.path.parent}: {_describe(error)}") from error
            with os.fdopen(descriptor, "w") as handle:
                handle.write(owner)
            self.held = True
            return
        raise InputError(f"could not take the lock {self.lock_path}; delete it if no run uses {self.path}")

    def _owner(self) -> str:
        try:
            pid, _, host = self.lock_path.read_text().partition(" ")
        except OSError:
            return "unknown process"
        return f"process {pid} on {host or 'this host'}"

    def _stale(self) -> bool:
        try:
            pid_text, _, host = self.lock_path.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return False  # being written right now, or not ours to judge
        if host and host != socket.gethostname():
            return False
        if pid == os.getpid():
            return False  # this process already writes it (e.g. two runs in one process)
        try:
            os.kill(pid, 0)
        except OSError as error:
            return error.errno == errno.ESRCH
        return False

    def release(self) -> None:
        """Give the lock back (only if this object holds it)."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
            self.held = False

    @contextlib.contextmanager
    def held_during(self) -> Iterator[None]:
        """Hold the lock for the duration of the block."""
        self.acquire()
        try:
            yield
        finally:
            self.release()
