"""The work a simulation will do, estimated from the trace and the options before it starts.

A prefill-first simulation advances over runs of decodes in closed form, so its own work is a few
segments per request; what can exhaust memory is the per-iteration timeline it exports (one row per
iteration, MODEL.md section 9).  The chunked-prefill simulator steps every iteration.  Both figures
have floors that no schedule can beat, from the same counting as the lower bound (MODEL.md
section 3): client ``j`` needs at least ``max_i (o_i - 1)`` decode iterations for its longest request,
and all clients together at least ``ceil(D / B_max)`` for the ``D = sum (o_i - 1)`` decode tokens.
:func:`check_work` refuses, with the figure and the fix, an instance whose floor is above the limit:
it could not finish in memory whatever the policy does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.errors import ConfigError

#: Timeline rows an export may hold.  A row costs about 130 bytes in pandas (eight columns and the
#: request-id text), so this is ~1.3 GB before the CSV is written; GSM8K's train split on 8 clients
#: of B = 16 exports about 60,000.
MAX_TIMELINE_ROWS = 10_000_000
#: Iterations the chunked-prefill simulator may step (about 10 us each in Python: ~2 minutes).
MAX_STEPPED_ITERATIONS = 10_000_000


@dataclass(frozen=True)
class WorkEstimate:
    """Floors and ceilings of the work of one simulation (iterations summed over all clients)."""

    requests: int
    clients: int
    decode_tokens: int
    min_iterations: int
    min_mixed_iterations: int
    max_iterations: int
    max_mixed_iterations: int
    max_segments: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def estimate_work(trace: pd.DataFrame, clients: int, batch_size) -> WorkEstimate:
    """Iterations and segments of any schedule of ``trace`` on ``clients`` clients of ``batch_size``.

    ``min_iterations``: prefills (at least ``ceil(n / B_max)``) plus decodes (at least
    ``max(max_i (o_i - 1), ceil(D / B_max))``); ``max_iterations``: one prefill per request plus
    one decode per decode token (each decode iteration advances at least one request);
    ``min_mixed_iterations``: chunked prefill needs no separate prefill, so only
    ``max(max_i o_i, ceil(D / B_max))`` (a request's last chunk, then its decodes);
    ``max_mixed_iterations``: the same for chunked prefill, where an iteration may carry only a
    chunk of a prompt, so one per decode token plus one per prompt token.
    ``max_segments``: the prefill-first engine's events, one prefill and at most two run cuts per
    request (its completion, an arrival) plus one per client.
    """
    o = trace["output_tokens"].to_numpy(np.int64)
    L = int(trace["input_tokens"].to_numpy(np.int64).sum())
    n = len(o)
    b_max = int(np.max(np.broadcast_to(np.asarray(batch_size, dtype=np.int64), (int(clients),))))
    D = int((o - 1).sum())
    longest = int(o.max() - 1) if n else 0
    min_iter = -(-n // b_max) + max(longest, -(-D // b_max))
    return WorkEstimate(requests=n, clients=int(clients), decode_tokens=D, min_iterations=min_iter,
                        min_mixed_iterations=max(longest + 1 if n else 0, -(-D // b_max)),
                        max_iterations=n + D, max_mixed_iterations=L + D, max_segments=3 * n + int(clients))


#: An iteration must be at least this many units in the last place of the clock at the latest time,
#: so its start and end differ and its length is resolved to the validator's tolerance (TIME_ULPS).
MIN_ITERATION_ULPS = 64


def check_clock_resolution(trace: pd.DataFrame, cost_models) -> None:
    """Refuse a cost model whose shortest iteration falls below the clock's resolution late in the run.

    float64 time at ``t`` resolves ``ulp(t)``, about ``t * 2.2e-16``.  The latest time is at most
    the last arrival plus every request served alone one after another; the shortest iteration is
    a prefill of the shortest prompt or a decode of one request.  If the second is not
    :data:`MIN_ITERATION_ULPS` ulps of the first, an exported iteration could have ``start_s ==
    end_s`` (which the validator rightly rejects).
    """
    import math

    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    models = list(cost_models) if isinstance(cost_models, (list, tuple)) else [cost_models]
    # A measured (non-linear) model is judged by the linear model below it, which is no slower.
    models = [m if hasattr(type(m), "alone_time_s") else getattr(m, "bound_model", lambda: None)() for m in models]
    models = [m for m in models if m is not None]
    if not models:
        return
    unique = []  # one per distinct model: a fleet of 64 identical clients sums the trace once, not 64 times
    for m in models:
        if not any(m is u or m == u for u in unique):
            unique.append(m)
    models = unique
    latest = float(trace["arrival_s"].max()) + max(math.fsum(m.alone_time_s(l, o).tolist()) for m in models)
    shortest = min(min(m.a_p + m.b_p * float(l.min()), m.a_d + m.b_d + m.c_d * float(l.min() + 1)) for m in models)
    resolution = MIN_ITERATION_ULPS * math.ulp(latest) if math.isfinite(latest) else math.inf
    if not shortest > resolution:
        raise ConfigError(f"the shortest iteration ({shortest:.3g} s) is below the clock's resolution late in the "
                          f"run ({MIN_ITERATION_ULPS} ulps at t = {latest:.3g} s is {resolution:.3g} s): start and "
                          "end times would collapse.", field="cost_model",
                          fix="shift arrival times to start near 0, or check the cost model's units (seconds).")


def check_work(trace: pd.DataFrame, clients: int, batch_size, *, export: bool = True,
               stepped: bool = False, cost_models=None) -> WorkEstimate:
    """:func:`estimate_work`, refusing what cannot finish in memory.

    ``export``: the per-iteration timeline will be built (the command line always writes it);
    ``stepped``: the simulator steps every iteration (the chunked-prefill one).  The floor
    decides, so nothing a policy could finish is refused.  With ``cost_models`` (one, or one
    per client) :func:`check_clock_resolution` runs too.
    """
    if cost_models is not None:
        check_clock_resolution(trace, cost_models)
    from workbench._checks import batch_size_option, positive_int
    from workbench.schedule.metrics import batch_sizes_array

    clients = positive_int(clients, "clients")
    batch_size = batch_sizes_array(batch_size_option(batch_size), clients)
    est = estimate_work(trace, clients, batch_size)
    fix = ("simulate fewer or shorter requests, or larger batches; in Python, simulate() without "
           "exporting keeps only the runs (schedule.runs)")
    floor = est.min_mixed_iterations if stepped else est.min_iterations
    if export and floor > MAX_TIMELINE_ROWS:
        raise ConfigError(f"any schedule of this instance has at least {floor:,} iterations "
                          f"({est.decode_tokens:,} decode tokens on batches of at most "
                          f"{int(np.max(batch_size)):,}), above the export limit of {MAX_TIMELINE_ROWS:,} "
                          f"timeline rows (about {floor * 130 / 1e9:.1f} GB).",
                          field="trace", fix=fix + ".")
    if stepped and est.min_mixed_iterations > MAX_STEPPED_ITERATIONS:
        raise ConfigError(f"the chunked-prefill simulator would step at least {est.min_mixed_iterations:,} "
                          f"iterations, above its limit of {MAX_STEPPED_ITERATIONS:,}.", field="trace",
                          fix="simulate fewer or shorter requests, or a prefill-first policy.")
    return est


def check_rows(rows: int) -> None:
    """Refuse to build a per-iteration timeline of more than :data:`MAX_TIMELINE_ROWS` rows."""
    if rows > MAX_TIMELINE_ROWS:
        raise ConfigError(f"the per-iteration timeline would have {rows:,} rows, above the limit of "
                          f"{MAX_TIMELINE_ROWS:,} (about {rows * 130 / 1e9:.1f} GB).", field="timeline",
                          fix="use schedule.runs (one row per run of decodes) and schedule.metrics instead, "
                              "or simulate fewer or shorter requests.")
