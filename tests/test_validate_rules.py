"""Every rule of the validator (MODEL.md section 9, ``validate.RULES``) is tested with its message.

Each test corrupts a valid schedule in exactly one way and expects the rule's
message.  ``tests/test_validate.py`` covers most rules by name; this file adds
the message checks, the branches it does not reach (no-overlap's "positive
length", ids' "n_requests" and "listed twice", decode-count's "before its
prefill", request-times' "before arrival", the schema's many ways to be
unreadable, the trace rule's id and length branches) and, where a corruption
can be made that touches nothing else, checks that no other rule fires.
``test_every_rule_is_covered`` fails when a rule is added without a test here.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench.costmodel.linear import LinearCostModel
from workbench.schedule.schema import Schedule
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace
from workbench.schedule.validator import RULES, validate, validate_files

#: c_d = 0 and b_d = 0: a decode's length does not depend on its token count, so "tokens" can be
#: corrupted alone.  Integers keep the arithmetic exact.
FLAT = LinearCostModel(a_p=1.0, b_p=0.5, a_d=1.0, b_d=0.0, c_d=0.0, name="flat")
SMALL = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small")
TRACE = synthetic_trace(24, seed=5, input_mean_tokens=20, output_mean_tokens=10, max_tokens=60)


def _schedule(cost=SMALL, clients=2, batch=3, **kw) -> Schedule:
    s = simulate(TRACE, clients, batch, "continuous", cost, **kw)
    return Schedule(timeline=s.timeline.copy(), requests=s.requests.copy(), metrics=json.loads(json.dumps(s.metrics)))


@pytest.fixture
def sched() -> Schedule:
    return _schedule()


def _check(s: Schedule, rule: str, needle: str, *, only: bool = False, trace=None) -> None:
    report = validate(s, trace=trace)
    assert rule in report.rules_violated(), str(report)
    messages = " | ".join(v.message for v in report.violations if v.rule == rule)
    assert needle in messages, messages
    if only:
        assert report.rules_violated() == [rule], str(report)


def _mid_decode_row(tl: pd.DataFrame) -> int:
    """A decode row whose requests neither start nor finish there, preceded by another row of its client."""
    rows = tl.reset_index(drop=True)
    for r in range(1, len(rows) - 1):
        if (rows.at[r, "kind"] == "decode" and rows.at[r - 1, "kind"] == "decode" and rows.at[r + 1, "kind"] == "decode"
                and rows.at[r, "client"] == rows.at[r - 1, "client"] == rows.at[r + 1, "client"]
                and rows.at[r, "request_ids"] == rows.at[r - 1, "request_ids"] == rows.at[r + 1, "request_ids"]):
            return tl.index[r]
    raise AssertionError("no decode run of three iterations")


def test_the_valid_schedules_pass():
    assert validate(_schedule()).ok
    assert validate(_schedule(FLAT)).ok


# -- schema ---------------------------------------------------------------------------------
@pytest.mark.parametrize("corrupt,needle", [
    (lambda s: s.timeline.pop("tokens"), "missing tokens"),
    (lambda s: s.requests.pop("finish_s"), "missing requests.finish_s"),
    (lambda s: s.metrics.pop("policy"), "missing metrics.policy"),
    (lambda s: s.timeline.__setitem__("kind", s.timeline["kind"].replace("prefill", "Prefill")),
     "kind must be prefill or decode"),
    (lambda s: s.timeline.__setitem__("client", s.timeline["client"] + 5), "client numbers must be 0..1"),
    (lambda s: s.requests.__setitem__("request_id", 0), "repeats a request_id"),
    (lambda s: s.timeline.__setitem__("start_s", "soon"), "cannot read the tables as numbers"),
    (lambda s: s.metrics.__setitem__("clients", 0), "metrics.clients is 0"),
    (lambda s: s.metrics.__setitem__("clients", True), "metrics.clients is True"),
    (lambda s: s.metrics.__setitem__("clients", 10**12), "not a whole number in 1.."),
    (lambda s: s.metrics.__setitem__("batch_size", 0), "batch sizes are >= 1"),
    (lambda s: s.metrics.__setitem__("batch_size", [3, 3, 3]), "3 batch sizes for 2 clients"),
    (lambda s: s.metrics.__setitem__("makespan_s", "long"), "cannot read the tables as numbers"),
    (lambda s: s.metrics.__setitem__("gap", None), "metrics.gap is None, not a number"),
    (lambda s: s.metrics["cost_model"].__setitem__("a_d", -1.0), "must be finite and >= 0"),
    (lambda s: s.metrics.__setitem__("cost_model", [s.metrics["cost_model"]]), "cost_model lists 1 models"),
])
def test_schema(sched, corrupt, needle):
    corrupt(sched)
    _check(sched, "schema", needle, only=True)


def test_schema_empty_requests(sched):
    sched.requests = sched.requests.iloc[:0]
    _check(sched, "schema", "lists no request", only=True)


def test_schema_from_files(tmp_path, sched):
    """Unreadable folders are schema violations from validate_files, never exceptions."""
    sched.write(tmp_path / "s")
    (tmp_path / "s" / "metrics.json").write_text("[1, 2]")
    assert "not a JSON object" in str(validate_files(tmp_path / "s"))
    (tmp_path / "s" / "metrics.json").write_text("{")
    assert validate_files(tmp_path / "s").rules_violated() == ["schema"]
    (tmp_path / "s" / "requests.csv").unlink()
    assert "has no requests.csv" in str(validate_files(tmp_path / "s"))
    assert "is not a folder" in str(validate_files(tmp_path / "nowhere"))


# -- iterations -----------------------------------------------------------------------------------
def test_iterations(sched):
    """Client 1's iterations numbered from 1: nothing else changes (order and times are intact)."""
    tl = sched.timeline
    tl.loc[tl["client"] == 1, "iteration"] += 1
    _check(sched, "iterations", "numbered 0, 1, 2, ... per client; first break at client 1 iteration 1", only=True)


