"""Whether a claim's process has ended, told from real processes: a child that runs, is
killed, lies unreaped, and the marks a pid reuse or another machine would leave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
        f"w@g{scope[1:]}.{child.pid}.1:1",  # a scope no process makes (not hex)
        f"x@{scope}.1.1:1 " + name,  # a whole name, not one found inside another
        name + "@" + name,
        name.replace(":", "::"),
        f"w@{scope}.{child.pid}:1",  # no start time
    ):
        assert not claimants.ended(worker), worker


def test_a_process_whose_main_thread_left_while_another_runs_has_not_ended(
    tmp_path: Path,
) -> None:
    """Linux shows the thread-group leader as a zombie once the main thread has exited,
    while the process's other threads still run: that is no ended process."""
    beat = tmp_path / "beat"
    code = (
        "import ctypes, sys, threading, time\n"
        "from qywx_cli.core.store import claimants\n"
        "working = threading.Event()\n"
        "def work():\n"
        "    while True:\n"
        f"        with open({str(beat)!r}, 'a') as f: f.write('.')\n"
        "        working.set()\n"
        "        time.sleep(0.05)\n"
        "threading.Thread(target=work, daemon=False).start()\n"
        "working.wait()\n"
        "print(claimants.worker_name('1eade400', 1), flush=True)\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        name = _name_of(proc)

        def leader_state() -> str:
            raw = Path(f"/proc/{proc.pid}/stat").read_bytes()
            return raw.rpartition(b")")[2].split()[0].decode()

        deadline = time.monotonic() + 30
        while leader_state() != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert leader_state() == "Z"  # the main thread has gone...
        beats = beat.stat().st_size
        while beat.stat().st_size == beats and time.monotonic() < deadline:
            time.sleep(0.01)
        assert beat.stat().st_size > beats and proc.poll() is None  # ...and it works on
        assert not claimants.ended(name)
    finally:
        proc.kill()
        proc.wait()
    assert claimants.ended(name)


def test_a_process_reading_another_pid_namespaces_proc_makes_no_mark() -> None:
    """A new PID namespace without its own /proc: getpid() is 1 there while /proc shows
    the outer namespace, whose pid numbers would judge the wrong processes."""
    import shutil

    probe = [shutil.which("unshare") or "unshare", "--pid", "--fork", sys.executable, "-c"]
    code = "from qywx_cli.core.store import claimants; print(claimants.worker_name('a', 1))"
    try:
        done = subprocess.run([*probe, code], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no unshare(1) here")
    if done.returncode != 0:
        pytest.skip(f"unshare --pid needs privileges here: {done.stderr.strip()[:80]}")
    assert done.stdout.strip() == "a:1"  # no mark: its claims wait for their lease


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
