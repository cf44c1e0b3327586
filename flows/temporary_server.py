"""Prefect's temporary server, as ``curate backfill`` uses it when no server is configured.

Prefect starts it at the flow's first API call and stops it from ``atexit``, so a backfill killed by
SIGKILL (an OOM killer, a ``kill -9``, a lost session) left it running for good, on its port, with its
database open: one more each time.  Here it is started before the flow, with a watchdog that stops it
when the backfill is gone, however the backfill ended.
"""

from __future__ import annotations

import os
import subprocess
import sys

# The watchdog: it blocks on a pipe whose only writer is the backfill, so it reads end-of-file when the
# backfill is gone, however it ended.  It stops the server only if the PID is still the server's (same
# start time), never a process that has got the PID since.
WATCHDOG = """
import os, sys, psutil
pid, born = int(sys.argv[1]), float(sys.argv[2])
while os.read(0, 1):
    pass
try:
    server = psutil.Process(pid)
    if server.create_time() == born:
        procs = [server, *server.children(recursive=True)]
        for p in procs:
            p.terminate()
        for p in psutil.wait_procs(procs, timeout=10)[1]:
            p.kill()
except psutil.Error:
    pass
"""

_HELD: list[int] = []  # the pipe's write end, open for as long as this process lives


def start_temporary_server() -> int:
    """Start Prefect's temporary server now (the flow's client then uses this one), and its watchdog; the
    server's PID."""
    import psutil
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    pid = server.server_process.pid  # after start: it may have moved to another port, in a new process
    read, write = os.pipe()  # not inherited by later children (PEP 446): only this process writes
    subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(pid), repr(psutil.Process(pid).create_time())],
        stdin=read,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C to the terminal's group does not stop it before its work
    )
    os.close(read)
    _HELD.append(write)
    return pid
