"""Solver-free heuristics for minimizing-makespan bin packing (MODEL.md section 5).

All work on a weight matrix ``W`` of shape ``(requests, clients)``: ``W[i, j]``
is request i's load in seconds on client j (the additive weight ``w_i`` of
MODEL.md section 3, with client j's batch size and cost model).  Identical
clients have identical columns.  Each function returns an assignment (an int
array, request -> client); :func:`loads_s` turns it into client loads.

* :func:`lpt` - longest processing time first: requests by decreasing weight,
  each to the client where it would finish earliest.  Graham's bound: at most
  ``4/3 - 1/(3m)`` times optimal on identical clients.
* :func:`kk` - Karmarkar-Karp largest differencing, m-way (identical clients).
  Much better than LPT when there are many small requests per client.
* :func:`local_search` - moves and pairwise swaps out of the most loaded
  client until none lowers it; deterministic, vectorised with numpy.
* :func:`mmbp_lower_bound` - the closed-form bound on the bin-packing optimum
  (never an incumbent), so every heuristic result carries a proven gap.

Everything is deterministic: ties go to the lowest index.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np


def identical_columns(W: np.ndarray) -> bool:
    """True when every client sees the same weights (identical clients)."""
    return bool(np.all(W == W[:, :1]))


def client_groups(W: np.ndarray) -> list[list[int]]:
    """Clients grouped by identical weight columns, in index order (for symmetry breaking)."""
    groups: dict[bytes, list[int]] = {}
    for j in range(W.shape[1]):
        groups.setdefault(np.ascontiguousarray(W[:, j]).tobytes(), []).append(j)
    return sorted(groups.values(), key=lambda g: g[0])


def loads_s(W: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Each client's load (seconds) under ``assignment``."""
    n, m = W.shape
    return np.bincount(assignment, weights=W[np.arange(n), assignment], minlength=m)


def mmbp_lower_bound(W: np.ndarray) -> tuple[float, dict[str, float]]:
    """A proven lower bound on the bin-packing optimum, and each of its terms.

    Terms: the average (``sum_i min_j W_ij / m``: even a perfect split cannot
    beat it), the largest single request (``max_i min_j W_ij``), and for
    identical clients the pair bound: among the ``m+1`` largest requests two
    share a client, so the optimum is at least ``w_[m] + w_[m+1]`` (sorted
    decreasing, 1-based).  For unlike clients, ``fractional``: the dual of the
    LP relaxation, ``max_y sum_i min_j y_j W_ij`` over ``y >= 0, sum y = 1``
    (:func:`workbench.schedule.fleet.fractional_work_bound`; every ``y`` is valid).
    """
    n, m = W.shape
    best = W.min(axis=1)
    terms = {"average": float(best.sum()) / m, "largest_request": float(best.max())}
    if n > m and identical_columns(W):
        w = np.sort(W[:, 0])[::-1]
        terms["pair"] = float(w[m - 1] + w[m])
    elif n:
        # unlike clients: the LP relaxation's dual, max_y sum_i min_j y_j W_ij (workbench.schedule.fleet)
        from workbench.schedule.fleet import fractional_work_bound

        terms["fractional"] = fractional_work_bound(W)[0]
    return max(terms.values()), terms


def lpt(W: np.ndarray) -> np.ndarray:
    """Longest processing time first (earliest-finish rule on non-identical clients)."""
    n, m = W.shape
    order = np.lexsort((np.arange(n), -W.min(axis=1)))
    assignment = np.empty(n, dtype=np.int64)
    if identical_columns(W):
        w = W[:, 0].tolist()
        heap = [(0.0, j) for j in range(m)]
        for i in order.tolist():
            load, j = heapq.heappop(heap)
            assignment[i] = j
            heapq.heappush(heap, (load + w[i], j))
        return assignment
    load = np.zeros(m)
    for i in order.tolist():
        j = int(np.argmin(load + W[i]))
        assignment[i] = j
        load[j] += W[i, j]
    return assignment


