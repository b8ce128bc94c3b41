"""The open engine: a run stepped, joined by an outside decision-maker, and changed while it runs.

* ``step()`` and ``decisions="external"`` with the caller answering as a rule would give the rule's
  schedule, byte for byte, on every iteration mode and KV mode;
* ``run(until_s=...)`` in pieces gives the same schedule as one ``simulate``;
* replica views are read-only and say what the engine holds;
* replicas added and drained mid-run serve only while they are held, and the validator (from the
  files too) accepts the schedule and checks the replicas' lives.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import workbench
from workbench.engine import Decision, ReplicaView, build_engine
from workbench.errors import ConfigError
from workbench.policies.registry import RULES
from workbench.schedule.schema import Schedule, write_schedule_files
from workbench.schedule.validator import validate, validate_files
from workbench.workload.trace import synthetic_trace

CM = "llama2-70b-h100-tp4"
ONLINE = synthetic_trace(240, seed=3, input_mean_tokens=60, output_mean_tokens=90, rate_per_s=40.0)
BATCH = synthetic_trace(160, seed=5, input_mean_tokens=80, output_mean_tokens=60)

CASES = [
    # id, trace, policy, the rule the caller plays, engine options
    ("hybrid", BATCH, "hybrid", "lagrangian", {}),
    ("static", BATCH, "static", "static", {}),
    ("online-lagrangian", ONLINE, "online", "lagrangian", {"mu": 2.0}),
    ("rolling", ONLINE, "hybrid-rolling", "lagrangian", {}),
    ("paged-exclusive", BATCH, "hybrid", "lagrangian", {"kv": "paged", "kv_capacity_tokens": 1200}),
    ("mixed-reserve", ONLINE, "chunked-prefill", "continuous", {"kv_capacity_tokens": 2000}),
    ("vllm", ONLINE, "vllm", "continuous", {"kv_capacity_tokens": 1600}),
    ("steal-paged", BATCH, "hybrid-steal", "lagrangian", {"kv": "paged", "kv_capacity_tokens": 1200}),
]


def _digest(schedule: Schedule, tmp_path, name: str) -> bytes:
    folder = tmp_path / name
    folder.mkdir()
    write_schedule_files(schedule, folder)
    return b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.iterdir()))


def _answer_as(rule, decision: Decision) -> int:
    """What the engine does with a rule's answer: at most admissible; an empty replica always refills."""
    m = int(rule.admit(decision.view))
    if m <= 0 and decision.must_admit:
        return decision.admissible
    return min(max(m, 0), decision.admissible)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_outside_decisions_answered_as_the_rule_give_the_rules_schedule(case, tmp_path):
    name, trace, policy, rule_name, options = case
    params = {k: v for k, v in options.items() if k == "mu"}
    want = workbench.simulate(trace, 4, 8, policy, CM, **options)
    engine = build_engine(trace, 4, 8, policy, CM, decisions="external", **options)
    rule = RULES[rule_name](**params)
    decisions = 0
    while True:
        step = engine.step()
        if step.decision is not None:
            assert step.decision.view.admissible == step.decision.admissible
            engine.decide(_answer_as(rule, step.decision))
            decisions += 1
        if step.done:
            break
    assert decisions > 0
    got = engine.schedule()
    assert _digest(got, tmp_path, "got") == _digest(want, tmp_path, "want")


def test_run_in_pieces_equals_one_run(tmp_path):
    want = workbench.simulate(ONLINE, 4, 8, "vllm", CM, kv_capacity_tokens=1600)
    engine = build_engine(ONLINE, 4, 8, "vllm", CM, kv_capacity_tokens=1600)
    for until_s in (0.5, 0.5, 1.25, 3.0):
        assert engine.run(until_s=until_s) is None
        assert engine.now_s == max(until_s, engine.now_s) and not engine.done
    engine.run()
    assert engine.done
    assert _digest(engine.schedule(), tmp_path, "got") == _digest(want, tmp_path, "want")


def test_replica_views_are_read_only_and_say_what_the_engine_holds():
    engine = build_engine(ONLINE, 3, 8, "vllm", CM, kv_capacity_tokens=1600)
    engine.run(until_s=2.0)
    views = engine.replicas
    assert [v.index for v in views] == [0, 1, 2] and all(isinstance(v, ReplicaView) for v in views)
    ids = set(ONLINE["request_id"].astype(str))
    for v in views:
        assert v.state == "serving" and v.clock_s <= engine.now_s
        assert 0 < v.kv_used_tokens <= v.kv_capacity_tokens
        assert len(v.running_ids) == v.n_running <= v.batch_size
        assert len(v.waiting_ids) == v.n_waiting and set(v.waiting_ids + v.running_ids) <= ids
        with pytest.raises(AttributeError):
            v.batch_size = 1
    assert "running" in repr(views[0])


def test_a_decision_out_of_range_is_refused_and_the_run_waits():
    engine = build_engine(BATCH, 2, 4, "hybrid", CM, decisions="external")
    decision = engine.run()
    assert isinstance(decision, Decision) and decision.must_admit
    for bad in (0, decision.admissible + 1, 1.5, True):
        with pytest.raises(ConfigError) as err:
            engine.decide(bad)
        assert err.value.field == "admit"
    with pytest.raises(ConfigError, match="waiting for a decision"):
        engine.step()
    engine.decide(decision.admissible)
    with pytest.raises(ConfigError, match="no decision is pending"):
        engine.decide(1)


