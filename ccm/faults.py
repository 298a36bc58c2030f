"""Fault injection for the crash tests: SIGKILL this process at a named step of a run.

``CCM_CRASH_AT="<step>:<n>"`` kills the process the n-th time it reaches ``<step>``
(n defaults to 1). The steps, in the order a run reaches them:

``claimed``   the manifest recorded what the configuration will write (before writing)
``written``   a file or directory step was applied
``checked``   a check passed
``acted``     a reload, restart or command succeeded (before it leaves the pending list)
``recorded``  the node's success record is in etcd (before the lock is released)

Unset (production), ``reached`` is one dictionary lookup. Only tests set it.

Set, every step reached is also appended to ``trail``: a test in this process can check
where the crash points are (a killed child proves what a crash leaves, but a mutation
tool sees only the code its own process runs).
"""

from __future__ import annotations

import os
import signal

_reached: dict[str, int] = {}
#: the steps reached while ``CCM_CRASH_AT`` is set, in order
trail: list[str] = []


def reached(step: str) -> None:
    wanted = os.environ.get("CCM_CRASH_AT")
    if not wanted:
        return
    trail.append(step)
    name, _, count = wanted.partition(":")
    if name != step:
        return
    _reached[step] = _reached.get(step, 0) + 1
    if _reached[step] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