# -- no-overlap -------------------------------------------------------------------------------------
def test_no_overlap_overlapping(sched):
    """A mid-run decode moved earlier by half its length: same duration, same request times."""
    tl = sched.timeline
    r = _mid_decode_row(tl)
    half = (tl.at[r, "end_s"] - tl.at[r, "start_s"]) / 2
    tl.loc[r, ["start_s", "end_s"]] -= half
    _check(sched, "no-overlap", "starts before the previous one on its client ends", only=True)


def test_no_overlap_nonpositive_length(sched):
    tl = sched.timeline
    r = _mid_decode_row(tl)
    tl.at[r, "end_s"] = tl.at[r, "start_s"]
    _check(sched, "no-overlap", "start_s >= 0 and end_s > start_s")


# -- ids ------------------------------------------------------------------------------------------------
def test_ids_unknown(sched):
    r = _mid_decode_row(sched.timeline)
    sched.timeline.at[r, "request_ids"] += " ghost"
    sched.timeline.at[r, "n_requests"] += 1
    _check(sched, "ids", "ids not in requests.csv: ghost")


def test_ids_count(sched):
    r = _mid_decode_row(sched.timeline)
    sched.timeline.at[r, "n_requests"] += 1
    _check(sched, "ids", "n_requests differs from the number of request_ids")


def test_ids_twice_in_one_iteration(sched):
    tl = sched.timeline
    r = _mid_decode_row(tl)
    first = tl.at[r, "request_ids"].split()[0]
    tl.at[r, "request_ids"] += f" {first}"
    tl.at[r, "n_requests"] += 1
    _check(sched, "ids", f"a request is listed twice in one iteration: {first}")


# -- prefill-once -------------------------------------------------------------------------------------
def test_prefill_once(sched):
    tl = sched.timeline
    pre = tl.index[(tl["kind"] == "prefill") & (tl["client"] == 0)]
    moved = tl.at[pre[0], "request_ids"].split()[0]
    tl.at[pre[-1], "request_ids"] += f" {moved}"
    tl.at[pre[-1], "n_requests"] += 1
    _check(sched, "prefill-once", f"not so for {moved} (2 prefills)")


# -- same-client -----------------------------------------------------------------------------------------
def test_same_client(sched):
    rq = sched.requests
    rq.at[0, "client"] = 1 - rq.at[0, "client"]
    _check(sched, "same-client", f"requests appear on a client other than requests.csv's: {rq.at[0, 'request_id']}")


# -- decode-count ------------------------------------------------------------------------------------------
def test_decode_count(sched):
    rq = sched.requests
    rid = rq["request_id"].iloc[rq["output_tokens"].to_numpy().argmax()]
    rq.loc[rq["request_id"] == rid, "output_tokens"] += 1
    _check(sched, "decode-count", f"{rid} (")


