"""Fault injection for the crash tests: SIGKILL this process at a named step of a run.

``CCM_CRASH_AT="<step>:<n>"`` kills the process the n-th time it reaches ``<step>``
(n defaults to 1). The steps, in the order a run reaches them:

``claimed``   the manifest recorded what the configuration will write (before writing)
``written``   a file or directory step was applied
``checked``   a check passed
``acted``     a reload, restart or command succeeded (before it leaves the pending list)
``recorded``  the node's success record is in etcd (before the lock is released)

Unset (production), ``reached`` is one dictionary lookup. Only tests set it.
"""

from __future__ import annotations

import os
import signal

_reached: dict[str, int] = {}


def reached(step: str) -> None:
    wanted = os.environ.get("CCM_CRASH_AT")
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != step:
        return
    _reached[step] = _reached.get(step, 0) + 1
    if _reached[step] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
