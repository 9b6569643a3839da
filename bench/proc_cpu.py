"""CPU seconds of a process session, read from ``/proc`` (Linux).

The push scenario's worker is ``dramatiq willowe_tasks``: a supervisor that
forks its worker processes, all in the session the bench started it in
(:func:`bench.runner.start`). Their CPU time is only added to the
supervisor's ``cutime`` once they exit, so a reading taken while they run
sums every live process of the session instead.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat.
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

#: Positions in /proc/<pid>/stat after the ")" that closes the command name
#: (proc(5) numbers them from 1 with the pid; the rest starts at field 3).
_SESSION, _UTIME, _STIME = 6 - 3, 14 - 3, 15 - 3


def session_cpu_s(session: int) -> float:
    """User plus system CPU seconds of the live processes in ``session``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        if len(fields) > _STIME and int(fields[_SESSION]) == session:
            ticks += int(fields[_UTIME]) + int(fields[_STIME])
    return ticks / _TICKS_PER_S