def test_decode_before_prefill():
    """A request's id moved from its last decode to a decode before its prefill (same client)."""
    s = _schedule(clients=1, batch=2)
    tl, rq = s.timeline, s.requests
    pre = tl.index[tl["kind"] == "prefill"]
    ids = tl["request_ids"].str.split()
    for r in pre[1:]:
        rid = ids[r][0]
        if rq.loc[rq["request_id"].astype(str) == rid, "output_tokens"].iloc[0] < 2:
            continue
        earlier = tl.index[(tl["kind"] == "decode") & (tl.index < r)][0]
        last = max(k for k in tl.index if rid in ids[k])
        tl.at[earlier, "request_ids"] += f" {rid}"
        tl.at[earlier, "n_requests"] += 1
        tl.at[last, "request_ids"] = " ".join(x for x in ids[last] if x != rid)
        tl.at[last, "n_requests"] -= 1
        break
    _check(s, "decode-count", "a decode comes before its request's prefill")


# -- decode-all (issue 12, item 4) ------------------------------------------------------------------------------
def test_decode_all_a_running_request_left_out_of_a_decode():
    """The request keeps its slot and gets the missing decode later: decode-count holds, decode-all does not."""
    s = _schedule(FLAT, clients=1, batch=3)
    tl = s.timeline
    ids = tl["request_ids"].str.split()
    r = _mid_decode_row(tl)
    rid = ids[r][0]
    last = max(k for k in tl.index if rid in ids[k])
    later = [k for k in tl.index if k > last and tl.at[k, "kind"] == "decode" and rid not in ids[k]]
    assert later, "the schedule needs a decode after the request's last one"
    tl.at[r, "request_ids"] = " ".join(x for x in ids[r] if x != rid)
    tl.at[r, "n_requests"] -= 1
    tl.at[later[0], "request_ids"] += f" {rid}"
    tl.at[later[0], "n_requests"] += 1
    report = validate(s)
    assert "decode-count" not in report.rules_violated()
    _check(s, "decode-all", "a decode iteration must advance every running request of its client")
    assert f"first left out: {rid}" in str(report)


def test_decode_all_holds_on_every_policy_and_simulator():
    from workbench.engine.chunked import simulate_chunked

    for policy in ("static", "continuous", "hybrid", "online"):
        s = simulate(TRACE, 2, 3, policy, SMALL)
        assert "decode-all" in validate(s).checked and validate(s).ok, policy
    assert validate(simulate_chunked(TRACE, 2, 3, token_budget=16, cost_model=SMALL)).ok


def test_ids_empty_rows_are_invalid():
    for kind in ("prefill", "decode"):
        s = _schedule()
        tl = s.timeline
        r = tl.index[tl["kind"] == kind][0]
        tl.at[r, "request_ids"] = ""
        tl.at[r, "n_requests"] = 0
        _check(s, "ids", f"an iteration must serve at least one request; empty rows: client {tl.at[r, 'client']} "
                         f"iteration {tl.at[r, 'iteration']} ({kind})")


@pytest.mark.parametrize("budget", ["missing", "lots", True, None, [48], 4.5, 0])
def test_tokens_budget_missing_or_mistyped_is_invalid(budget):
    """Issue 12, item 5: the mixed-row token-budget rule is never skipped."""
    from workbench.engine.chunked import simulate_chunked

    c = simulate_chunked(TRACE, 2, 3, token_budget=16, cost_model=SMALL)
    s = Schedule(timeline=c.timeline.copy(), requests=c.requests.copy(), metrics=json.loads(json.dumps(c.metrics)))
    assert validate(s).ok
    if budget == "missing":
        s.metrics.pop("token_budget")
    else:
        s.metrics["token_budget"] = budget
    shown = "missing" if budget == "missing" else repr(budget)
    _check(s, "schema", f"metrics.token_budget is {shown}; a schedule with mixed rows records its token budget")


# -- batch-capacity and kv-capacity ----------------------------------------------------------------------------
def test_batch_capacity(sched):
    sched.metrics["batch_size"] = 2
    _check(sched, "batch-capacity", "more requests hold a slot than the batch size allows", only=False)
    assert "(3 > 2)" in str(validate(sched))


