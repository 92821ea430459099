"""Fixtures: a real lse_server on a free port over a temp data dir.

The server binary is not built here: it is taken from ``LSE_SERVER_BIN``, or
else ``target/release/lse_server`` in the repo root, or else
``target/debug/lse_server`` (``scripts/test-python`` builds the release one).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

PYTHON_DIR = Path(__file__).resolve().parent.parent  # client/python
REPO_ROOT = PYTHON_DIR.parent.parent
sys.path.insert(0, str(PYTHON_DIR))

from lse_client import LseClient  # noqa: E402

LISTENING = re.compile(r"^lse_server listening on (\S+)$")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def server_binary() -> Path:
    env = os.environ.get("LSE_SERVER_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"LSE_SERVER_BIN={env} is not a file")
        return path
    for profile in ("release", "debug"):
        path = REPO_ROOT / "target" / profile / "lse_server"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "no lse_server binary: set LSE_SERVER_BIN or run "
        "`cargo build --release --bin lse_server` (scripts/test-python does)"
    )


class ServerProcess:
    """One lse_server process over ``data_dir``; start() and stop() may be
    repeated to restart it on the same directory."""

    def __init__(self, binary: Path, data_dir: Path, extra_args: Optional[List[str]] = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.extra_args = list(extra_args or [])
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None
        self.port: Optional[int] = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-server-{self.starts}.log"

    def start(self) -> str:
        assert self.proc is None, "already running"
        self.starts += 1
        log = open(self.log_path, "wb")
        cmd = [str(self.binary), "--port", "0", "--data-dir", str(self.data_dir), *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        line = self._read_line(START_TIMEOUT)
        match = LISTENING.match(line)
        if not match:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise RuntimeError(f"unexpected first line from lse_server: {line!r}; log:\n{self.log_text()}")
        self.address = match.group(1)
        self.port = int(self.address.rsplit(":", 1)[1])
        return self.address

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise TimeoutError(f"lse_server did not print its address in {timeout} s; log:\n{self.log_text()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait()
                    self.proc = None
                    raise RuntimeError(f"lse_server exited with {code} before listening; log:\n{self.log_text()}")
                buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def stop(self) -> int:
        """SIGTERMs the server and returns its exit code."""
        assert self.proc is not None, "not running"
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdout:
                proc.stdout.close()
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def server_bin() -> Path:
    return server_binary()


@pytest.fixture(scope="session")
def server(server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the session's tests (they use their own ids)."""
    srv = ServerProcess(server_bin, tmp_path_factory.mktemp("shared") / "data")
    srv.start()
    yield srv
    if srv.proc is not None:
        assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="session")
def address(server: ServerProcess) -> str:
    assert server.address is not None
    return server.address


@pytest.fixture
def lse(address: str) -> Iterator[LseClient]:
    with LseClient(address) as client:
        yield client


@pytest.fixture
def make_server(server_bin: Path, tmp_path: Path) -> Iterator:
    """Starts servers of the test's own, with extra flags; stops them after."""
    started: List[ServerProcess] = []

    def make(*extra_args: str) -> ServerProcess:
        srv = ServerProcess(server_bin, tmp_path / f"data{len(started)}", list(extra_args))
        started.append(srv)
        srv.start()
        return srv

    yield make
    for srv in started:
        if srv.proc is not None:
            assert srv.stop() == 0, srv.log_text()


@pytest.fixture
def own_server(make_server) -> ServerProcess:
    """A server of the test's own (for restarts and whole-store checks)."""
    return make_server()
