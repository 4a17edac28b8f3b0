"""The stack's own processes: started, recognised and stopped by who they are, not by a pid alone.

infra/stack.sh starts each long-running process (servers, workers) through `launch`, which
records in `RUN/NAME.pid` (0600) the pid, its start time in clock ticks since boot (field 22 of
/proc/PID/stat), the boot's id and the stack's home. A process is the stack's own only while all
of these hold: the pid exists in this boot with that start time (a recycled pid starts later,
a pid file from before a reboot names another boot), and its environment names this stack's
TRICKFLOW_HOME. `launch` writes the record only after the program has replaced the launcher
(Popen returns after exec), so the check never sees a half-started process as a stranger, and a
slow start is never taken for an exit. Nothing the record does not name is ever signalled: a
decoy process under a recycled pid is left alone, and its pid file is only removed.

    python infra/processes.py launch RUN NAME LOG -- COMMAND...   prints the pid
    python infra/processes.py alive RUN NAME                     exit 0 if ours and running
    python infra/processes.py listening RUN NAME PORT            exit 0 if ours listens on PORT
    python infra/processes.py stop RUN NAME                      TERM, wait, KILL, verify
    python infra/processes.py pid RUN NAME                       the recorded pid, if ours
    python infra/processes.py stop-flow-runs                     end the stack's flow runs

The stack's home is read from TRICKFLOW_HOME in this process's environment (stack.sh exports it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    return BOOT_ID.read_text().strip()


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone.

    The name is in parentheses and may hold spaces or parentheses itself: split after the last.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (None if it is gone)."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of stat, counted after the name


def session(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[3]) if fields else None  # field 6: the session id


def running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has ended


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def home() -> str:
    value = os.environ.get("TRICKFLOW_HOME")
    if not value:
        raise SystemExit("processes.py: TRICKFLOW_HOME is not set (infra/stack.sh sets it)")
    return os.path.realpath(value)


def pid_file(run: Path, name: str) -> Path:
    return run / f"{name}.pid"


def read_record(run: Path, name: str) -> dict | None:
    """The launch record, or None when there is none or it is not one. A plain pid (the format
    before records) is taken for the process only if that process's environment names this
    stack's home, as the stack's own processes always had it: a stack started before can still
    be stopped, and a recycled pid is not."""
    try:
        record = json.loads(pid_file(run, name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if isinstance(record, int) and environment(record).get("TRICKFLOW_HOME") == home():
        return {"pid": record, "start_time": start_time(record), "boot_id": boot_id(),
                "home": home()}  # fmt: skip
    if not isinstance(record, dict) or not {"pid", "start_time", "boot_id", "home"} <= set(record):
        return None
    return record


def is_ours(record: dict | None, stack_home: str) -> bool:
    """The process the record names, still running, in this boot, of this stack."""
    if record is None or record["home"] != stack_home or record["boot_id"] != boot_id():
        return False
    pid = int(record["pid"])
    if start_time(pid) != record["start_time"] or not running(pid):
        return False
    return environment(pid).get("TRICKFLOW_HOME") == stack_home


def alive(run: Path, name: str) -> bool:
    return is_ours(read_record(run, name), home())


def launch(run: Path, name: str, log: Path, command: list[str]) -> int:
    """Starts COMMAND in a session of its own (stopping reaches its children), output appended
    to LOG, and records it. Popen returns once the program runs (or raises if it could not
    start), so the record names the program, never the launcher."""
    stack_home = home()
    env = {**os.environ, "TRICKFLOW_HOME": stack_home}
    with open(log, "ab") as out, open(os.devnull, "rb") as nothing:
        process = subprocess.Popen(
            command, stdin=nothing, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    record = {
        "pid": process.pid,
        "start_time": start_time(process.pid),
        "boot_id": boot_id(),
        "home": stack_home,
    }
    path = pid_file(run, name)
    temporary = path.with_suffix(".pid.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    os.replace(temporary, path)
    # Not waited for: the process outlives this launcher and is reaped by init.
    process.returncode = 0  # keeps Popen's destructor from warning about a running child
    return process.pid


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:PORT (IPv4, or IPv6's mapped and loopback forms)."""
    wanted = {
        f"0100007F:{port:04X}",  # 127.0.0.1, little-endian
        f"0000000000000000FFFF00000100007F:{port:04X}",  # ::ffff:127.0.0.1, as tcp6 shows it
        f"00000000000000000000000001000000:{port:04X}",  # ::1
        f"00000000:{port:04X}",  # 0.0.0.0 also answers on loopback
        f"00000000000000000000000000000000:{port:04X}",
    }
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1] in wanted and fields[3] == "0A":  # 0A: LISTEN
                found.add(fields[9])
    return found


def members(leader: int) -> list[int]:
    """Processes of the session that `leader` started (its children and theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and session(int(entry.name)) == leader:
            found.append(int(entry.name))
    return found


def listening(run: Path, name: str, port: int) -> bool:
    """True when the socket listening on PORT belongs to the recorded process or its session:
    the server that answers there is ours, and our clients' credentials go to it."""
    record = read_record(run, name)
    if not is_ours(record, home()):
        return False
    inodes = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    if not inodes:
        return False
    for pid in members(int(record["pid"])):
        try:
            links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if links & inodes:
            return True
    return False


