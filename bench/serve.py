"""Run ``profilo`` (``proxy.cli.main``) in this process, for the benchmarks.

    python -m bench.serve --data-dir D serve --port P

Exactly ``profilo serve`` (same uvicorn settings), plus two bench-only switches in the
environment:

- ``BENCH_CPROFILE=FILE``: run under cProfile and write the stats to FILE on exit (SIGINT).
- When ``proxy.store.index`` does not exist yet (it is being written), a no-op stand-in is
  installed so that the pass-through path can still be measured; a line in the log says so.
  Memory benchmarks refuse to run in that case.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

STUB_NOTE = "BENCH: proxy.store.index missing, using a no-op stand-in (pass-through only)"


def index_available() -> bool:
    return importlib.util.find_spec("proxy.store.index") is not None


def install_index_stub() -> None:
    class FactIndex:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def query(self, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
            return []

        def upsert(self, *args: Any, **kwargs: Any) -> None:
            pass

        def delete(self, *args: Any, **kwargs: Any) -> None:
            pass

        def drop_scope(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

    module = types.ModuleType("proxy.store.index")
    module.FactIndex = FactIndex  # type: ignore[attr-defined]
    sys.modules["proxy.store.index"] = module
    print(STUB_NOTE, file=sys.stderr, flush=True)


def main() -> int:
    if not index_available():
        install_index_stub()
    from proxy.cli import main as cli_main

    out = os.environ.get("BENCH_CPROFILE")
    if not out:
        return cli_main(sys.argv[1:])
    import cProfile

    prof = cProfile.Profile()
    try:
        return int(prof.runcall(cli_main, sys.argv[1:]) or 0)
    finally:
        prof.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main())
