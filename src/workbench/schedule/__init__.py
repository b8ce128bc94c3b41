"""The one schedule schema every producer writes, its validator, metrics and lower bounds.

The MIP, the heuristics and the engine all produce a :class:`Schedule`
(timeline, requests, metrics; MODEL.md section 9), so one validator
(:mod:`~workbench.schedule.validator`), one metrics function
(:mod:`~workbench.schedule.metrics`) and one Gantt chart serve them all.
Lower bounds (:mod:`~workbench.schedule.bounds`, :mod:`~workbench.schedule.fleet`)
are pure functions of the instance.
"""

from workbench.schedule.bounds import (  # noqa: F401
    TERM_DOCS,
    LowerBound,
    best_lower_bound,
    closed_form_lower_bound,
    kv_iteration_counts,
)
from workbench.schedule.fleet import (  # noqa: F401
    Fleet,
    fleet_lower_bound,
    fleet_weights,
    fractional_work_bound,
)
from workbench.schedule.metrics import (  # noqa: F401
    batch_sizes_array,
    gap,
    gap_closed,
    latency_summary,
    request_latencies,
    schedule_metrics,
)
from workbench.schedule.schema import (  # noqa: F401
    FILES,
    OPTIONAL_REQUEST_COLUMNS,
    OPTIONAL_TIMELINE_COLUMNS,
    OUTPUT_MARKER,
    REQUEST_COLUMNS,
    TIMELINE_COLUMNS,
    Schedule,
    atomic_dir,
    build_metrics,
    compact_timeline,
    cost_model_record,
    expand_runs,
    requests_from_timeline,
)
from workbench.schedule.validator import (  # noqa: F401
    ABS_TOL_S,
    MAX_CLIENTS,
    MAX_EXAMPLES,
    METRIC_KEYS,
    REL_TOL,
    RULES,
    TIME_ULPS,
    ValidationReport,
    Violation,
    validate,
    validate_files,
)

__all__ = ['ABS_TOL_S', 'FILES', 'Fleet', 'LowerBound', 'MAX_CLIENTS', 'MAX_EXAMPLES', 'METRIC_KEYS', 'OPTIONAL_REQUEST_COLUMNS', 'OPTIONAL_TIMELINE_COLUMNS', 'OUTPUT_MARKER', 'REL_TOL', 'REQUEST_COLUMNS', 'RULES', 'Schedule', 'TERM_DOCS', 'TIMELINE_COLUMNS', 'TIME_ULPS', 'ValidationReport', 'Violation', 'atomic_dir', 'batch_sizes_array', 'best_lower_bound', 'build_metrics', 'closed_form_lower_bound', 'compact_timeline', 'cost_model_record', 'expand_runs', 'fleet_lower_bound', 'fleet_weights', 'fractional_work_bound', 'gap', 'gap_closed', 'kv_iteration_counts', 'latency_summary', 'request_latencies', 'requests_from_timeline', 'schedule_metrics', 'validate', 'validate_files']
