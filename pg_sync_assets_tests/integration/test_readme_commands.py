"""Every command in the `bash` blocks of the README and of docs/, run exactly as written.

`bash scripts/demo` starts a demo of its own (PG_SYNC_DEMO_DIR keeps it apart from a
developer's), then each command runs in a fresh bash after the blocks' `source` and
`eval` lines, in order (the README, then the docs pages in `DOCS` order), and must exit
0. `dg dev` must answer on its port. `bash scripts/test` is what CI runs (`.ci/run`).
Other blocks (yaml, python, text) are examples, not commands.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# Pages with commands come first; every page of docs/ is read.
DOCS = ["operations.md"]
SETUP = ("source ", "eval ")


def documented_pages() -> list[Path]:
    pages = [REPO / "docs" / name for name in DOCS]
    return [README, *pages, *sorted(p for p in (REPO / "docs").glob("*.md") if p not in pages)]


def readme_commands() -> list[str]:
    """The command lines of every ```bash block of the README and docs/, trailing comments removed."""
    text = "\n".join(page.read_text(encoding="utf-8") for page in documented_pages())
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    lines = [re.sub(r"\s{2,}#.*$", "", line).strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _bash(script: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _serves(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            time.sleep(1)
    return False


def _ui(prelude: str, command: str, env: dict) -> None:
    assert _port_free(3000), "port 3000 is taken: stop whatever serves it to run this test"
    server = subprocess.Popen(["bash", "-c", f"{prelude}\n{command}"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _serves("http://127.0.0.1:3000/server_info", 120), f"{command} never answered on port 3000"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _check_processes(command: str, log: str) -> None:
    """One table: its one step runs in the run's own process; several tables (sync_all):
    a process per step, from the fork server (`executor.py`)."""
    if command.startswith("dagster asset materialize") and "--select orders " in command + " ":
        assert "Executing steps in process" in log, command
        assert "multiprocess executor" not in log, command
    if command.startswith("dagster job execute") and command.split("#")[0].split()[-1] == "sync_all":
        assert "Executing steps using multiprocess executor" in log, command
        assert "STEP_WORKER_STARTED" in log, command


def test_the_readme_documents_the_commands_this_test_runs():
    commands = readme_commands()
    assert commands[:2] == ["bash scripts/demo", "bash scripts/test"]
    assert "bash scripts/test" in (REPO / ".ci" / "run").read_text()
    assert any(c.startswith("dagster job execute") for c in commands)
    # the commands `_check_processes` looks at
    assert "dagster asset materialize -m pg_sync_assets.definitions --select orders" in commands
    assert "dagster job execute -m pg_sync_assets.definitions -j sync_all" in commands


def test_every_readme_command_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG_SYNC_", "DAGSTER_"))}
    env.update(PG_SYNC_DEMO_DIR=str(tmp_path / "demo"), CI="true")
    commands = readme_commands()
    try:
        started = _bash("bash scripts/demo", env, timeout=600)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        prelude = "\n".join(c for c in commands if c.startswith(SETUP))
        for command in commands:
            if command in ("bash scripts/demo", "bash scripts/test") or command.startswith(SETUP):
                continue
            if command == "dg dev":
                _ui(prelude, command, env)
                continue
            done = _bash(f"set -e\n{prelude}\n{command}", env)
            assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
            _check_processes(command, done.stderr)
    finally:
        stopped = _bash("bash scripts/demo stop", env)
    assert stopped.returncode == 0 and "demo servers stopped" in stopped.stdout


def test_the_readme_stays_a_front_door_and_the_docs_cite_no_commits_or_issues():
    """The README is read in ten minutes; figures are dated and name their command, never
    a commit hash or an issue number (which mean nothing to a reader of a clone)."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300
    for page in documented_pages():
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\bissue #?\d+", text, re.I), page
        assert not re.search(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12}\b", text), page
        for link in re.findall(r"\]\(([^)#]+\.md)", text):  # links between pages resolve
            assert (page.parent / link).exists(), (page, link)
