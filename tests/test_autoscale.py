"""A fleet that changes size with the load: controllers driving the engine's add_replica/drain_replica.

* ``fixed`` gives the fixed fleet's schedule, row for row;
* every controller's schedule validates (rule ``replica-life``) and its GPU-hours are the replica-seconds
  held times the preset's GPUs;
* on a load that rises and falls, the adaptive controllers grow the fleet, then drain it;
* the registry is a leaf; bad names and parameters are refused in one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import workbench
from workbench.errors import ConfigError
from workbench.policies.controllers import CONTROLLERS, Autoscaling, make_controller
from workbench.policies.scaling import erlang_c
from workbench.schedule.capacity import replica_count_series, slo_metrics
from workbench.schedule.validator import validate
from workbench.workload.trace import synthetic_trace

CM = "llama2-70b-h100-tp4"


def _ramp() -> pd.DataFrame:
    """Low load, a burst five times as high, low again (about 60 s)."""
    parts, start = [], 0.0
    for n, rate in ((60, 3.0), (300, 15.0), (60, 3.0)):
        t = synthetic_trace(n, seed=len(parts), input_mean_tokens=400, output_mean_tokens=120, rate_per_s=rate)
        t["arrival_s"] += start
        start = float(t["arrival_s"].max())
        parts.append(t)
    trace = pd.concat(parts, ignore_index=True)
    trace["request_id"] = [f"r{i}" for i in range(len(trace))]
    return trace


RAMP = _ramp()
FAST = dict(period_s=1.0, startup_s=2.0, scale_down_after_s=3.0, scale_down_cooldown_s=2.0, window_s=6.0,
            max_replicas=6)


def test_fixed_controller_gives_the_fixed_fleets_schedule():
    want = workbench.simulate(RAMP, 2, 8, "vllm", CM, progress=False)
    got = workbench.simulate(RAMP, 2, 8, "vllm", CM, progress=False, controller="fixed",
                             autoscaling=dict(FAST, min_replicas=1))
    pd.testing.assert_frame_equal(got.timeline, want.timeline)
    pd.testing.assert_frame_equal(got.requests, want.requests)
    assert got.metrics["autoscaling"]["added"] == 0 and "replicas" not in got.metrics
    assert got.metrics["gpu_hours"] == pytest.approx(2 * 4 * want.makespan_s / 3600)


@pytest.mark.parametrize("name, params", [("threshold", {"high": 2}), ("target-utilisation", {}),
                                          ("slo", {"ttft_slo_s": 0.5})])
def test_adaptive_controllers_grow_with_the_burst_then_drain_and_validate(name, params):
    s = workbench.simulate(RAMP, 1, 8, "vllm", CM, progress=False, controller=name, controller_params=params,
                           autoscaling=FAST)
    report = validate(s, RAMP)
    assert report.ok, str(report)
    a = s.metrics["autoscaling"]
    assert a["controller"] == name and a["added"] >= 1 and a["startup_s"] == 2.0
    lives = s.metrics["replicas"]
    assert all(life["ready_s"] - life["added_s"] == pytest.approx(2.0) for life in lives[1:])
    assert s.metrics["gpu_hours"] == pytest.approx(s.metrics["replica_seconds"] * 4 / 3600)
    times, counts = replica_count_series(s)
    held = counts["serving"] + counts["loading"] + counts["draining"]
    active = counts["serving"] + counts["loading"]  # max_replicas bounds these; draining ones finish on top
    assert active.max() > 1 and active.max() <= 6 and counts["serving"][0] == 1
    # the area under the count is the replica-seconds held
    assert float(np.sum(held[:-1] * np.diff(times))) == pytest.approx(s.metrics["replica_seconds"])
    f = slo_metrics(s, ttft_slo_s=0.5)
    assert 0 <= f["slo_attainment"] <= f["ttft_attainment"] <= 1 and f["gpu_hours"] == pytest.approx(s.metrics["gpu_hours"])


def test_start_up_is_derived_from_the_presets_weights_over_the_bandwidth():
    settings = Autoscaling(load_bandwidth_bytes_per_s=4e9, overhead_s=10.0)
    assert settings.startup_for(137.96e9, 4) == pytest.approx(10.0 + 137.96e9 / 16e9)
    s = workbench.simulate(RAMP.head(40), 1, 8, "vllm", CM, progress=False, controller="fixed",
                           autoscaling=dict(load_bandwidth_bytes_per_s=4e9, overhead_s=10.0))
    assert s.metrics["autoscaling"]["startup_s"] == pytest.approx(10.0 + 137.96e9 / 16e9)


def test_the_slo_controller_prices_the_queue_with_erlang_c():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.5) == 1.0


def test_bad_controllers_and_settings_are_refused_in_one_line():
    assert set(CONTROLLERS) >= {"fixed", "threshold", "target-utilisation", "slo"}
    with pytest.raises(ConfigError) as err:
        make_controller("hpa")
    assert err.value.field == "controller"
    with pytest.raises(ConfigError) as err:
        make_controller("slo", ttft=1)
    assert err.value.field == "ttft"
    with pytest.raises(ConfigError) as err:
        Autoscaling(min_replicas=3, max_replicas=2)
    assert err.value.field == "max_replicas"
    with pytest.raises(ConfigError) as err:
        workbench.simulate(RAMP, 20, 8, "vllm", CM, controller="fixed")
    assert err.value.field == "clients"


def test_gantt_draws_loading_and_draining(tmp_path):
    from workbench.viz.figures import gantt, replica_count_figure

    s = workbench.simulate(RAMP, 1, 8, "vllm", CM, progress=False, controller="threshold",
                           controller_params={"high": 2}, autoscaling=FAST)
    names = [t.name for t in gantt(s).data]
    assert names[-2:] == ["loading", "draining"]
    loading = next(t for t in gantt(s).data if t.name == "loading")
    assert len(loading.x) == len(s.metrics["replicas"]) - 1  # every added replica loads; the first did not
    fig = replica_count_figure(s)
    assert [t.name for t in fig.data][:3] == ["serving", "loading", "draining"]
    assert [t.name for t in gantt(workbench.simulate(RAMP.head(30), 1, 8, "vllm", CM)).data] == [
        "prefill", "decode", "mixed", "preempt"]


def test_cli_simulate_with_a_controller(tmp_path, capsys):
    from workbench.cli import main

    trace = tmp_path / "ramp.csv"
    RAMP.to_csv(trace, index=False)
    out = tmp_path / "run"
    rc = main(["simulate", "--trace", str(trace), "--policy", "vllm", "--cost-model", CM, "--clients", "1",
               "--batch-size", "8", "--controller", "threshold", "--controller-param", "high=2", "--max-replicas", "4",
               "--control-period", "1", "--startup", "2", "--scale-down-after", "3", "--cooldown", "2",
               "--out", str(out)])
    assert rc == 0
    assert "controller threshold:" in capsys.readouterr().out
    assert validate(str(out), RAMP).ok
    bad = main(["simulate", "--trace", str(trace), "--policy", "vllm", "--cost-model", CM, "--controller", "slo",
                "--controller-param", "ttft=1", "--clients", "1", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert bad == 2 and len(err.splitlines()) == 1 and "ttft" in err and not (tmp_path / "bad").exists()


def test_fleet_study_finds_the_smallest_fixed_fleet_and_runs_each_controller():
    from workbench.studies.capacity import TUNED_SLO, fleet_study, scaled

    table, runs = fleet_study(scaled(RAMP, 0.5), cost_model=CM, batch_size=8, ttft_slo_s=0.5, max_fixed=4,
                              controllers={"slo": {"ttft_slo_s": 0.5},
                                           "slo (tuned)": ("slo", {"ttft_slo_s": 0.5, **TUNED_SLO[0]}, TUNED_SLO[1])},
                              autoscaling={"startup_s": 2.0, "period_s": 1.0})
    smallest = table.attrs["smallest_fixed"]
    fixed = table[table["kind"] == "fixed"]
    assert list(fixed.index) == [f"fixed x{r}" for r in range(1, len(fixed) + 1)]
    assert fixed["meets_ttft"].tolist() == [False] * (len(fixed) - 1) + [smallest is not None]
    assert set(table.index) - set(fixed.index) == {"slo", "slo (tuned)"} and set(runs) == set(table.index)
    assert runs["slo (tuned)"].metrics["autoscaling"]["scale_down_after_s"] == 60.0
