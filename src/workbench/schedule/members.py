"""Which requests each run of a simulated schedule serves, kept as two numbers per request.

The engine's paper-mode runs do not carry their ``request_ids`` text: a
request is prefilled in one run and decodes in every decode run of its client
up to the one it finishes in, so two run positions per request say it all.
:class:`RunMembers` lists the text of any slice of runs on demand, in Arrow
(no Python work per run or per id), so an export of a million requests
builds the ids chunk by chunk instead of holding them all.
"""

from __future__ import annotations

import numpy as np


#: Runs listed at a time when the ids of many runs are asked for at once.
SLICE_RUNS = 1 << 15


class RunMembers:
    """The members of every run of a schedule whose runs are sorted by client, then time.

    Parameters
    ----------
    request_ids:
        Each request's id as text, in trace order (the order ids are listed in): a sequence, a
        pandas Series or an Arrow string array.
    first_run, last_run:
        Per request, the position (in the sorted runs) of the prefill run that
        admitted it and of the run it finished in; ``first_run <= last_run``.
    decode:
        Per run, whether it is a decode run.  A prefill run lists the requests
        it admits; a decode run lists every request of its client admitted in an
        earlier run and finished in it or a later one.
    """

    def __init__(self, request_ids, first_run: np.ndarray, last_run: np.ndarray, decode: np.ndarray) -> None:
        import pyarrow as pa

        ids = request_ids if isinstance(request_ids, (pa.Array, pa.ChunkedArray)) else pa.array(
            request_ids, type=pa.string(), from_pandas=True)
        self._ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        self._first = np.asarray(first_run, dtype=np.int64)
        self._last = np.asarray(last_run, dtype=np.int64)
        self._decode = np.asarray(decode, dtype=bool)
        if not (len(self._ids) == len(self._first) == len(self._last)):
            raise ValueError("request_ids, first_run and last_run must have one entry per request")
        if len(self._first) and (self._first > self._last).any():
            raise ValueError("a request finishes before the run that admits it")
        # Requests by admitting run, so a slice of runs touches only the requests that can be in it.
        self._by_first = np.argsort(self._first, kind="stable")
        self._first_sorted = self._first[self._by_first]
        # A request stays in runs up to this far past its admission; bounds the look-back of a slice.
        self._span = int((self._last - self._first).max()) if len(self._first) else 0
        # Decode runs numbered on their own: a request decodes in a contiguous range of those numbers.
        self._decode_at = np.flatnonzero(self._decode)
        self._decodes_before = np.concatenate([[0], np.cumsum(self._decode)])

    def __len__(self) -> int:
        return len(self._decode)

    def pairs(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """``(run, request)`` for every request listed in runs ``lo..hi-1``, by run, then trace order."""
        lo, hi = max(int(lo), 0), min(int(hi), len(self._decode))
        if hi <= lo:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # Candidates: admitted before `hi`, and not so long before `lo` that they must have finished.
        a = int(np.searchsorted(self._first_sorted, lo - self._span, side="left"))
        b = int(np.searchsorted(self._first_sorted, hi, side="left"))
        cand = self._by_first[a:b]
        cand = cand[self._last[cand] >= lo]
        first, last = self._first[cand], self._last[cand]
        # Its decode runs: those after its admission, up to its last run, clipped to the slice.
        d_lo = self._decodes_before[np.maximum(first + 1, lo)]
        d_hi = self._decodes_before[np.minimum(last, hi - 1) + 1]
        count = np.maximum(d_hi - d_lo, 0)
        total = int(count.sum())
        decode_run = self._decode_at[np.repeat(d_lo - np.cumsum(count) + count, count)
                                     + np.arange(total, dtype=np.int64)]
        admitted = (first >= lo) & (first < hi)  # and the prefill run that admits it, when in the slice
        run = np.concatenate([decode_run, first[admitted]])
        request = np.concatenate([np.repeat(cand, count), cand[admitted]])
        # One sort of (run, request) packed in an int64 (numpy's SIMD sort), not a stable argsort.
        n = max(len(self._first), 1)
        run, request = np.divmod(np.sort((run - lo) * n + request), n)
        return run + lo, request

    def arrow(self, lo: int, hi: int):
        """The space-separated ids of runs ``lo..hi-1`` as an Arrow string array."""
        import pyarrow as pa
        import pyarrow.compute as pc

        lo, hi = max(int(lo), 0), min(int(hi), len(self._decode))
        run, request = self.pairs(lo, hi)
        offsets = np.zeros(max(hi - lo, 0) + 1, dtype=np.int64)
        np.cumsum(np.bincount(run - lo, minlength=max(hi - lo, 0)), out=offsets[1:])
        words = self._ids.take(pa.array(request))
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), words)
        return pc.binary_join(lists, " ")

    def text(self, lo: int = 0, hi: int | None = None):
        """The ids of runs ``lo..hi-1`` as a pandas array of text (what a pandas column holds).

        Listed a slice of :data:`SLICE_RUNS` runs at a time, so the temporary (run, request) pairs
        stay small whatever the schedule's size.
        """
        import pyarrow as pa

        hi = len(self) if hi is None else min(int(hi), len(self))
        lo = max(int(lo), 0)
        parts = [self.arrow(a, min(a + SLICE_RUNS, hi)) for a in range(lo, hi, SLICE_RUNS)]
        whole = pa.concat_arrays(parts) if parts else pa.array([], type=pa.string())
        return whole.to_pandas().array

    def __call__(self):
        """The ids of every run: what :attr:`workbench.schedule.Schedule.runs` puts in its column."""
        return self.text()
