"""A folder's owner lock: a run flock-s ``OWNER`` inside its temporary folder for as long as it lives, so a
lock another process can take is a killed run's (SIGKILL, the OOM killer), whatever process id it had."""

from __future__ import annotations

import fcntl
import os

OWNER = ".owner"


def hold(folder: str) -> int:
    """Lock ``folder``'s owner file (created if need be); the lock lasts until the returned fd is closed."""
    fd = os.open(os.path.join(folder, OWNER), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def abandoned(folder: str) -> bool | None:
    """True when ``folder``'s owner lock is free (its run is gone), False while a run holds it, None when the
    folder has no owner file."""
    try:
        fd = os.open(os.path.join(folder, OWNER), os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
