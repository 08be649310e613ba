"""Who holds a claim, and whether that process has ended: taking a killed process's
records back at once instead of after its lease.

A claim's lease (:data:`.records.DEFAULT_LEASE_SECONDS`) is the only thing another
*host* can go by: it cannot see whether a process elsewhere is running, stopped, or cut
off. On the *same* machine, though, the kernel knows. Many crashes are met there: a
process killed (OOM, ``kill -9``, a failed deploy) and restarted by systemd or another
supervisor in the same PID namespace, or a sibling process beside it. (A container
started afresh gets a PID namespace of its own: its claims wait for the lease.) So a
worker's name carries its process's mark — a scope (this boot of this machine, this
PID namespace), the pid, and the process's start time in clock ticks — and a worker
that shares the scope can tell for certain that the process is gone:

* no process has that pid (``kill(pid, 0)`` says ESRCH), or
* a process has it but started at another time (the pid was reused), or
* it is a zombie with no thread left: killed, not yet reaped, running nothing.

Anything else, including "cannot tell" (another scope, no ``/proc``, a ``/proc`` of
another PID namespace, a mark that does not parse, a ``/proc`` hidden from this user),
is *not* ended: the lease decides, as before. A wrong "ended" would let two workers run
one single-use AuthCode exchange, so every doubt falls on the side of waiting.

What the check assumes: two machines never share a scope. VMs cloned from one memory
snapshot break that (same boot id, namespaces and, unless renamed, host name), and so
does a process restored by checkpoint/restore on the same boot (its pid comes back, its
start time does not). Where that can happen, ``same_host_takeover = false`` in
qywx.toml turns the check off and leaves every claim to its lease.

The scope (:func:`_scope`) mixes the boot id with the PID namespace, because containers
on one host share the boot id but not their pids, and with the time namespace and the
host name, so that processes that might read each other's pids or start times
differently never judge each other. Off Linux there is no mark,
and only leases apply.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from typing import Final

__all__ = ["ended", "process_mark", "worker_name"]

_SCOPE_HEX: Final = 12
_NAME: Final = re.compile(
    r"[0-9A-Za-z_-]{1,64}@([0-9a-f]{12})\.([1-9][0-9]{0,9})\.([0-9]{1,20}):[0-9]{1,20}"
)
"""A whole worker name with a mark, ``service@scope.pid.start:thread``; anything else,
a name with two marks say, has none."""
_MAX_PID: Final = 1 << 22
"""The kernel's largest pid_max (PID_MAX_LIMIT on 64-bit)."""

_cached: tuple[int, str | None] | None = None


def _namespace(kind: str) -> bytes:
    """``dev:inode`` of this process's ``kind`` namespace; empty where the kernel has
    none of that kind (time namespaces came in Linux 5.6)."""
    try:
        ns = os.stat(f"/proc/self/ns/{kind}")
    except FileNotFoundError:
        return b""
    return b"%d:%d" % (ns.st_dev, ns.st_ino)


def _scope() -> str | None:
    """What two processes must share for one to judge the other's pid: the boot, the
    PID namespace (pids are per namespace), the time namespace (start times are shown
    shifted by it) and the host name (VMs cloned from one snapshot share a boot id)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            boot = f.read().strip()
        pid_ns = _namespace("pid")
        time_ns = _namespace("time")
    except OSError:
        return None
    if not boot or not pid_ns:
        return None
    seed = b"/".join((boot, pid_ns, time_ns, socket.gethostname().encode()))
    return hashlib.sha256(seed).hexdigest()[:_SCOPE_HEX]


def _stat(pid: int) -> tuple[str, str, str] | None:
    """(state, threads, start time) of ``pid`` from ``/proc/<pid>/stat``, None if
    unreadable.

    The command name (field 2) is in parentheses and may hold spaces or ")", so the
    fields are counted from its last ")": state is field 3, num_threads field 20,
    starttime field 22."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    _, paren, rest = raw.rpartition(b")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        return None
    state, threads, start = (fields[i].decode("ascii", "replace") for i in (0, 17, 19))
    return state, threads, start


def process_mark() -> str | None:
    """This process's ``scope.pid.start``, or None where it cannot be made: off Linux,
    or where the ``/proc`` mounted is another PID namespace's (its pid numbers are not
    ours, so no process here could be judged by them).

    Cached per pid, so a forked child makes its own."""
    global _cached
    pid = os.getpid()
    if _cached is not None and _cached[0] == pid:
        return _cached[1]
    mark = None
    scope = _scope() if _own_proc(pid) else None
    stat = _stat(pid) if scope is not None else None
    if scope is not None and stat is not None:
        mark = f"{scope}.{pid}.{stat[2]}"
    _cached = (pid, mark)
    return mark


def worker_name(service_id: str, thread: int) -> str:
    """The name a worker thread claims records under: ``service@mark:thread``, or
    ``service:thread`` where the process has no mark."""
    mark = process_mark()
    return f"{service_id}@{mark}:{thread}" if mark else f"{service_id}:{thread}"


def _own_proc(pid: int) -> bool:
    """Whether the ``/proc`` mounted here is our PID namespace's (its ``self`` is us)."""
    try:
        return os.readlink("/proc/self") == str(pid)
    except OSError:
        return False


def ended(worker: str) -> bool:
    """True only when ``worker``'s process is certainly gone; see the module's text."""
    if not isinstance(worker, str):  # a row written outside qywx (bytes, a number)
        return False
    found = _NAME.fullmatch(worker)
    own = process_mark()
    if found is None or own is None:
        return False
    scope, pid_text, start = found.groups()
    if scope != own.partition(".")[0]:
        return False
    pid = int(pid_text)
    if pid >= _MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # it exists (another user's process, say): look closer
    stat = _stat(pid)
    if stat is None:
        return False
    state, threads, ticks = stat
    if ticks != start:
        return True  # the pid now names a process started later
    # A zombie whose threads are all gone. A thread-group leader shows Z too once its
    # own thread has exited while others still run: that process is alive.
    return state in ("Z", "X") and threads in ("0", "1")
