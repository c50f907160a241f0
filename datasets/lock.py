"""One writer per output folder: `with hold(path, "prepare-data"):` around a dataset build (or a training run).

The lock is the hidden file `.<name>.lock` beside the folder (the folder may not exist yet; hidden, so that a
source folder holding the output does not list it as an input), created atomically with O_CREAT | O_EXCL and
holding JSON {host, pid, start, what}. Its holder also keeps a kernel lock (flock) on it for as long as it runs,
so the kernel, not a guess, says whether a local holder is alive, and two processes that find one stale lock
cannot both take it over. A second writer is refused at once with LockedError naming the folder and the holder.
A lock left by a holder that died (this host, pid gone) is taken over, with a note; one written on another host
is never taken over (its pid means nothing here): the message says which file to remove once that job is known
to be gone. The lock file is removed on exit, however the block ends.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path


class LockedError(ValueError):
    """Another process holds the folder; the message names the folder, the holder and the lock file."""


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, another user's
        return True
    return True


def _read(fd: int) -> dict:
    """The holder's record; {} while it is being written (or if someone wrote junk)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        rec = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return rec if isinstance(rec, dict) else {}


def describe(rec: dict) -> str:
    if not rec:
        return "a process that is still writing its record"
    return (f"{rec.get('what', 'a process')} on host {rec.get('host', '?')}, pid {rec.get('pid', '?')}, "
            f"started {rec.get('start', '?')}")


def _refuse(path: Path, lock: Path, rec: dict, hint: str = "") -> LockedError:
    return LockedError(f"{path} is in use by {describe(rec)} (lock file {lock}){hint}")


def _try_flock(fd: int) -> bool | None:
    """True: we hold it; False: a live process does; None: this filesystem has no such locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return None
        raise
    return True


def _open(lock: Path) -> tuple[int, bool] | None:
    """(fd, whether we created it) on the lock file; None if it vanished between our two tries."""
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        try:
            return os.open(lock, os.O_RDWR), False
        except FileNotFoundError:
            return None


def _is_current(fd: int, lock: Path) -> bool:
    """Is `fd` still the file at `lock`? (A holder that leaves unlinks it; we may have opened it just before.)"""
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _take_over(path: Path, lock: Path, rec: dict, kernel: bool | None, note: Callable[[str], None]) -> None:
    """The kernel lock is ours; refuse anyway if the record left in the file may belong to a live holder."""
    if rec.get("host") != socket.gethostname():
        raise _refuse(path, lock, rec, f"; if that job is gone, remove {lock}")
    pid = rec.get("pid")
    if kernel is None and isinstance(pid, int) and _pid_alive(pid):          # no kernel lock to ask
        raise _refuse(path, lock, rec)
    note(f"taking over the stale lock {lock} of {describe(rec)}: that process no longer holds it")


def _acquire(path: Path, lock: Path, what: str, note: Callable[[str], None]) -> int:
    """An open fd on `lock` that we hold, with our record written in it."""
    for _ in range(10):                     # each retry means a holder just came or went
        opened = _open(lock)
        if opened is None:
            continue
        fd, created = opened
        kernel: bool | None = False
        try:
            kernel = _try_flock(fd)
            if kernel is False:
                raise _refuse(path, lock, _read(fd))
            if not _is_current(fd, lock):
                os.close(fd)
                continue
            rec = {} if created else _read(fd)
            if rec:
                _take_over(path, lock, rec, kernel, note)
            mine = {"host": socket.gethostname(), "pid": os.getpid(), "what": what,
                    "start": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(mine).encode(), 0)
            os.fsync(fd)
            return fd
        except BaseException:
            if created and kernel:          # made and held by us, but not handed out: take it away again
                with contextlib.suppress(OSError):
                    os.unlink(lock)
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise LockedError(f"{path}: could not take the lock file {lock} (other processes keep taking and "
                      f"releasing it); try again")


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str, note: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold `.<name>.lock` beside `path` for the block (yields the lock file's path); LockedError if another
    process holds it.

    `what` says who holds it in messages ("prepare-data", "gafu train"); `note` receives the one line said when
    a stale lock (this host, dead pid) is taken over."""
    path = Path(path).absolute()
    if not path.name:
        raise ValueError(f"cannot lock {path}: give a folder below the filesystem root")
    lock = lock_path(path.resolve())        # one lock for every spelling of the folder (symlinks, '..')
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, lock, what, note)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:     # still ours: nobody removed it by hand
                os.unlink(lock)
        os.close(fd)
