"""Requests in: traces (CSV, Parquet, JSONL; named GSM8K traces; seeded synthetic ones) and output-length predictors.

The first room of the house: everything downstream reads a trace table with
``request_id, input_tokens, output_tokens, arrival_s`` (MODEL.md section 7).
"""

from workbench.workload.trace import (  # noqa: F401
    TRACE_COLUMNS,
    REQUIRED_COLUMNS,
    MAX_TOKENS,
    MAX_ARRIVAL_S,
    NAMED_TRACES,
    list_traces,
    load_trace,
    validate_trace,
    trace_digest,
    synthetic_trace,
    sample_trace,
)
from workbench.workload.predict import (  # noqa: F401
    Predictor,
    Exact,
    Noisy,
    Bucketed,
    Column,
    PREDICTORS,
    make_predictor,
    prediction_error,
)

__all__ = ['Bucketed', 'Column', 'Exact', 'MAX_ARRIVAL_S', 'MAX_TOKENS', 'NAMED_TRACES', 'Noisy', 'PREDICTORS', 'Predictor', 'REQUIRED_COLUMNS', 'TRACE_COLUMNS', 'list_traces', 'load_trace', 'make_predictor', 'prediction_error', 'sample_trace', 'synthetic_trace', 'trace_digest', 'validate_trace']
