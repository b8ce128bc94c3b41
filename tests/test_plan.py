"""``workbench plan``: the cheapest fleet meeting an SLO, pruned by bounds, certified by them.

* on a small space the plan's answer equals exhaustive search (every configuration simulated), with
  either strategy, and every configuration's simulated attainment is at most its bound (so pruning never
  drops one that meets the objective);
* a Dask LocalCluster of two worker processes gives the same table as the in-process run;
* the command line writes its table, summary and report, and refuses bad input in one line.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from workbench.costmodel.prices import gpu_prices, preset_hardware, usd_per_replica_hour
from workbench.errors import ConfigError
from workbench.studies.plan import Objective, PlanTask, Space, bound_rows, configurations, plan, run_config
from workbench.workload.trace import synthetic_trace

TRACE = synthetic_trace(160, seed=11, input_mean_tokens=600, output_mean_tokens=60, rate_per_s=40.0)
SPACE = Space(presets=("llama2-70b-h100-tp4", "llama2-70b-a100-tp4"), replicas=(1, 2, 3, 4), batch_sizes=(16, 64),
              policies=("vllm",))
OBJ = Objective(ttft_s=0.5, tpot_s=0.06)


def _exhaustive() -> tuple[pd.DataFrame, int | None]:
    prices = gpu_prices()
    rows = []
    for c in configurations(SPACE):
        rows.append({**c, **run_config(PlanTask(c, TRACE, OBJ, usd_per_replica_hour(c["preset"], prices)))})
    table = pd.DataFrame(rows)
    table.index = table["config"].to_numpy()
    met = table[table["meets"]].sort_values(["usd_per_hour", "attainment", "config"], ascending=[True, False, True])
    return table, (int(met.index[0]) if len(met) else None)


EXHAUSTIVE = None


def _all():
    global EXHAUSTIVE
    if EXHAUSTIVE is None:
        EXHAUSTIVE = _exhaustive()
    return EXHAUSTIVE


@pytest.mark.parametrize("strategy", ["grid", "cheapest-first"])
def test_plan_equals_exhaustive_search_on_a_small_space(strategy):
    table, best = _all()
    result = plan(TRACE, SPACE, OBJ, strategy=strategy, progress=False)
    assert best is not None and result.chosen == best
    s = result.summary()
    assert s["pruned"] > 0 and s["simulated"] < s["configurations"]
    assert result.table["pruned"].sum() + result.table["simulated"].sum() <= len(table)
    # the bound on the cheapest possible is below the true cheapest; the gap is what separates them
    assert result.cost_bound_usd_per_hour <= table.loc[best, "usd_per_hour"] + 1e-9
    assert result.gap == pytest.approx(table.loc[best, "usd_per_hour"] / result.cost_bound_usd_per_hour - 1)
    if strategy == "cheapest-first":
        assert s["simulated"] <= plan(TRACE, SPACE, OBJ, progress=False).summary()["simulated"]


def test_no_simulated_attainment_exceeds_its_bound():
    table, _ = _all()
    bounds = bound_rows(TRACE, configurations(SPACE), OBJ, gpu_prices()).set_index("config")
    assert (table["attainment"] <= bounds.loc[table.index, "bound"] + 1e-12).all()
    assert not (table["meets"] & bounds.loc[table.index, "pruned"]).any()  # pruning never drops a winner


def test_the_cost_table_states_its_sources_and_dates():
    prices = gpu_prices()
    assert {"source", "as_of"} <= set(prices.columns) and prices["source"].str.len().min() > 10
    assert preset_hardware("llama2-70b-h100-tp4") == {"gpu": "H100-80GB", "gpus": 4, "weight_bytes": 137.96e9}
    assert usd_per_replica_hour("llama2-70b-h100-tp4") == pytest.approx(4 * prices.loc["H100-80GB", "usd_per_gpu_hour"])


def test_a_price_table_of_ones_own_is_checked(tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_text("gpu,usd_per_gpu_hour,source,as_of\nH100-80GB,free,me,2026\n")
    with pytest.raises(ConfigError) as err:
        gpu_prices(bad)
    assert err.value.field == "usd_per_gpu_hour" and err.value.row == 2
    with pytest.raises(ConfigError):
        Objective(ttft_s=None, tpot_s=None)


@pytest.mark.slow
def test_a_dask_cluster_of_two_processes_gives_the_same_answer():
    local = plan(TRACE, SPACE, OBJ, progress=False)
    dask = plan(TRACE, SPACE, OBJ, workers=2, progress=False)
    assert dask.info["executor"] == "dask" and dask.info["workers"] == 2
    assert dask.chosen == local.chosen
    cols = ["config", "pruned", "simulated", "attainment", "usd_per_hour", "meets", "pareto"]
    pd.testing.assert_frame_equal(dask.table[cols], local.table[cols])


def test_cli_plan_writes_table_summary_and_report(tmp_path, capsys):
    from workbench.cli import main

    trace = tmp_path / "trace.csv"
    TRACE.to_csv(trace, index=False)
    out = tmp_path / "plan"
    rc = main(["plan", "--trace", str(trace), "--presets", "llama2-70b-h100-tp4", "--replicas", "1-4",
               "--batch-sizes", "16,64", "--ttft-p99", "0.5", "--tpot-p99", "0.06", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "pruned by the bounds" in text and "certified gap" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["configurations"] == 8 and summary["pruned"] + summary["simulated"] <= 8
    assert len(pd.read_csv(out / "plan.csv")) == 8 and (out / "report.html").stat().st_size > 1000


@pytest.mark.parametrize("argv, field", [
    (["--replicas", "0-3"], "--replicas"),
    (["--presets", "nope"], "cost_model"),
    (["--controllers", "hpa"], "--controllers"),
    (["--workers", "-1"], "--workers"),
])
def test_cli_plan_refuses_bad_input_in_one_line(tmp_path, capsys, argv, field):
    from workbench.cli import main

    out = tmp_path / "plan"
    rc = main(["plan", "--trace", "gsm8k-test", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and not out.exists()
    assert field.strip("-").split("-")[0] in err


def test_a_controller_in_the_space_is_priced_by_the_gpu_hours_it_held():
    space = Space(presets=("llama2-70b-h100-tp4",), replicas=(3,), batch_sizes=(16,), controllers=("fixed", "threshold"))
    result = plan(TRACE, space, OBJ, progress=False)
    t = result.table.set_index("controller")
    per_replica = usd_per_replica_hour("llama2-70b-h100-tp4")
    assert t.loc["fixed", "least_usd_per_hour"] == pytest.approx(3 * per_replica)
    assert t.loc["threshold", "least_usd_per_hour"] == pytest.approx(per_replica)  # it may hold only one
    if t.loc["threshold", "simulated"]:
        assert per_replica - 1e-9 <= t.loc["threshold", "usd_per_hour"] <= 3 * per_replica + 1e-9


@pytest.mark.slow
def test_a_worker_killed_midway_changes_nothing():
    """A real scheduler with two worker processes; one is killed while the plan simulates (a quarter of the
    in-process run's simulation time after the bounds, so tasks are in flight): its tasks are run again
    elsewhere (the nanny restarts it), and the answer is the in-process one."""
    import logging
    import os
    import signal
    import threading
    import time

    from dask.distributed import Client, LocalCluster

    trace = synthetic_trace(900, seed=12, input_mean_tokens=600, output_mean_tokens=60, rate_per_s=60.0)
    space = Space(presets=("llama2-70b-h100-tp4",), replicas=(1, 2, 3, 4, 5, 6), batch_sizes=(16,))
    started = time.perf_counter()
    local = plan(trace, space, OBJ, progress=False)
    local_s = time.perf_counter() - started
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster:
        with Client(cluster) as client:
            pid = next(iter(client.run(os.getpid).values()))
        state = {"running": False, "killed_while_running": False}

        def kill_midway():
            while not state["running"]:
                time.sleep(0.005)
            # past the bounds (no task yet) and a quarter into the simulations, which two workers halve
            time.sleep(local.info["bound_s"] + (local_s - local.info["bound_s"]) / 4)
            state["killed_while_running"] = state["running"]
            os.kill(pid, signal.SIGKILL)

        watcher = threading.Thread(target=kill_midway, daemon=True)
        watcher.start()
        state["running"] = True
        remote = plan(trace, space, OBJ, scheduler=cluster.scheduler_address, progress=False)
        state["running"] = False
        watcher.join(timeout=30)
    assert state["killed_while_running"], "the worker was killed after the plan had finished"
    assert remote.info["executor"] == "dask" and remote.chosen == local.chosen
    cols = ["config", "pruned", "simulated", "attainment", "usd_per_hour", "meets"]
    pd.testing.assert_frame_equal(remote.table[cols], local.table[cols])


def test_the_bound_grows_with_the_fleet_and_its_least_fleet_is_found_by_bisection():
    from workbench.costmodel import load_preset
    from workbench.schedule.capacity import min_replicas_bound, slo_bound

    model = load_preset("llama2-70b-a100-tp4")
    bounds = [slo_bound(TRACE, model, c, 16, ttft_slo_s=0.5, tpot_slo_s=0.06)["bound"] for c in range(1, 9)]
    assert bounds == sorted(bounds) and bounds[0] < 0.99 <= bounds[-1]
    least = min_replicas_bound(TRACE, model, 16, ttft_slo_s=0.5, tpot_slo_s=0.06, attainment=0.99, max_replicas=8)
    assert least == 1 + next(k for k, b in enumerate(bounds) if b >= 0.99)
