"""Pools: prefill and decode replicas in the one engine, the KV transfer between them, and their schedule
(MODEL.md sections 9 and 11.11)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench.costmodel.calibrate import LINKS
from workbench.costmodel.linear import load_preset
from workbench.engine import simulate
from workbench.engine.pools import STAGE_ROUTERS, Pools
from workbench.errors import ConfigError
from workbench.schedule.metrics import serving_metrics
from workbench.schedule.schema import Schedule
from workbench.schedule.validator import validate, validate_files


def _trace(n=40, seed=0, prefixes=False):
    rng = np.random.default_rng(seed)
    trace = pd.DataFrame({"request_id": range(n), "input_tokens": rng.integers(40, 300, n),
                          "output_tokens": rng.integers(1, 50, n), "arrival_s": np.sort(rng.uniform(0, 1, n))})
    if prefixes:
        trace["prefix_id"] = rng.choice(["a", "b", ""], n)
        trace["prefix_tokens"] = np.where(trace["prefix_id"] == "", 0, 32)
    return trace


@pytest.mark.parametrize("router", STAGE_ROUTERS)
@pytest.mark.parametrize("kv", ["reserve", "paged"])
def test_the_validator_accepts_pooled_schedules_for_every_router_and_kv_mode(router, kv, tmp_path):
    trace = _trace()
    schedule = simulate(trace, policy="paper-baseline", kv=kv, kv_capacity_tokens=2000,
                        pools=Pools(prefill=2, decode=2, link="pcie", prefill_router=router, decode_router=router))
    assert schedule.metrics["transfers"] == int((trace["output_tokens"] > 1).sum())
    report = validate(schedule)
    assert report.ok, report
    schedule.write(tmp_path / "out")
    report = validate_files(tmp_path / "out", trace=trace)
    assert report.ok, report
    back = Schedule.read(tmp_path / "out")
    pd.testing.assert_frame_equal(back.transfers, schedule.transfers, check_dtype=False)


@pytest.mark.parametrize("overlap", [True, False])
def test_prefix_caching_mixed_roles_and_no_overlap_validate(overlap, tmp_path):
    trace = _trace(prefixes=True, seed=1)
    schedule = simulate(trace, policy="vllm", iteration="exclusive", kv_capacity_tokens=3000,
                        pools=Pools(roles=["prefill", "mixed", "decode"], overlap=overlap, link="rdma"))
    assert schedule.metrics["prefix_cache_hit_rate"] > 0
    schedule.write(tmp_path / "out", format="parquet")
    assert validate_files(tmp_path / "out").ok


def _hand_case():
    return pd.DataFrame({"request_id": [0, 1], "input_tokens": [100, 50], "output_tokens": [4, 3],
                         "arrival_s": [0.0, 0.0]})


def test_one_prefill_one_decode_over_an_infinite_link_gives_the_hand_computed_makespan():
    m = load_preset("llama-65b")
    schedule = simulate(_hand_case(), policy="paper-baseline", batch_size=16,
                        pools=Pools(prefill=1, decode=1, link="infinite"))
    # The prefill replica prefills both prompts in one stage; both KV caches arrive at once (no cost), and the
    # decode replica runs 2 decodes of both (context 101 + 51 at the first), then 1 of request 0 (context 103).
    prefill_s = m.a_p + m.b_p * 150
    both_s = 2 * (m.a_d + m.b_d * 2) + m.c_d * (2 * 152 + 2 * 1)
    alone_s = m.a_d + m.b_d * 1 + m.c_d * 103
    assert schedule.makespan_s == pytest.approx(prefill_s + both_s + alone_s, rel=1e-12)
    assert schedule.transfers["end_s"].tolist() == schedule.transfers["start_s"].tolist() == [prefill_s] * 2
    assert schedule.requests["first_token_s"].tolist() == pytest.approx([prefill_s] * 2, rel=1e-12)
    assert schedule.metrics["lower_bound_s"] <= schedule.makespan_s
    assert validate(schedule).ok


def test_a_decode_before_its_transfer_ends_is_refused(tmp_path):
    schedule = simulate(_trace(), pools=Pools(prefill=2, decode=2, link="pcie"))
    out = schedule.write(tmp_path / "out")
    transfers = pd.read_csv(out / "transfers.csv")
    later = 1.0  # the transfer of the first request, moved a second later, ends after its first decode
    transfers.loc[0, ["start_s", "end_s"]] += later
    transfers.to_csv(out / "transfers.csv", index=False)
    report = validate_files(out)
    assert "decode-all" in report.rules_violated() and "before its transfer ends" in str(report)


def test_memory_exceeded_during_a_transfer_is_refused(tmp_path):
    schedule = simulate(_hand_case(), pools=Pools(prefill=1, decode=1, link="pcie"), kv_capacity_tokens=1000)
    out = schedule.write(tmp_path / "out")
    metrics = json.loads((out / "metrics.json").read_text())
    # Both transfers run at once into client 1, which holds l + o of each: one token less cannot hold them.
    metrics["kv_capacity_tokens"] = [1000, 100 + 4 + 50 + 3 - 1]
    (out / "metrics.json").write_text(json.dumps(metrics))
    report = validate_files(out)
    assert report.rules_violated() == ["transfer-memory"], report


def test_runs_repeat_and_link_costs_add_up():
    trace = _trace(seed=3)
    a = simulate(trace, policy="hybrid", pools=Pools(prefill=2, decode=2, link="rdma"))
    b = simulate(trace, policy="hybrid", pools=Pools(prefill=2, decode=2, link="rdma"))
    pd.testing.assert_frame_equal(a.timeline, b.timeline)
    pd.testing.assert_frame_equal(a.transfers, b.transfers)
    link, kv = LINKS["rdma"], a.metrics["kv_bytes_per_token"]
    span = a.transfers["end_s"] - a.transfers["start_s"]
    expected = link.latency_s + a.transfers["tokens"] * kv / (link.bandwidth_bytes_per_s * link.efficiency * 8)
    assert np.allclose(span, expected, rtol=1e-9)
    served = serving_metrics(a, ttft_slo_s=1.0, tpot_slo_s=0.1)
    assert served["gpus"] == 32 and 0 <= served["slo_attainment"] <= 1
    assert served["goodput_rps_per_gpu"] == pytest.approx(served["goodput_rps"] / 32)


@pytest.mark.parametrize("bad, field", [
    (dict(pools=Pools(prefill=0, decode=1)), "prefill_replicas"),
    (dict(pools=Pools(roles=["decode", "decode"])), "roles"),
    (dict(pools=Pools(prefill=1, decode=1, link="carrier-pigeon")), "link"),
    (dict(pools=Pools(prefill=1, decode=1), iteration="mixed"), "iteration"),
    (dict(pools=Pools(prefill=1, decode=1, decode_router="rolling")), "decode_router"),
])
def test_bad_pools_are_refused_naming_the_field(bad, field):
    with pytest.raises(ConfigError) as info:
        simulate(_hand_case(), **bad)
    assert info.value.field == field


def test_the_gantt_chart_groups_gpus_by_pool_and_draws_transfers():
    from workbench.viz.figures import gantt, pool_gantt

    schedule = simulate(_trace(12), pools=Pools(roles=["decode", "prefill", "decode"], link="pcie"))
    fig = gantt(schedule).to_dict()
    axis = fig["layout"]["yaxis"]
    assert axis["ticktext"] == ["prefill · 1", "decode · 0", "decode · 2"]
    lines = [t for t in fig["data"] if t.get("name") == "KV transfer"]
    assert len(lines) == 1 and len(lines[0]["x"]) == 3 * len(schedule.transfers)
    one = [t for t in pool_gantt(schedule, request_id=0).to_dict()["data"] if t.get("name") == "KV transfer"]
    assert len(one[0]["x"]) == 3


def test_the_command_line_simulates_pools_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from workbench.cli import main

    trace = tmp_path / "t.csv"
    _trace(30).to_csv(trace, index=False)
    out = tmp_path / "a"
    assert main(["simulate", "--trace", str(trace), "--prefill-replicas", "1", "--decode-replicas", "2",
                 "--link", "pcie", "--no-transfer-overlap", "--decode-router", "least-work", "--out", str(out)]) == 0
    assert (out / "transfers.csv").is_file()
    assert json.loads((out / "metrics.json").read_text())["roles"] == ["prefill", "decode", "decode"]
    assert main(["validate", str(out), "--trace", str(trace)]) == 0
    capsys.readouterr()
    for bad in (["--prefill-replicas", "1", "--decode-replicas", "1", "--link", "pigeon"],
                ["--prefill-replicas", "1"], ["--prefill-replicas", "1", "--decode-replicas", "1", "--clients", "3"],
                ["--prefill-replicas", "1", "--decode-replicas", "1", "--policy", "vllm"]):
        target = tmp_path / "bad"
        assert main(["simulate", "--trace", str(trace), *bad, "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "field" in err
        assert not target.exists()


def test_a_pooled_run_steps_and_answers_decisions_as_a_colocated_one_does():
    from workbench.engine import build_engine

    trace = _trace(30, seed=4)
    engine = build_engine(trace, policy="paper-baseline", decisions="external", pools=Pools(prefill=1, decode=2))
    while not engine.done:
        step = engine.step()
        if step.decision is not None:
            engine.decide(step.decision.admissible)
    assert engine.schedule().makespan_s == simulate(trace, pools=Pools(prefill=1, decode=2)).makespan_s
    assert [v.role for v in engine.replicas] == ["prefill", "decode", "decode"]
    with pytest.raises(ConfigError):
        engine.add_replica("llama-65b", 16)


def test_every_replica_mixed_is_todays_engine_byte_for_byte():
    trace = _trace(30, seed=5)
    pooled = simulate(trace, policy="hybrid", pools=Pools(roles=["mixed"] * 3))
    plain = simulate(trace, 3, policy="hybrid")
    pd.testing.assert_frame_equal(pooled.timeline, plain.timeline)
    assert pooled.metrics == plain.metrics and pooled.transfers is None
