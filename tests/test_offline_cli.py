"""`workbench offline`, `exact` and `bound`, and the `offline` simulator policy."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import make_trace
from workbench.cli import main
from workbench.offline import solver_available
from workbench.engine.core import simulate
from workbench.schedule.validator import validate

pytestmark = [pytest.mark.solver,
              pytest.mark.skipif(not solver_available(), reason="HiGHS (highspy) not installed")]


@pytest.fixture
def small_trace_file(tmp_path):
    path = tmp_path / "small.csv"
    make_trace([(40, 3), (90, 2), (15, 4), (60, 1), (30, 3)]).to_csv(path, index=False)
    return path


def test_offline_command_writes_assignment_and_bound(tmp_path, capsys):
    out = tmp_path / "offline"
    assert main(["offline", "--trace", "gsm8k-test", "--clients", "8", "--batch-size", "16", "--out", str(out)]) == 0
    table = pd.read_csv(out / "assignment.csv")
    assert len(table) == 1319 and set(table["client"]) == set(range(8))
    summary = json.loads((out / "assignment.json").read_text())
    assert summary["load_bound_s"] <= summary["makespan_s"] and summary["load_gap"] <= 5e-4
    printed = capsys.readouterr().out
    assert "load bound" in printed and "proven bound" not in printed


def test_offline_and_bound_print_one_lower_bound(tmp_path, capsys):
    """Issue 28: offline printed 'proven bound 24.455708 s' (the load bound) where bound printed 24.456876 s."""
    args = ["--trace", "gsm8k-test", "--clients", "8", "--batch-size", "16"]
    assert main(["bound", *args, "--method", "closed"]) == 0
    bound_s = float(re.search(r"^lower bound ([\d.]+) s", capsys.readouterr().out, re.M).group(1))
    assert main(["offline", *args, "--out", str(tmp_path / "o")]) == 0
    assert float(re.search(r"; lower bound ([\d.]+) s", capsys.readouterr().out).group(1)) == bound_s
    assert json.loads((tmp_path / "o" / "assignment.json").read_text())["lower_bound_s"] == pytest.approx(bound_s,
                                                                                                       abs=1e-6)


def test_exact_command_exports_a_valid_schedule(tmp_path, small_trace_file, capsys):
    out = tmp_path / "exact"
    code = main(["exact", "--trace", str(small_trace_file), "--clients", "2", "--batch-size", "2",
                 "--time-limit", "30", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "optimal" in text and "(same)" in text
    assert validate(out, small_trace_file).ok


def test_exact_command_refuses_big_instances_in_one_line(tmp_path, capsys):
    code = main(["exact", "--trace", "gsm8k-test", "--clients", "8", "--batch-size", "16", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "hybrid" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_bound_command_prints_the_table(small_trace_file, capsys):
    assert main(["bound", "--trace", str(small_trace_file), "--clients", "2", "--batch-size", "2", "--json"]) == 0
    text = capsys.readouterr().out
    for term in ("single_request", "average_work", "bin_packing"):
        assert term in text
    last = json.loads(text.strip().splitlines()[-1])
    from workbench.schedule.bounds import BOUND_REL_MARGIN

    assert last["value_s"] == max(last["terms"].values()) * (1 - BOUND_REL_MARGIN)  # rounded down (MODEL.md 3)


def test_offline_policy_in_the_simulator():
    trace = make_trace([(20 + 7 * i, 2 + i % 9) for i in range(40)])
    schedule = simulate(trace, 3, 4, "offline", "llama-65b")
    assert validate(schedule, trace).ok
    assert schedule.metrics["policy"] == "offline"
    # the bin-packing bound recorded by the offline stage is what metrics.json reports
    assert schedule.metrics["lower_bound_s"] <= schedule.makespan_s
