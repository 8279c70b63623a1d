"""A shortlist for a scope view's exact nearest-neighbour search, read from int8 codes.

A 10k-fact scope's fp32 vectors are 15 MiB: one cosine scan over them is bound by memory
bandwidth (0.55 ms alone, 1.6 ms in a busy server whose caches the embedding model just
evicted). Each row is also held as int8 codes, one scale per row (a quarter of the bytes), and
the scan reads those through onnxruntime's integer matrix product. Each approximate cosine
carries a proven bound on its error, so the shortlist holds every row that could be among the
``n`` best exact cosines. The view then scores the shortlist exactly in fp32 and ranks it as
before: the answer is the exact search's answer, not an approximation of it.

For a unit query q and a unit row v, with v' and q' their dequantized codes,
``v.q = v'.q' + v'.(q - q') + (v - v').q'  + (v - v').(q - q')``, so
``|v.q - v'.q'| <= |v'| |q - q'| + |v - v'| (|q'| + |q - q'|)``; every norm is known (the rows'
when they are written, the query's per call). The query is quantized to 7 bits, so no pair
of products can saturate the int16 lanes of AVX2 kernels without VNNI.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

#: Below this many rows the fp32 scan is cheap and cache-resident: no shortlist.
MIN_ROWS = 2048
#: A shortlist longer than this share of the rows saves nothing: scan everything.
MAX_SHARE = 0.25
_QUERY_LEVELS = 63  # 7 bits
_ROW_LEVELS = 127
_ZERO = 128  # uint8 codes are int8 codes + 128 (onnxruntime's fast path is uint8 x int8)
_SLACK = 1e-4  # fp32 rounding of the scores on both sides, far below the bounds (~0.03)


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    """One onnxruntime session per process: ``codes`` (uint8 [rows, dim]) x ``query``
    (int8 [dim, 1]) -> int32 [rows, 1], on the calling thread."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from proxy.store.embedder import session_options

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["codes", "query"], ["dots"])],
        "int8-scan",
        [
            helper.make_tensor_value_info("codes", TensorProto.UINT8, ["rows", "dim"]),
            helper.make_tensor_value_info("query", TensorProto.INT8, ["dim", 1]),
        ],
        [helper.make_tensor_value_info("dots", TensorProto.INT32, ["rows", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(
        model.SerializeToString(),
        sess_options=session_options(1),
        providers=["CPUExecutionProvider"],
    )


def warm() -> None:
    """Build the session now (~10 ms), not on the first large scope's lookup."""
    _session()


class Int8Rows:
    """int8 codes of a view's unit vectors, row for row with its fp32 matrix."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._codes = np.full((0, dim), _ZERO, dtype=np.uint8)
        self._scale = np.zeros(0, dtype=np.float32)
        # The largest |v'| and |v - v'| of any row written so far: one bound for every row
        # (per-row norms vary by a fraction of a percent; a bound needs no exact maximum).
        self._max_norm = 0.0
        self._max_resid = 0.0

    @property
    def nbytes(self) -> int:
        return self._codes.nbytes + self._scale.nbytes

    def resize(self, capacity: int) -> None:
        """Room for ``capacity`` rows (the rows so far kept)."""
        keep = min(capacity, self._codes.shape[0])
        codes = np.full((capacity, self._dim), _ZERO, dtype=np.uint8)
        codes[:keep] = self._codes[:keep]
        self._codes = codes
        scale = np.zeros(capacity, dtype=np.float32)
        scale[:keep] = self._scale[:keep]
        self._scale = scale

    def set(self, row: int, unit: np.ndarray) -> None:
        vec = np.asarray(unit, dtype=np.float64)
        peak = float(np.max(np.abs(vec))) if vec.size else 0.0
        if peak == 0.0:
            self.clear(row)
            return
        scale = peak / _ROW_LEVELS
        codes = np.clip(np.rint(vec / scale), -_ROW_LEVELS, _ROW_LEVELS)
        dequant = codes * scale
        self._codes[row] = (codes + _ZERO).astype(np.uint8)
        self._scale[row] = scale
        self._max_norm = max(self._max_norm, float(np.linalg.norm(dequant)))
        self._max_resid = max(self._max_resid, float(np.linalg.norm(vec - dequant)))

    def clear(self, row: int) -> None:
        self._codes[row] = _ZERO
        self._scale[row] = 0.0

    def shortlist(self, query: np.ndarray, live: np.ndarray, n: int) -> np.ndarray | None:
        """Rows (ascending) among the first ``len(live)`` that may hold the ``n`` best exact
        cosines to the unit ``query`` among the ``live`` ones; None: too few rows, or too
        long a list, for a shortlist to pay (scan them all)."""
        rows = live.shape[0]
        if rows < MIN_ROWS or n <= 0 or np.count_nonzero(live) <= n:
            return None
        q = np.asarray(query, dtype=np.float64)
        peak = float(np.max(np.abs(q)))
        if not math.isfinite(peak) or peak == 0.0:
            return None
        step = peak / _QUERY_LEVELS
        codes = np.clip(np.rint(q / step), -_QUERY_LEVELS, _QUERY_LEVELS)
        q_err = float(np.linalg.norm(q - codes * step))
        q_norm = float(np.linalg.norm(codes * step))
        query_codes = codes.astype(np.int8).reshape(-1, 1)
        (dots,) = _session().run(None, {"codes": self._codes[:rows], "query": query_codes})
        shift = _ZERO * int(query_codes.sum(dtype=np.int64))
        # In units of the query step: approx = v'.q' / step.
        approx = (dots[:, 0] - shift) * self._scale[:rows]
        approx[~live] = -np.inf
        bound = (self._max_norm * q_err + self._max_resid * (q_norm + q_err) + _SLACK) / step
        kth = np.partition(approx, rows - n)[rows - n]  # the n-th best approximation
        picked = np.flatnonzero(approx >= kth - 2 * bound)
        return None if picked.size > MAX_SHARE * rows else picked