def kk(W: np.ndarray) -> np.ndarray:
    """Karmarkar-Karp largest differencing for ``m`` identical clients.

    Every request starts as a partial solution with its weight in one of ``m``
    subsets.  Repeatedly the two partial solutions with the largest spread
    (max - min of their subset sums) are merged, the largest subset of one
    with the smallest of the other, so that their differences cancel.  Subsets
    are tree nodes; the final ``m`` roots are unfolded into clients.
    """
    n, m = W.shape
    if not identical_columns(W):
        raise ValueError("kk needs identical clients; use lpt or local_search")
    w = W[:, 0].astype(float)
    # node k < n is request k; node k >= n merges children left[k], right[k]
    left = np.full(n + n * m, -1, dtype=np.int64)
    right = np.full(n + n * m, -1, dtype=np.int64)
    next_node = n
    heap = []
    for i in np.lexsort((np.arange(n), -w)).tolist():
        sums = np.zeros(m)
        sums[0] = w[i]
        nodes = np.full(m, -1, dtype=np.int64)
        nodes[0] = i
        heap.append((-w[i], i, sums, nodes))
    heapq.heapify(heap)
    counter = n
    while len(heap) > 1:
        _, _, sa, na = heapq.heappop(heap)
        _, _, sb, nb = heapq.heappop(heap)
        # sa and sb are sorted decreasing; pair the largest of one with the smallest of the other
        sums = sa + sb[::-1]
        nb_rev = nb[::-1]
        nodes = np.empty(m, dtype=np.int64)
        for k in range(m):
            x, y = int(na[k]), int(nb_rev[k])
            if x < 0 or y < 0:
                nodes[k] = x if y < 0 else y
            else:
                left[next_node], right[next_node] = x, y
                nodes[k] = next_node
                next_node += 1
        order = np.argsort(-sums, kind="stable")
        sums, nodes = sums[order], nodes[order]
        sums = sums - sums[-1]
        heapq.heappush(heap, (-(sums[0] - sums[-1]), counter, sums, nodes))
        counter += 1
    _, _, _, roots = heap[0]
    assignment = np.full(n, -1, dtype=np.int64)
    for j, root in enumerate(roots.tolist()):
        stack = [root] if root >= 0 else []
        while stack:
            node = stack.pop()
            if node < n:
                assignment[node] = j
            else:
                stack.append(int(left[node]))
                stack.append(int(right[node]))
    return assignment


#: Largest swap-value block local_search builds at once (float64 elements: 32 MB).
SWAP_BLOCK_ELEMENTS = 4_000_000


def local_search(W: np.ndarray, assignment: np.ndarray, *, time_limit: float = 1.0,
                 max_rounds: int = 100_000) -> np.ndarray:
    """Improve ``assignment`` by moves and pairwise swaps out of the most loaded client.

    Each round takes the most loaded client ``a`` (load ``L``) and applies the
    single move (a request of ``a`` to another client) or swap (a request of
    ``a`` with one of another client ``b``) that lowers ``max(load_a, load_b)``
    the most, provided it ends below ``L``.  It stops when no such move exists,
    after ``max_rounds`` rounds or ``time_limit`` seconds (checked between the
    clients of a round too, applying the best move found so far).  Never worse
    than the start.
    """
    W = np.asarray(W, dtype=float)
    n, m = W.shape
    assignment = np.asarray(assignment, dtype=np.int64).copy()
    if m == 1:
        return assignment
    load = loads_s(W, assignment)
    deadline = time.perf_counter() + time_limit
    rows = np.arange(n)
    for _ in range(max_rounds):
        if time.perf_counter() > deadline:
            break
        a = int(np.argmax(load))
        top = load[a]
        mine = rows[assignment == a]
        if len(mine) == 0:
            break
        wa = W[mine, a]
        best_value, best_move = top, None
        # moves: request i of a to client b
        others = np.array([b for b in range(m) if b != a])
        new_b = load[others][None, :] + W[np.ix_(mine, others)]  # (|mine|, m-1)
        new_a = (top - wa)[:, None]
        value = np.maximum(new_a, new_b)
        k = int(np.argmin(value))
        if value.flat[k] < best_value - 1e-12 * top:
            best_value = float(value.flat[k])
            best_move = ("move", int(mine[k // len(others)]), int(others[k % len(others)]), -1)
        # swaps: request i of a with request q of b
        out_of_time = False
        for b in others.tolist():
            if time.perf_counter() > deadline:
                out_of_time = True  # a round on a huge instance can outlast the budget: stop inside it
                break
            theirs = rows[assignment == b]
            if len(theirs) == 0:
                continue
            # a gives i (W[i,a]) and receives q (W[q,a]); b gives q (W[q,b]) and receives i (W[i,b]).
            # The |mine| x |theirs| matrix is built in row blocks of at most SWAP_BLOCK_ELEMENTS, so
            # memory stays flat however many requests a client holds; the first minimum is kept, as
            # argmin over the whole matrix would.
            receive_a = W[theirs, a][None, :]
            give_b = load[b] - W[theirs, b][None, :]
            step = max(1, SWAP_BLOCK_ELEMENTS // len(theirs))
            b_value, b_pos = math.inf, -1
            for lo in range(0, len(mine), step):
                na = top - wa[lo:lo + step, None] + receive_a
                nb = give_b + W[mine[lo:lo + step], b][:, None]
                value = np.maximum(na, nb)
                k = int(np.argmin(value))
                if value.flat[k] < b_value:
                    b_value, b_pos = float(value.flat[k]), lo * len(theirs) + k
            if b_value < best_value - 1e-12 * top:
                best_value = b_value
                best_move = ("swap", int(mine[b_pos // len(theirs)]), b, int(theirs[b_pos % len(theirs)]))
        if best_move is None:
            break
        kind, i, b, q = best_move  # improving even when the round was cut short
        assignment[i] = b
        load[a] -= W[i, a]
        load[b] += W[i, b]
        if kind == "swap":
            assignment[q] = a
            load[b] -= W[q, b]
            load[a] += W[q, a]
        if out_of_time:
            break
    return assignment


HEURISTICS = {"lpt": "longest processing time first", "kk": "Karmarkar-Karp largest differencing (m-way)",
              "ls": "best of lpt and kk, then move/swap local search"}
