"""Process supervision for loadtest/: start a child, wait until it is ready, stop it by PID.

`loadtest.procs` (benchmarks, e2e tests, the checker), `loadtest.mesh` (make run, make stop) and
`loadtest.faults.rig` (the fault suite) start and stop their processes through this module:

- `spawn(cmd, output=...)`: the output appended to a log file, handed line by line to a callback
  (prefixed logs), or dropped; optionally in a session (and process group) of its own, so that a
  terminal's Ctrl-C reaches only the runner; optionally with SIGTERM when the runner dies even by
  SIGKILL (`setpriv --pdeathsig`); optionally its PID written to a PID file.
- `wait_until(ready, what, timeout, watch=...)`: poll until ready. `NotReady` when a watched
  process exits first, `TimedOut` (also a TimeoutError) when the time is up, `Interrupted` when a
  stop is asked for. `wait_ready` also stops the process when it never gets ready.
- `stop(targets, timeout)`: by PID, never by name: SIGTERM (with SIGCONT: a paused process cannot
  act on SIGTERM), up to `timeout` seconds, then SIGKILL. A target is a `Popen` of ours (reaped
  here) or a `Pid`: a PID with the process's start time, so a reused PID is never signalled.
- PID files (`pid_file`, `read_pid_files`) and signal handlers (`signals_handled`,
  `exit_on_signals`): what a runner needs to clean up on a signal and to stop a run left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

STOP_TIMEOUT = 10.0  # seconds a process gets after SIGTERM before SIGKILL
KILL_TIMEOUT = 5.0  # seconds a process gets to vanish after SIGKILL
TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Proc = subprocess.Popen[Any]
Handler = Callable[[int, FrameType | None], Any]


class NotReady(RuntimeError):
    """A process did not become ready: it exited first, or (TimedOut) the time was up."""


class TimedOut(NotReady, TimeoutError):
    """The time was up before the process became ready."""


class Interrupted(Exception):
    """A stop was asked for (a signal) while waiting for a process to become ready."""


# --- processes by PID -----------------------------------------------------------------------------


def _proc(pid: int, name: str) -> str:
    """/proc/PID/NAME, NUL bytes as spaces ("" if there is no such process)."""
    try:
        raw = Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc/PID/stat, None if there is no such process."""
    raw = _proc(pid, "stat")
    if not raw:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), None if gone."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def cmdline(pid: int) -> str:
    """The process's command line, arguments separated by spaces ("" if gone)."""
    return _proc(pid, "cmdline")


def alive(pid: int) -> bool:
    """Does `pid` run? A zombie (exited, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    return stat is None or stat[0] != "Z"


@dataclass(frozen=True)
class Pid:
    """A process named by PID and start time: a later process that reuses the PID is not it."""

    pid: int
    start: int | None

    @classmethod
    def of(cls, pid: int) -> Pid:
        return cls(pid, start_time(pid))

    def running(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.start and stat[0] != "Z"


Target = Proc | Pid


def _running(target: Target) -> bool:
    return target.poll() is None if isinstance(target, subprocess.Popen) else target.running()


def _signal(target: Target, sig: signal.Signals) -> None:
    if not _running(target):  # also reaps a Popen: its PID is never signalled once reused
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(target.pid, sig)


def _wait_gone(targets: list[Target], timeout: float) -> list[Target]:
    """Those of `targets` still running after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        targets = [t for t in targets if _running(t)]
        if not targets or time.monotonic() >= deadline:
            return targets
        time.sleep(0.05)


def stop(
    targets: Target | Iterable[Target],
    timeout: float = STOP_TIMEOUT,
    on_kill: Callable[[int], None] | None = None,
) -> None:
    """Stop these processes together: SIGTERM and SIGCONT, up to `timeout` seconds for them to
    exit, then SIGKILL (at once when `timeout` is 0). `on_kill(pid)` hears of each one that had
    to be killed. A Popen is reaped; a Pid no longer running what it recorded is left alone."""
    if isinstance(targets, subprocess.Popen | Pid):
        targets = [targets]
    live = [t for t in targets if _running(t)]
    if timeout > 0:
        for t in live:
            _signal(t, signal.SIGTERM)
            _signal(t, signal.SIGCONT)
        live = _wait_gone(live, timeout)
    for t in live:
        if on_kill is not None:
            on_kill(t.pid)
        _signal(t, signal.SIGKILL)
    _wait_gone(live, KILL_TIMEOUT)


