"""The validator: each rule of MODEL.md section 9 catches a schedule corrupted in exactly that way."""

import json

import pytest

from workbench.schedule.schema import Schedule
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace
from workbench.schedule.validator import validate, validate_files


@pytest.fixture
def folder(tmp_path, small_cost):
    trace = synthetic_trace(40, seed=1, output_mean_tokens=12, input_mean_tokens=20)
    s = simulate(trace, 2, 4, "continuous", small_cost)
    s.write(tmp_path / "s")
    return tmp_path / "s"


def corrupt(folder, fn):
    s = Schedule.read(folder)
    fn(s.timeline, s.requests, s.metrics)
    s.write(folder)
    return validate(folder)


def first_decode(tl):
    return tl.index[(tl["kind"] == "decode") & (tl["n_requests"] >= 2)][0]


def test_valid_schedule_passes(folder):
    report = validate(folder)
    assert report.ok and len(report.checked) >= 12


def _drop_decode_id(tl, rq, m):
    r = first_decode(tl)
    ids = tl.at[r, "request_ids"].split()
    tl.at[r, "request_ids"] = " ".join(ids[1:])
    tl.at[r, "n_requests"] -= 1


def _swap_client(tl, rq, m):
    rid = int(tl.loc[first_decode(tl), "request_ids"].split()[0])
    rq.loc[rq["request_id"] == rid, "client"] = 1 - rq.loc[rq["request_id"] == rid, "client"]


def _over_capacity(tl, rq, m):
    m["batch_size"] = 1


def _shift_start(tl, rq, m):
    r = first_decode(tl)
    tl.at[r, "start_s"] -= 0.5 * (tl.at[r, "end_s"] - tl.at[r, "start_s"]) + 1.0


def _stretch(tl, rq, m):
    r = tl.index[-1]
    tl.at[r, "end_s"] += 1e-3


def _tokens(tl, rq, m):
    tl.at[first_decode(tl), "tokens"] += 1


def _renumber(tl, rq, m):
    tl.at[tl.index[1], "iteration"] = 7


def _unknown_id(tl, rq, m):
    r = first_decode(tl)
    tl.at[r, "request_ids"] = tl.at[r, "request_ids"] + " ghost"
    tl.at[r, "n_requests"] += 1


def _double_prefill(tl, rq, m):
    pre = tl.index[tl["kind"] == "prefill"]
    a, b = pre[0], pre[-1]
    tl.at[b, "request_ids"] += " " + tl.at[a, "request_ids"].split()[0]
    tl.at[b, "n_requests"] += 1


def _finish(tl, rq, m):
    rq.loc[0, "finish_s"] += 0.25


def _metric(tl, rq, m):
    m["slot_utilization"] *= 1.01


def _bound_too_high(tl, rq, m):
    m["lower_bound_s"] = m["makespan_s"] * 2
    m["gap"] = 0.5 - 1


def _bound_too_low(tl, rq, m):
    m["lower_bound_s"] = 1e-6
    m["gap"] = m["makespan_s"] / 1e-6 - 1


def _arrival(tl, rq, m):
    rq.loc[0, "arrival_s"] = rq.loc[0, "prefill_start_s"] + 5.0


CASES = {
    "decode-count": _drop_decode_id, "same-client": _swap_client, "batch-capacity": _over_capacity,
    "no-overlap": _shift_start, "duration": _stretch, "tokens": _tokens, "iterations": _renumber,
    "ids": _unknown_id, "prefill-once": _double_prefill, "request-times": _finish, "metrics": _metric,
}


@pytest.mark.parametrize("rule", list(CASES))
def test_each_rule_catches_its_corruption(folder, rule):
    report = corrupt(folder, CASES[rule])
    assert not report.ok
    assert rule in report.rules_violated(), str(report)


@pytest.mark.parametrize("fn", [_bound_too_high, _bound_too_low])
def test_lower_bound_is_checked(folder, fn):
    report = corrupt(folder, fn)
    assert "metrics" in report.rules_violated() and "lower_bound_s" in str(report)


def test_arrival_after_prefill_is_caught(folder):
    assert "request-times" in corrupt(folder, _arrival).rules_violated()


def test_kv_capacity_rule(tmp_path, small_cost):
    trace = synthetic_trace(30, seed=2, output_mean_tokens=10, input_mean_tokens=20)
    s = simulate(trace, 1, 8, "continuous", small_cost, kv_capacity_tokens=400)
    assert validate(s).ok
    s.metrics["kv_capacity_tokens"] = [50]
    assert "kv-capacity" in validate(s).rules_violated()


def test_trace_mismatch_and_missing_files(folder, tmp_path):
    trace = synthetic_trace(40, seed=1, output_mean_tokens=12, input_mean_tokens=20)
    assert validate(folder, trace=trace).ok
    trace.loc[3, "output_tokens"] += 1
    assert "trace" in validate(folder, trace=trace).rules_violated()
    (folder / "metrics.json").write_text("{not json")
    assert "schema" in validate_files(folder).rules_violated()
    (folder / "timeline.csv").unlink()
    assert "schema" in validate_files(folder).rules_violated()


def test_missing_metric_key(folder):
    data = json.loads((folder / "metrics.json").read_text())
    del data["cost_model"]
    (folder / "metrics.json").write_text(json.dumps(data))
    report = validate(folder)
    assert report.rules_violated() == ["schema"] and "cost_model" in str(report)
