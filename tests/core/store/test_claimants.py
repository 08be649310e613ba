"""Whether a claim's process has ended, told from real processes: a child that runs, is
killed, lies unreaped, and the marks a pid reuse or another machine would leave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from qywx_cli.core.store import claimants

pytestmark = pytest.mark.skipif(
    claimants.process_mark() is None, reason="no /proc here: claims wait for their lease"
)


def _mark() -> tuple[str, int, str]:
    mark = claimants.process_mark()
    assert mark is not None
    scope, pid, start = mark.split(".")
    assert int(pid) == os.getpid()
    return scope, int(pid), start


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process that runs until killed, and reports its own worker name."""
    code = (
        "import sys; from qywx_cli.core.store import claimants; "
        "print(claimants.worker_name('c0ffee00', 7), flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    yield proc
    proc.kill()
    proc.wait()


def _name_of(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().decode().strip()


def test_this_process_and_a_running_child_have_not_ended(child: subprocess.Popen[bytes]) -> None:
    own = claimants.worker_name("abcd1234", 1)
    assert own.startswith("abcd1234@") and own.endswith(":1")
    assert not claimants.ended(own)
    name = _name_of(child)
    scope, _, _ = _mark()
    assert name.startswith(f"c0ffee00@{scope}.{child.pid}.") and name.endswith(":7")
    assert not claimants.ended(name)


def test_a_killed_child_has_ended_reaped_or_not(child: subprocess.Popen[bytes]) -> None:
    name = _name_of(child)
    child.send_signal(signal.SIGKILL)
    # Wait until it is dead but leave it unreaped: a zombie runs nothing.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert claimants.ended(name)
    child.wait()  # reaped: no process has the pid now
    assert claimants.ended(name)


def test_a_pid_that_now_belongs_to_another_process_has_ended() -> None:
    scope, pid, start = _mark()
    assert claimants.ended(f"w@{scope}.{pid}.{int(start) + 1}:1")
    assert not claimants.ended(f"w@{scope}.{pid}.{start}:1")


def test_what_this_machine_cannot_vouch_for_waits_for_the_lease(
    child: subprocess.Popen[bytes],
) -> None:
    name = _name_of(child)
    scope, _, _ = _mark()
    other = "0" * 12 if scope != "0" * 12 else "1" * 12
    child.kill()
    child.wait()
    assert claimants.ended(name)
    elsewhere = name.replace(scope, other)  # the same dead pid, on another machine
    for worker in (
        elsewhere,
        "deadhost:1",  # a name with no mark (an older qywx, or off Linux)
        "",
        f"w@{scope}.0.1:1",  # pid 0 is no process (kill(0) would signal our group)
        f"w@{scope}.{1 << 22}.1:1",  # past the largest pid the kernel gives
        f"w@{scope}.-5.1:1",
        f"w@{scope.upper()}.{child.pid}.1:1",
        f"w@{scope}.{child.pid}:1",  # no start time
    ):
        assert not claimants.ended(worker), worker


def test_a_forked_child_makes_its_own_mark() -> None:
    _, pid, _ = _mark()
    read, write = os.pipe()
    forked = os.fork()
    if forked == 0:  # the child: report its mark and leave at once
        os.close(read)
        os.write(write, (claimants.process_mark() or "").encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        theirs = f.read().decode()
    os.waitpid(forked, 0)
    assert theirs.split(".")[1] == str(forked) != str(pid)
    assert theirs.split(".")[0] == _mark()[0]  # one machine, one PID namespace: one scope
