"""Throwaway PostgreSQL servers for the demo, the test suite and the benchmarks.

Each server lives in its own temporary directory, listens on 127.0.0.1 at a free port
with trust authentication, and is removed when stopped. PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` OS user (created by Debian's
`postgresql` package). Nothing here imports dagster; nothing here is used in production.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVER_OS_USER = "postgres"


class ServerSetupError(RuntimeError):
    """A throwaway server could not be installed, initialised or started."""


def find_bindir() -> Path:
    """The newest PostgreSQL server bin directory on this machine."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise ServerSetupError(
        "no PostgreSQL server found (initdb is missing); install it with "
        "`apt-get install -y postgresql` (scripts/ensure-postgres does this)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", SERVER_OS_USER, "--", *cmd]


@dataclass
class LocalServer:
    """One running throwaway server; `url` connects as the superuser `postgres`."""

    name: str
    port: int
    root: Path
    bindir: Path
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True)
        if done.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise ServerSetupError(
                f"`{' '.join(cmd)}` failed for the {self.name} server "
                f"(exit {done.returncode}): {done.stderr.strip()}\n{log}"
            )

    def start(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            **self.settings,
        }
        conf = "".join(f"{k} = '{v}'\n" for k, v in options.items())
        with open(self.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as f:
            f.write(conf)
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def shutdown(self) -> None:
        """Stop the server process, keeping its files."""
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]
                ),
                capture_output=True,
            )

    def stop(self) -> None:
        """Stop the server and remove everything it wrote."""
        self.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server(
    name: str, settings: dict[str, str] | None = None, base_dir: str | None = None
) -> LocalServer:
    """Initialise and start one throwaway server named `name` (source, target...)."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix=f"pg_sync_{name}_", dir=base_dir))
    if os.geteuid() == 0:
        shutil.chown(root, SERVER_OS_USER, SERVER_OS_USER)
        os.chmod(root, 0o700)
    last_error: ServerSetupError | None = None
    for _ in range(3):  # a free port can be taken between probing and binding
        server = LocalServer(name, _free_port(), root, bindir, dict(settings or {}))
        try:
            server.start()
            return server
        except ServerSetupError as exc:
            last_error = exc
            server.shutdown()
            shutil.rmtree(server.datadir, ignore_errors=True)
            time.sleep(0.2)
    shutil.rmtree(root, ignore_errors=True)
    assert last_error is not None
    raise last_error


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (`timeout`, `kill`) into SystemExit, so `finally: server.stop()` runs
    and no throwaway server outlives the script that started it."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