def test_kv_capacity():
    cap = int((TRACE["input_tokens"] + TRACE["output_tokens"]).max()) * 2
    s = _schedule(kv_capacity_tokens=cap)
    assert validate(s).ok and "kv-capacity" in validate(s).checked
    s.metrics["kv_capacity_tokens"] = [cap // 4, cap // 4]
    _check(s, "kv-capacity", "reserved KV tokens exceed the capacity", only=True)


# -- tokens ------------------------------------------------------------------------------------------------------
def test_tokens():
    """With b_d = c_d = 0 a decode's length ignores its tokens: only the tokens rule can fire."""
    s = _schedule(FLAT)
    r = _mid_decode_row(s.timeline)
    s.timeline.at[r, "tokens"] += 1
    _check(s, "tokens", "tokens must be the prompt tokens (prefill) or the context read (decode)", only=True)


# -- duration --------------------------------------------------------------------------------------------------------
def test_duration():
    """A mid-run decode shortened by 10%: only its own length is wrong (nothing overlaps, no time is read)."""
    s = _schedule()
    tl = s.timeline
    r = _mid_decode_row(tl)
    tl.at[r, "end_s"] -= 0.1 * (tl.at[r, "end_s"] - tl.at[r, "start_s"])
    report = validate(s)
    assert "iteration lengths differ from the cost model's" in str(report)
    assert set(report.rules_violated()) <= {"duration", "metrics"}  # busy time shrinks too


def test_duration_tolerates_large_times():
    """Times near 1e7 s carry ~2e-9 s of rounding; a correct schedule there must still pass."""
    trace = pd.DataFrame({"request_id": [0, 1, 2], "input_tokens": [300, 74, 82], "output_tokens": [250, 300, 296],
                          "arrival_s": [0.0, 0.0, 10_000_001.0]})
    assert validate(simulate(trace, 2, 3, "continuous", SMALL)).ok


# -- request-times --------------------------------------------------------------------------------------------------------
def test_request_times(sched):
    sched.requests.at[3, "finish_s"] += 0.25
    _check(sched, "request-times", f"finish_s disagrees with the timeline for {sched.requests.at[3, 'request_id']}",
           only=True)


def test_request_times_before_arrival(sched):
    """A later arrival also raises the release-aware closed-form bound, so metrics may fire too."""
    sched.requests.at[2, "arrival_s"] = sched.requests.at[2, "prefill_start_s"] + 1.0
    _check(sched, "request-times", f"prefilled before arrival: {sched.requests.at[2, 'request_id']}")


# -- metrics ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("corrupt,needle", [
    (lambda m: m.__setitem__("makespan_s", m["makespan_s"] * (1 + 1e-6)), "makespan_s is"),
    (lambda m: m.__setitem__("busy_utilization", m["busy_utilization"] * 0.99), "busy_utilization is"),
    (lambda m: m.__setitem__("gap", m["gap"] + 0.01), "gap is"),
    (lambda m: m.update(lower_bound_s=m["makespan_s"] * 2, gap=-0.5), "exceeds the makespan"),
    (lambda m: m.update(lower_bound_s=1e-6, gap=m["makespan_s"] / 1e-6 - 1), "below the closed-form bound"),
])
def test_metrics(sched, corrupt, needle):
    corrupt(sched.metrics)
    _check(sched, "metrics", needle, only=True)


# -- trace --------------------------------------------------------------------------------------------------------------------
def test_trace_ids(sched):
    other = TRACE.assign(request_id=TRACE["request_id"] + 1000)
    _check(sched, "trace", "requests.csv and the trace hold different request ids", only=True, trace=other)


@pytest.mark.parametrize("column,change", [("input_tokens", 1), ("output_tokens", 1), ("arrival_s", 0.5)])
def test_trace_lengths(sched, column, change):
    other = TRACE.copy()
    other.loc[4, column] += change
    _check(sched, "trace", f"{column} differs from the trace for {TRACE.at[4, 'request_id']}", only=True, trace=other)


# -- the paged rules (workbench.schedule.replay) -----------------------------------------------------------------------------
@pytest.fixture
def paged():
    """Two requests on one client of 6 blocks of 4 tokens: r1 is preempted at 12 tokens each, then recomputed."""
    from workbench.engine import simulate as engine_simulate

    trace = pd.DataFrame({"request_id": [0, 1], "input_tokens": [8, 8], "output_tokens": [12, 12], "arrival_s": 0.0})
    cost = LinearCostModel(a_p=0.01, b_p=1e-4, a_d=0.01, b_d=1e-4, c_d=1e-6, name="paged-test")
    return trace, engine_simulate(trace, 1, 2, "continuous", cost, kv="paged", block_size=4, kv_capacity_tokens=24)


