"""A private PostgreSQL cluster on a free loopback port, for tests that crash and restart it (never the shared one)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """initdb into a temporary directory, then start, crash (`stop -m immediate`) and start again on one port."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        # PostgreSQL refuses to run as root: run it as the `postgres` user, in a directory that user owns (the
        # test's tmp_path sits under a root-only directory).
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="sbtest-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}\n{log}")
        return result

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def crash(self) -> None:
        """Stop every server process at once, without a checkpoint: on start, PostgreSQL recovers from its WAL."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def private_postgres() -> Iterator[PostgresServer]:
    """Body of a fixture: a started private cluster, destroyed afterwards; skipped where none can be started."""
    bin_dir = _bin_dir()
    reason = None
    if bin_dir is None:
        reason = "no PostgreSQL server binaries (initdb, pg_ctl) found"
    elif os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        reason = "running as root without a `postgres` user and runuser to start PostgreSQL as"
    if reason:
        _unavailable(reason)
    server = PostgresServer(bin_dir)
    try:
        try:
            server.init()
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _unavailable(f"could not start a private PostgreSQL: {exc}")
        yield server
    finally:
        server.destroy()


def _unavailable(reason: str) -> None:
    if os.environ.get("SUPPORT_BOT_TEST_REQUIRE_ALL"):
        pytest.fail(f"a private PostgreSQL is required: {reason}")
    pytest.skip(reason)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
