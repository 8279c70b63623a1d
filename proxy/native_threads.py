"""The server process's native thread pools.

NumPy's OpenBLAS starts one worker thread per core and splits a matrix product across them
when it is large enough; after each product its workers spin, waiting for the next. The
proxy's products are small (a query against a view's shortlist, a few dozen candidates) and
its concurrency comes from requests, so a second BLAS thread only burned the other core:
~2.5 ms of CPU per memory request at 10k facts (one in six of the request's CPU), for no
latency gained. ``profilo serve`` runs BLAS on the calling thread (threadpoolctl, whatever the
import order); onnxruntime's threads are set per session (``proxy/store/embedder.py``).
"""

from __future__ import annotations


def limit_blas_threads() -> None:
    """Run every BLAS library loaded in this process (NumPy's included) on one thread."""
    import numpy  # noqa: F401  (loads OpenBLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def blas_threads() -> int:
    """The largest thread count of the BLAS libraries loaded in this process (NumPy's
    loaded first)."""
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_info

    counts = [int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(counts, default=1)