def test_paged_rows_every_decoding_request_decodes(paged):
    trace, s = paged
    assert validate(s, trace).ok
    tl = s.timeline.copy()
    k = tl.index[tl["kind"] == "decode"][0]
    tl.loc[k, "request_ids"] = "0"
    tl.loc[k, "n_requests"] = 1
    s.timeline = tl
    assert "paged-rows" in validate(s, trace).rules_violated()


def test_recompute_prefills_prompt_plus_generated(paged):
    trace, s = paged
    tl = s.timeline.copy()
    k = tl.index[(tl["kind"] == "prefill") & (tl["request_ids"] == "1")][-1]
    tl.loc[k, ["prefill_tokens", "tokens"]] = ["12", 12]
    s.timeline = tl
    assert "recompute" in validate(s, trace).rules_violated()


def test_paged_tokens_every_request_yields_its_output(paged):
    trace, s = paged
    tl = s.timeline.copy()
    s.timeline = tl.drop(index=tl.index[tl["kind"] == "decode"][-1])
    assert "paged-tokens" in validate(s, trace).rules_violated()


def test_kv_blocks_never_over_capacity(paged):
    trace, s = paged
    s.metrics["kv_capacity_tokens"] = [20]
    assert validate(s, trace).rules_violated() == ["kv-blocks"]


def test_replica_life_rows_must_lie_inside_each_replicas_life():
    """A replica added mid-run serves from its ready_s; rows before it, or a wrong replica_seconds, are refused."""
    from workbench.engine import build_engine

    trace = synthetic_trace(60, seed=4, input_mean_tokens=20, output_mean_tokens=12, rate_per_s=20.0)
    engine = build_engine(trace, 1, 3, "least-work", SMALL)
    engine.run(until_s=0.5)
    engine.add_replica(SMALL, 3, ready_at_s=1.0)
    engine.run()
    s = engine.schedule()
    assert validate(s, trace).ok
    rows = s.timeline[s.timeline["client"] == 1]
    s.metrics["replicas"][1]["ready_s"] = float(rows["start_s"].iloc[0]) + 0.01
    assert validate(s, trace).rules_violated() == ["replica-life"]
    s.metrics["replicas"][1]["ready_s"] = 1.0
    s.metrics["replica_seconds"] += 1.0
    assert validate(s, trace).rules_violated() == ["replica-life"]


# -- coverage of the rule table -------------------------------------------------------------------------------------------------
def test_every_rule_is_covered():
    """Each rule of validate.RULES has a test function here named after it."""
    names = {name for name in globals() if name.startswith("test_")}
    for rule in RULES:
        assert any(n.startswith("test_" + rule.replace("-", "_")) for n in names), rule


def test_rules_run_on_files_too(tmp_path, sched):
    """The file path checks the same rules: a corrupted folder gives the same verdict as the object."""
    sched.requests.at[3, "finish_s"] += 0.25
    sched.write(tmp_path / "s")
    assert validate(tmp_path / "s").rules_violated() == validate(sched).rules_violated() == ["request-times"]
    np.testing.assert_equal(len(validate(tmp_path / "s").checked), len(validate(sched).checked))


def _pooled(link="pcie"):
    from workbench.engine.pools import Pools

    trace = pd.DataFrame({"request_id": [0, 1, 2], "input_tokens": [100, 50, 80], "output_tokens": [4, 3, 5],
                          "arrival_s": [0.0, 0.0, 0.01]})
    return trace, simulate(trace, pools=Pools(prefill=1, decode=2, link=link), kv_capacity_tokens=1000)


def test_pools_decode_rows_only_on_decode_replicas():
    trace, s = _pooled()
    assert validate(s, trace).ok
    s.metrics["roles"] = ["prefill", "prefill", "decode"]  # replica 1 decodes, but is called a prefill replica
    assert "pools" in validate(s, trace).rules_violated()


def test_transfer_lasts_the_links_time():
    trace, s = _pooled()
    s.transfers.loc[0, "end_s"] -= 1e-4
    assert validate(s, trace).rules_violated() == ["metrics", "transfer"]  # transfer_s_total no longer adds up


def test_transfer_memory_within_capacity_on_both_ends():
    trace, s = _pooled()
    # The prefill replica starts prompt 2 while prompts 0 and 1 are still being copied out: it holds all three.
    s.metrics["kv_capacity_tokens"] = [100 + 50 + 80 - 1, 1000, 1000]
    assert validate(s, trace).rules_violated() == ["transfer-memory"]
