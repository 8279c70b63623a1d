"""An earlier commit of this repository, checked out beside it, to run as the baseline of a
benchmark in the same run (same machine, same moment: the ratio is what is compared).

    with baseline_tree("HEAD~3") as tree:   # a git worktree in a temporary directory
        start_proxy(..., cwd=tree)          # `python -m bench.serve` of that commit's code

The process runs with the tree as its working directory, so ``python -m`` imports that
commit's ``proxy`` and ``bench`` packages (the working directory comes first on ``sys.path``)
with this checkout's virtualenv: a baseline must install with the same dependencies.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def baseline_tree(ref: str) -> Iterator[Path]:
    """``ref`` checked out (detached) in a temporary worktree, removed afterwards."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = Path(tempfile.mkdtemp(prefix=f"profilo-baseline-{sha[:10]}-")) / "tree"
    _git("worktree", "add", "--detach", "--force", str(path), sha)
    print(f"baseline: {ref} = {sha[:10]} ({_git('log', '-1', '--format=%s', sha)[:70]})")
    try:
        yield path
    finally:
        _git("worktree", "remove", "--force", str(path))
