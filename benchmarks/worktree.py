"""The code of an earlier commit, beside the current code, for a before/after in one run.

    with checkout("0ee774d", tmp) as tree:
        print(run_python(tree, "import pg_sync_assets; print('loaded')", env))

`checkout` adds a detached git worktree under `tmp` and removes it afterwards;
`run_python` runs code in a fresh interpreter that imports the package from that tree.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def checkout(revision: str, tmp: Path) -> Iterator[Path]:
    tree = tmp / f"before-{revision}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), revision], cwd=REPO, check=True, capture_output=True
    )
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def run_python(tree: Path, code: str, env: dict, *args: str, timeout: float = 600) -> str:
    """The last line `code` prints, run with `tree` first on the path."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout.strip().splitlines()[-1]
