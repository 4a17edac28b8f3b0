"""The stack's process records (infra/processes.py, used by infra/stack.sh): a process is the
stack's own by pid, start time, boot and home, the record names the program itself from the
moment `launch` returns, the listener on a port must be ours, and `stop` signals nothing else:
a decoy under a recycled pid file survives it."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STACK = str(REPO / "infra" / "stack.sh")
spec = importlib.util.spec_from_file_location("processes", REPO / "infra" / "processes.py")
processes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(processes)


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    state = tmp_path / "stack"
    (state / "run").mkdir(parents=True)
    monkeypatch.setenv("TRICKFLOW_HOME", str(state))
    return state


def _decoy(tmp_path: Path) -> subprocess.Popen:
    """A process of somebody else's whose arguments say "mlflow" and "prefect", as `less
    mlflow-notes.txt` under a recycled pid would."""
    notes = tmp_path / "mlflow-prefect-notes.txt"
    notes.write_text("notes\n")
    env = {k: v for k, v in os.environ.items() if k != "TRICKFLOW_HOME"}
    return subprocess.Popen(
        [sys.executable, "-c", "import time, sys; time.sleep(120)", str(notes)], env=env
    )


@pytest.mark.parametrize("record", ["plain", "other start time", "other home"])
def test_stop_never_signals_a_decoy_under_a_recycled_pid_file(
    home: Path, tmp_path: Path, record: str
) -> None:
    decoy = _decoy(tmp_path)
    try:
        time.sleep(0.3)  # let it exec: its arguments are then the decoy's own
        pid = decoy.pid
        if record == "plain":  # the old format: a pid alone cannot be told from a recycled one
            text = str(pid)
        else:
            started = processes.start_time(pid)
            text = json.dumps({
                "pid": pid,
                "start_time": started + 1 if record == "other start time" else started,
                "boot_id": processes.boot_id(),
                "home": str(home) if record == "other start time" else str(tmp_path / "x"),
            })  # fmt: skip
        for name in ("mlflow-server", "prefect-server", "worker"):
            (home / "run" / f"{name}.pid").write_text(text)
        env = {**os.environ, "TRICKFLOW_HOME": str(home), "PREFECT_PORT": "1", "MLFLOW_PORT": "1"}
        status = subprocess.run([STACK, "status"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert "prefect-server: stopped" in status.stdout, status.stdout + status.stderr
        stopped = subprocess.run([STACK, "stop"], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        assert decoy.poll() is None, "stop signalled a process the stack did not start"
        assert not list((home / "run").glob("*.pid"))  # stale records are dropped
    finally:
        decoy.kill()
        decoy.wait()


def test_a_plain_pid_file_of_the_stack_before_records_is_still_stopped(
    home: Path, tmp_path: Path
) -> None:
    """A stack started before pid files held records: its processes' environment names its
    home, so `stop` still reaches them (and only them: see the decoy test above)."""
    env = {**os.environ, "TRICKFLOW_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env,
                              start_new_session=True)  # fmt: skip
    try:
        time.sleep(0.3)
        (home / "run" / "mlflow-server.pid").write_text(str(server.pid))
        assert processes.alive(home / "run", "mlflow-server")
        assert processes.stop(home / "run", "mlflow-server") == "stopped"
        assert server.wait(timeout=10) is not None
    finally:
        server.kill()
        server.wait()


def test_launch_records_the_program_itself_and_stop_ends_its_session(
    home: Path, tmp_path: Path
) -> None:
    run = home / "run"
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"  # noqa: E501
    pid = processes.launch(run, "server", tmp_path / "server.log", [sys.executable, "-c", child])
    # At once, with no wait: the record names the running program, not a launcher about to
    # exec it, so a check made while the machine is busy never takes it for a stranger.
    assert processes.alive(run, "server")
    record = json.loads((run / "server.pid").read_text())
    assert record["pid"] == pid and record["start_time"] == processes.start_time(pid)
    assert (run / "server.pid").stat().st_mode & 0o777 == 0o600
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0] == sys.executable.encode()
    deadline = time.monotonic() + 20
    while len(processes.members(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    members = processes.members(pid)
    assert len(members) == 2, members
    assert processes.stop(run, "server") == "stopped"
    assert not [m for m in members if processes.running(m)]
    assert not processes.alive(run, "server")


def test_listening_is_true_only_for_our_own_socket(home: Path, tmp_path: Path) -> None:
    run = home / "run"
    with socket.socket() as theirs:  # someone else's listener on a port
        theirs.bind(("127.0.0.1", 0))
        theirs.listen()
        port = theirs.getsockname()[1]
        serve = (
            "import socket, sys, time; s = socket.socket(); "
            "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True); "
            "time.sleep(120)"
        )
        log = tmp_path / "server.log"
        processes.launch(run, "server", log, [sys.executable, "-c", serve])
        try:
            deadline = time.monotonic() + 20
            while not log.read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.1)
            ours = int(log.read_text().split()[0])
            assert processes.listening(run, "server", ours)
            assert not processes.listening(run, "server", port)  # answers, but not ours
        finally:
            processes.stop(run, "server")
        assert not processes.listening(run, "server", ours)


def test_flow_runs_of_this_stack_are_stopped_and_no_other_process(home: Path) -> None:
    """A flow run lives in a session of its own: found by its environment (this stack's home
    and a flow run id), checked again right before its signal."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ours = subprocess.Popen(sleeper, env={**os.environ, "TRICKFLOW_HOME": str(home),
                                          "PREFECT__FLOW_RUN_ID": "r1"})  # fmt: skip
    other = subprocess.Popen(sleeper, env={**os.environ, "TRICKFLOW_HOME": str(home / "other"),
                                           "PREFECT__FLOW_RUN_ID": "r2"})  # fmt: skip
    try:
        time.sleep(0.3)
        assert processes.flow_runs(str(home)) == [ours.pid]
        assert processes.stop_flow_runs() == "stopped the flow runs the worker had started"
        assert ours.wait(timeout=10) is not None and other.poll() is None
        assert processes.stop_flow_runs() == ""
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()


def test_stop_reaches_the_children_of_a_leader_that_died(home: Path, tmp_path: Path) -> None:
    """A server whose first process died while its workers hold the port: still ours to stop."""
    run = home / "run"
    child = (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(120)']); sys.exit(0)"
    )
    pid = processes.launch(run, "server", tmp_path / "server.log", [sys.executable, "-c", child])
    deadline = time.monotonic() + 20
    while (processes.running(pid) or not processes.members(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    (orphan,) = [
        m for m in processes.members(pid) if processes.running(m)
    ]  # (the leader: a zombie)
    assert not processes.alive(run, "server") and processes.running(orphan)
    assert processes.stop(run, "server") == "stopped"
    assert not processes.running(orphan)


def test_a_member_on_its_way_out_is_waited_for_not_taken_as_gone(
    home: Path, tmp_path: Path, monkeypatch
) -> None:
    """A process that is exiting has given back its memory (its environment reads empty) but
    is not a zombie yet, and may still hold its port: stop waits for it. Seen as a flaky
    `stop` that returned while a member still ran, under load."""
    run = home / "run"
    pid = processes.launch(
        run,
        "server",
        tmp_path / "server.log",
        [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    stack_home = processes.home()
    started = processes.start_time(pid)
    assert processes._live([pid], started, stack_home) == [pid]
    with monkeypatch.context() as patched:
        patched.setattr(processes, "environment", lambda _: {})  # unreadable, memory still there
        assert processes._live([pid], started, stack_home) == []  # another user's: not ours
        patched.setattr(processes, "_memory_gone", lambda _: True)  # as while it exits
        assert processes._live([pid], started, stack_home) == [pid]
    assert processes.stop(run, "server") == "stopped" and not processes.running(pid)
