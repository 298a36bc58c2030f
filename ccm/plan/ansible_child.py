"""One ansible-runner run, in a process of its own: ``python -m ccm.plan.ansible_child REQUEST``.

``ccm.plan.ansible`` starts this module with ``subprocess.Popen`` (vfork and exec: no fork
handler runs in the ccm process, and no Python runs in the child before the exec) instead
of calling ``ansible_runner.run`` itself, because ansible-runner starts ``ansible-playbook``
with pexpect, which ``fork()``s the calling process and runs Python before ``exec``. In a
ccm process the etcd client holds gRPC channels, and gRPC's fork handlers (on by default in
the grpcio wheel) restart gRPC's threads in the child whenever gRPC is idle at the fork;
pexpect then closes every descriptor above 2, including the ones those threads poll, and a
restarted poller that calls ``epoll_wait`` before the ``exec`` gets EBADF: gRPC aborts the
child, ``ansible-playbook`` never starts, and the run fails with ``… ev_epoll1_linux.cc …
epoll_wait error: Bad file descriptor`` as its output (issue 15, finding 7). This process
imports ansible-runner and nothing of gRPC, so pexpect may fork it safely.

It reads the keyword arguments of ``ansible_runner.run`` from the JSON file ``REQUEST``
and writes, on stdout, one JSON object per line: ``{"event": …}`` for every ansible-runner
event, as it happens, then ``{"result": {"status", "rc", "stdout"}}`` (``stdout``, the
run's output, only when it did not succeed) or ``{"error": "…"}`` when ansible-runner could
not run at all. Anything else that would print to stdout goes to stderr.

SIGTERM (or SIGINT) cancels the run: no ``cancel_callback`` is given, so ansible-runner
installs its own handlers in this process, which is what they are for.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO


def _channel() -> TextIO:
    """The protocol's stream: the original stdout; fd 1 then points at stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


def main(argv: list[str]) -> int:
    channel = _channel()

    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message, default=str) + "\n")
        channel.flush()

    def on_event(event: dict[str, Any]) -> bool:
        send({"event": event})
        return True

    request: dict[str, Any] = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        import ansible_runner

        runner = ansible_runner.run(event_handler=on_event, quiet=True, **request)
    except Exception as error:  # ansible-runner could not even start the run
        send({"error": f"{type(error).__name__}: {error}"})
        return 1
    stdout = ""
    if not (runner.status == "successful" and runner.rc == 0):
        try:
            with runner.stdout as output:  # a file of the artifacts: close it
                stdout = output.read()
        except Exception:  # no stdout file (AnsibleRunnerException), unreadable
            stdout = ""
    rc = int(runner.rc) if runner.rc is not None else -1
    send({"result": {"status": str(runner.status), "rc": rc, "stdout": stdout}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
