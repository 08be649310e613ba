"""The forked processes of :mod:`tests.zygote` behave as ``subprocess.Popen`` ones would:
the environment, folder and umask asked for, the exit status, the signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import Proc
from tests.helpers import qywx_env
from tests.zygote import ForkedProcess, spawn


def test_a_forked_server_has_the_environment_folder_and_umask_asked_for(
    env: dict[str, str], tmp_path: Path, fake_wecom: object
) -> None:
    previous = os.umask(0o027)
    try:
        proc = Proc(["serve", "--port", "0"], env, tmp_path)
    finally:
        os.umask(previous)
    try:
        assert isinstance(proc.popen, ForkedProcess)
        pid = proc.popen.pid
        assert os.path.realpath(f"/proc/{pid}/cwd") == str(tmp_path.resolve())
        # the settings come from the environment asked for (the zygote has no QYWX_*)
        assert f"db: {env['QYWX_DB']}; WeCom API: {env['QYWX_API_BASE']}" in proc.log
        status = Path(f"/proc/{pid}/status").read_text()
        assert "Umask:\t0027" in status
        assert f"PPid:\t{os.getpid()}\n" not in status  # forked by the zygote
    finally:
        assert proc.stop() == 0, proc.log
    assert "stopping: finishing queued callbacks" in proc.log


def test_exit_statuses_are_those_of_a_process(tmp_path: Path) -> None:
    env = qywx_env(QYWX_AUTHS=str(tmp_path / "none"), QYWX_DB=str(tmp_path / "q.db"))
    refused = spawn(["serve", "--port", "0"], env, tmp_path)
    assert refused.wait(20) == 2
    assert refused.stderr is not None
    assert refused.stderr.read().startswith("qywx: error: no auths/ folder")

    idle = spawn(["fake-wecom", "--port", "0"], env, tmp_path)
    assert idle.stderr is not None
    assert "fake WeCom API on" in idle.stderr.readline()
    assert idle.poll() is None
    idle.send_signal(signal.SIGKILL)
    assert idle.wait(20) == -signal.SIGKILL
    assert idle.poll() == -signal.SIGKILL


def test_an_interpreter_setting_of_its_own_gets_a_fresh_process(tmp_path: Path) -> None:
    fresh = spawn(["--version"], qywx_env(PYTHONHASHSEED="7"), tmp_path)
    assert isinstance(fresh, subprocess.Popen)
    out, _ = fresh.communicate(timeout=60)
    assert fresh.returncode == 0 and out.startswith("qywx")


def test_a_signal_to_a_child_already_reaped_is_a_no_op(tmp_path: Path) -> None:
    """The zygote reaps a child before the test reads its status; a signal sent in that
    window goes through the pidfd, so it can reach no other process, and raises nothing."""
    done = spawn(["--version"], qywx_env(), tmp_path)
    assert isinstance(done, ForkedProcess) and done.stdout is not None
    assert done.stdout.read().startswith("qywx")
    proc = Path(f"/proc/{done.pid}")
    for _ in range(2000):  # the zygote reaps it as soon as it exits
        if not proc.exists():
            break
        time.sleep(0.005)
    assert not proc.exists()
    done.send_signal(signal.SIGTERM)
    assert done.wait(20) == 0
    done.send_signal(signal.SIGTERM)  # known to have ended: nothing is sent


def test_a_umask_and_a_discarded_stdout_as_popen_takes_them(tmp_path: Path) -> None:
    """What the benchmark harnesses ask for (``Popen(umask=..., stdout=DEVNULL)``)."""
    env = qywx_env(QYWX_AUTHS=str(tmp_path / "none"))
    proc = spawn(["fake-wecom", "--port", "0"], env, tmp_path, umask=0o033, stdout=False)
    try:
        assert isinstance(proc, ForkedProcess) and proc.stdout is None
        assert proc.stderr is not None and "fake WeCom API on" in proc.stderr.readline()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "Umask:\t0033" in status
        assert os.path.realpath(f"/proc/{proc.pid}/fd/1") == os.devnull
    finally:
        proc.kill()
        proc.wait(20)