def _signal_ours(pids: list[int], not_before: int, stack_home: str, sig: int) -> None:
    """Signals each pid that started no earlier than `not_before` (clock ticks since boot) and
    whose environment names this stack's home. Through a pidfd opened before the checks where
    the kernel has them, so the checks and the signal reach the same process even if it exits
    and its pid is reused in between; elsewhere by pid, right after the checks."""
    for pid in pids:
        try:
            descriptor = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        except OSError:  # no pidfd here (an old kernel, a sandbox)
            descriptor = None
        try:
            started = start_time(pid)
            if started is None or started < not_before:
                continue  # older than the process we started: the pid was reused
            if environment(pid).get("TRICKFLOW_HOME") != stack_home:
                continue  # another stack's, or one we cannot read: not ours to end
            if descriptor is None:
                os.kill(pid, sig)
            else:
                signal.pidfd_send_signal(descriptor, sig)
        except OSError:
            pass
        finally:
            if descriptor is not None:
                os.close(descriptor)


def stop(run: Path, name: str, patience: float = 10.0) -> str:
    """Ends the recorded process and its session: TERM, then KILL for what outlives `patience`
    (a worker can ignore the first TERM while it winds down), and checks that all are gone."""
    stack_home = home()
    record = read_record(run, name)
    path = pid_file(run, name)
    if record is None or record["home"] != stack_home or record["boot_id"] != boot_id():
        path.unlink(missing_ok=True)  # stale, or another process's pid by now: not ours
        return "not running"
    # The leader may have died while its children (a server's workers) hold on: the session id
    # stays taken while any member lives, so its members are still the ones we started.
    leader, leader_start = int(record["pid"]), record["start_time"]
    if not is_ours(record, stack_home) and not _live(members(leader), leader_start, stack_home):
        path.unlink(missing_ok=True)
        return "not running"
    outcome = _end(lambda: members(leader), leader_start, stack_home, patience)
    if outcome:
        raise SystemExit(f"{name}: {outcome}")
    path.unlink(missing_ok=True)
    return "stopped"


def _live(pids: list[int], not_before: int, stack_home: str) -> list[int]:
    """The pids still running that are ours: started no earlier than `not_before`, with this
    stack's home in their environment, or on their way out: a process that is exiting gives
    its memory back, environment included, before it becomes a zombie, and it may still hold
    a port or a file until then (so it is waited for, not taken as gone). A process whose
    environment cannot be read but which still has its memory (another user's, one started
    with an empty environment) is not ours."""
    found = []
    for pid in pids:
        if not running(pid) or (start_time(pid) or 0) < not_before:
            continue
        environ = environment(pid)
        if environ.get("TRICKFLOW_HOME") == stack_home or (not environ and _memory_gone(pid)):
            found.append(pid)
    return found


def _memory_gone(pid: int) -> bool:
    """True when the process no longer has an address space (its /proc status lists no VmSize):
    one on its way out (or a kernel thread, which is in no session of ours)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return "\nVmSize:" not in status


def _end(find, not_before: int, stack_home: str, patience: float) -> str:
    """TERM, then KILL for what outlives `patience`; "" once none of `find()` is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_ours(find(), not_before, stack_home, sig)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if not _live(find(), not_before, stack_home):
                return ""
            time.sleep(0.2)
    return f"pids {_live(find(), not_before, stack_home)} would not stop"


def flow_runs(stack_home: str) -> list[int]:
    """Flow-run processes of this stack: the worker starts each in a session of its own (so
    stopping the worker misses them); their environment names this stack and a flow run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            environ = environment(int(entry.name))
            if environ.get("TRICKFLOW_HOME") == stack_home and "PREFECT__FLOW_RUN_ID" in environ:
                found.append(int(entry.name))
    return found


def stop_flow_runs(patience: float = 10.0) -> str:
    """Ends this stack's flow runs (TERM, wait, KILL), each checked by its environment and
    start time just before its signal; "" when there were none."""
    stack_home = home()
    if not flow_runs(stack_home):
        return ""
    outcome = _end(lambda: flow_runs(stack_home), 0, stack_home, patience)
    if outcome:
        raise SystemExit(f"flow runs: {outcome}")
    return "stopped the flow runs the worker had started"


def main(argv: list[str]) -> int:
    if argv[:1] == ["stop-flow-runs"]:
        said = stop_flow_runs()
        if said:
            print(said)
        return 0
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    action, run, name = argv[0], Path(argv[1]), argv[2]
    if action == "launch":
        if len(argv) < 6 or argv[4] != "--":
            raise SystemExit("usage: processes.py launch RUN NAME LOG -- COMMAND...")
        print(launch(run, name, Path(argv[3]), argv[5:]))
        return 0
    if action == "alive":
        return 0 if alive(run, name) else 1
    if action == "listening":
        return 0 if listening(run, name, int(argv[3])) else 1
    if action == "pid":
        record = read_record(run, name)
        if not is_ours(record, home()):
            return 1
        print(record["pid"])
        return 0
    if action == "stop":
        outcome = stop(run, name)
        if outcome == "stopped":
            print(f"stopped {name}")
        return 0
    raise SystemExit(f"processes.py: unknown action {action!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