# --- starting and waiting -------------------------------------------------------------------------


def spawn(
    cmd: Sequence[str],
    *,
    output: Path | Callable[[str], None] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    session: bool = False,
    die_with_parent: bool = False,
    pid_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` (stdin /dev/null) and return at once.

    `output` (stdout and stderr together): a Path to append to; a callable, called with each
    line (decoded, without its newline) from a thread of its own; None to drop it. `env`: variables
    added to ours. `session`: a session and process group of its own (a terminal's Ctrl-C does not
    reach it). `die_with_parent`: SIGTERM when this process dies (Linux, with setpriv). `pid_file`:
    where to write its PID.
    """
    argv = list(cmd)
    setpriv = shutil.which("setpriv") if die_with_parent and sys.platform == "linux" else None
    if setpriv is not None:
        argv = [setpriv, "--pdeathsig", "TERM", *argv]
    with contextlib.ExitStack() as stack:
        stdout: int | IO[bytes]
        if isinstance(output, Path):
            stdout = stack.enter_context(open(output, "ab"))  # the child keeps its own copy
        elif output is None:
            stdout = subprocess.DEVNULL
        else:
            stdout = subprocess.PIPE
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            start_new_session=session,
        )
    if pid_file is not None:
        pid_file.write_text(f"{proc.pid}\n")
    if callable(output) and proc.stdout is not None:
        threading.Thread(target=_pump, args=(proc.stdout, output), daemon=True).start()
    return proc


def _pump(stream: IO[bytes], line: Callable[[str], None]) -> None:
    with stream:
        for raw in iter(stream.readline, b""):
            line(raw.decode("utf-8", "replace").rstrip("\n"))


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Does GET url answer 200?"""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    what: str | Callable[[], str],
    timeout: float,
    *,
    watch: Mapping[str, Proc | None] | None = None,
    stopping: threading.Event | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `ready()` every `interval` seconds until it is true.

    `what` says what is awaited ("node1 to answer"; a callable is asked when it fails). NotReady
    when a process of `watch` (name: process) exits first, TimedOut after `timeout` seconds,
    Interrupted as soon as `stopping` is set.
    """
    deadline = time.monotonic() + timeout
    while True:
        if stopping is not None and stopping.is_set():
            raise Interrupted
        for name, proc in (watch or {}).items():
            if proc is not None and proc.poll() is not None:
                raise NotReady(
                    f"{name} exited with status {proc.returncode} while waiting for {_text(what)}"
                )
        if ready():
            return
        if time.monotonic() > deadline:
            raise TimedOut(f"waited {timeout:g}s for {_text(what)}")
        if stopping is not None:
            stopping.wait(interval)
        else:
            time.sleep(interval)


def _text(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


def wait_ready(
    proc: Proc, ready: Callable[[], bool], what: str, timeout: float, interval: float = 0.05
) -> None:
    """`wait_until` ready while `proc` runs; if it never gets ready, stop it and raise."""
    try:
        wait_until(ready, what, timeout, watch={f"PID {proc.pid}": proc}, interval=interval)
    except BaseException:
        stop(proc)
        raise


# --- PID files and signals ------------------------------------------------------------------------


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[None]:
    """This process's PID in `path` while the block runs."""
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def read_pid_files(directory: Path) -> list[tuple[Path, int]]:
    """(file, PID) for every *.pid file in `directory`; an unreadable one is removed."""
    out = []
    for path in sorted(directory.glob("*.pid")):
        try:
            out.append((path, int(path.read_text().strip())))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def signals_handled(handler: Handler, signals: Iterable[int] = TERMINATING) -> Iterator[None]:
    """`handler` for these signals while the block runs; the previous handlers after."""
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def exit_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP unwind the main thread (KeyboardInterrupt, SystemExit(128+N)),
    so that `with` blocks and `finally` clauses stop what they started."""

    def raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_exit)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