def _grown_and_drained(policy: str, **options) -> Schedule:
    engine = build_engine(ONLINE, 2, 8, policy, CM, **options)
    engine.run(until_s=1.0)
    added = engine.add_replica(CM, 8, options.get("kv_capacity_tokens"), ready_at_s=1.5)
    assert added == 2 and engine.replicas[2].state == "loading"
    engine.run(until_s=2.0)
    assert engine.replicas[2].state == "serving"
    engine.drain_replica(0)
    assert engine.replicas[0].state in ("draining", "gone")
    engine.run()
    return engine.schedule()


@pytest.mark.parametrize("policy, options", [("least-work", {}), ("round-robin-hybrid", {}),
                                             ("vllm", {"kv_capacity_tokens": 1600})],
                         ids=["paper-engine", "rerouted", "vllm"])
def test_replicas_added_and_drained_mid_run_validate(policy, options, tmp_path):
    if policy == "round-robin-hybrid":
        policy = "online"  # round-robin dispatch: requests sent to the drained replica are rerouted
    s = _grown_and_drained(policy, **options)
    lives = s.metrics["replicas"]
    assert [life["replica"] for life in lives] == [0, 1, 2] and s.metrics["clients"] == 3
    assert lives[2]["added_s"] == 1.0 and lives[2]["ready_s"] == 1.5 and lives[0]["left_s"] is not None
    rq = s.requests
    assert (rq.loc[rq["client"] == 2, "prefill_start_s"] >= 1.5).all() and (rq["client"] == 2).sum() > 0
    assert not ((rq["client"] == 0) & (rq["arrival_s"] > 2.0)).any()  # a draining replica takes no new work
    tl = s.timeline
    assert tl.loc[tl["client"] == 0, "end_s"].max() <= lives[0]["left_s"]
    want = sum((lives[j]["left_s"] or s.makespan_s) - lives[j]["added_s"] for j in range(3))
    assert s.metrics["replica_seconds"] == pytest.approx(want)
    assert s.metrics["replica_seconds"] < 3 * s.makespan_s
    assert validate(s, ONLINE).ok, str(validate(s, ONLINE))
    (tmp_path / "run").mkdir()
    write_schedule_files(s, tmp_path / "run")
    assert validate_files(tmp_path / "run", ONLINE).ok


def test_the_validator_checks_the_replicas_lives(tmp_path):
    s = _grown_and_drained("least-work")
    (tmp_path / "run").mkdir()
    write_schedule_files(s, tmp_path / "run")
    path = tmp_path / "run" / "metrics.json"
    metrics = json.loads(path.read_text())
    first = float(s.timeline.loc[s.timeline["client"] == 2, "start_s"].min())
    metrics["replicas"][2]["ready_s"] = first + 0.5  # a row before the replica is ready
    path.write_text(json.dumps(metrics))
    report = validate_files(tmp_path / "run")
    assert "replica-life" in report.rules_violated()
    metrics["replicas"][2]["ready_s"] = 1.5
    metrics["replica_seconds"] *= 0.5
    path.write_text(json.dumps(metrics))
    assert "replica-life" in validate_files(tmp_path / "run").rules_violated()


def test_a_fixed_fleet_lists_no_lives():
    s = workbench.simulate(ONLINE, 2, 8, "least-work", CM)
    assert "replicas" not in s.metrics and "replica_seconds" not in s.metrics


def test_changes_that_cannot_be_honoured_are_refused():
    engine = build_engine(ONLINE, 2, 8, "least-work", CM)
    engine.run(until_s=1.0)
    with pytest.raises(ConfigError) as err:
        engine.add_replica(CM, 8, ready_at_s=0.5)
    assert err.value.field == "ready_at_s"
    with pytest.raises(ConfigError) as err:
        engine.add_replica("llama31-8b-rtxpro6000-tp1", 8)  # a measured model in a closed-form run
    assert err.value.field == "cost_model"
    with pytest.raises(ConfigError):
        engine.add_replica(CM, 0)
    engine.drain_replica(0)
    with pytest.raises(ConfigError) as err:
        engine.drain_replica(1)  # the last one accepting, with arrivals to come
    assert err.value.field == "replica"
    with pytest.raises(ConfigError):
        engine.drain_replica(0)
    with pytest.raises(ConfigError):
        engine.drain_replica(7)
    with pytest.raises(ConfigError) as err:
        build_engine(ONLINE, 2, 8, decisions="agent")
    assert err.value.field == "decisions"


def test_a_replica_drained_while_it_loads_never_serves():
    engine = build_engine(ONLINE, 2, 8, "least-work", CM)
    engine.run(until_s=1.0)
    j = engine.add_replica(CM, 8, ready_at_s=4.0)
    engine.run(until_s=2.0)
    engine.drain_replica(j)
    engine.run()
    s = engine.schedule()
    assert (s.requests["client"] != j).all()
    life = s.metrics["replicas"][j]
    assert life["left_s"] == 2.0 and s.metrics["replica_seconds"] == pytest.approx(2 * s.makespan_s + 1.0)
    assert validate(s, ONLINE).ok


def test_stepping_reports_what_happened():
    engine = build_engine(ONLINE, 2, 8, "paper-baseline", CM)
    steps = []
    while not engine.done:
        steps.append(engine.step())
    assert sum(s.arrivals for s in steps) == len(ONLINE)
    assert sum(s.segments for s in steps) == len(engine.schedule().runs)
    times = [s.time_s for s in steps]
    assert times == sorted(times) and np.isfinite(times).all()
