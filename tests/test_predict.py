"""Output-length predictors and the simulator's predicted-length mode (workbench.workload.predict)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_trace

from workbench.errors import ConfigError
from workbench.policies.registry import list_policies
from workbench.workload.predict import (
    Bucketed,
    Column,
    Exact,
    Noisy,
    make_predictor,
    prediction_error,
)
from workbench.engine import ClientState, simulate
from workbench.workload.trace import load_trace, synthetic_trace
from workbench.schedule.validator import validate

TRACE = synthetic_trace(300, seed=4, input_mean_tokens=60, output_mean_tokens=120)
#: Makespans of today's schedules (before predictions existed), bit for bit: exact predictions change nothing.
GOLDEN = {"paper-baseline": 29.79229209214225, "online": 27.80361399503582, "least-work": 29.11263929480398,
          "static": 46.329720478606205}


def test_exact_is_the_truth():
    assert np.array_equal(Exact().predict(TRACE), TRACE["output_tokens"].to_numpy())


def test_noisy_is_seeded_mean_preserving_and_at_least_one():
    big = synthetic_trace(20_000, seed=1)
    a = Noisy(0.5, seed=3).predict(big)
    assert np.array_equal(a, Noisy(0.5, seed=3).predict(big))
    assert not np.array_equal(a, Noisy(0.5, seed=4).predict(big))
    assert a.dtype == np.int64 and a.min() >= 1
    factors = Noisy(0.5, seed=3).factors(200_000)
    assert abs(factors.mean() - 1) < 0.01  # mean-preserving
    assert abs(np.log(factors).std() - 0.5) < 0.01  # spread = sd of the log error
    assert np.array_equal(Noisy(0.0).predict(big), big["output_tokens"].to_numpy())


def test_noisy_rejects_bad_spreads():
    for bad in (-0.1, float("nan"), "x"):
        with pytest.raises(ConfigError):
            Noisy(bad)


def test_bucketed_predicts_class_means():
    p = Bucketed(4).predict(TRACE)
    cls = Bucketed(4).classes(TRACE["output_tokens"].to_numpy())
    assert len(np.unique(cls)) == 4 and len(np.unique(p)) <= 4
    for k in range(4):  # one prediction per class, its mean
        o = TRACE["output_tokens"].to_numpy()[cls == k]
        assert np.all(p[cls == k] == max(1, round(o.mean())))
    e = Bucketed(edges=[50, 150]).predict(TRACE)
    assert len(np.unique(e)) <= 3
    with pytest.raises(ConfigError):
        Bucketed()
    with pytest.raises(ConfigError):
        Bucketed(edges=[5, 3])


def test_column_from_the_trace_or_a_table():
    trace = make_trace([(10, 5), (10, 9), (10, 2)])
    trace["guess"] = [4.4, 20, 0]
    assert Column("guess").predict(trace).tolist() == [4, 20, 1]
    table = pd.DataFrame({"request_id": [2, 0, 1], "p": [7, 8, 9]})
    assert Column("p", table=table).predict(trace).tolist() == [8, 9, 7]
    with pytest.raises(ConfigError):
        Column("nope").predict(trace)
    # simulate reads the column from the DataFrame it is given (load_trace drops extra columns)
    s = simulate(trace, 1, 2, "online", "llama-65b", predictor="column:guess")
    assert s.requests["predicted_output_tokens"].tolist() == [4, 20, 1]


def test_registry_strings():
    assert isinstance(make_predictor("exact"), Exact)
    n = make_predictor("noisy:0.2:7")
    assert (n.spread, n.seed) == (0.2, 7)
    assert make_predictor("noisy:0.3").seed == 0
    assert make_predictor("bucketed:8").n_classes == 8
    assert make_predictor("column:x").column == "x"
    assert make_predictor(None) is None
    for bad in ("noisy", "bucketed:x", "oracle", "exact:1"):
        with pytest.raises(ConfigError):
            make_predictor(bad)
    # the name a schedule records parses back to the same predictor
    assert make_predictor(n.name).name == n.name


@pytest.mark.parametrize("policy", list_policies())
def test_exact_predictions_change_nothing(policy):
    plain = simulate(TRACE, 3, 8, policy, "llama-65b")
    exact = simulate(TRACE, 3, 8, policy, "llama-65b", predictor=Exact())
    pd.testing.assert_frame_equal(plain.timeline, exact.timeline)
    assert exact.metrics["params"]["predictor"] == "exact"


@pytest.mark.parametrize("policy", sorted(GOLDEN))
def test_paper_scenario_schedules_are_todays(policy):
    s = simulate(load_trace("gsm8k-test"), 8, 16, policy, "llama-65b", predictor="exact")
    assert s.makespan_s == GOLDEN[policy]


@pytest.mark.parametrize("policy", list_policies())
def test_noisy_schedules_validate_and_repeat(policy, tmp_path):
    a = simulate(TRACE, 3, 8, policy, "llama-65b", predictor="noisy:0.5:1")
    b = simulate(TRACE, 3, 8, policy, "llama-65b", predictor=Noisy(0.5, 1))
    pd.testing.assert_frame_equal(a.timeline, b.timeline)
    report = validate(a, TRACE)
    assert report.ok, report
    a.write(tmp_path / "s")
    assert validate(tmp_path / "s", TRACE).ok
    written = pd.read_csv(tmp_path / "s" / "requests.csv")
    assert (written["predicted_output_tokens"] >= 1).all()
    assert (written["output_tokens"] == TRACE["output_tokens"]).all()  # the simulator ran the truth


def test_predictions_drive_the_schedulers():
    """Schedulers act on the predictions: reversing them reverses longest-output-first."""
    trace = make_trace([(10, o) for o in (5, 50, 20, 80)])
    reverse = Column("p", table=pd.DataFrame({"request_id": [0, 1, 2, 3], "p": [80, 20, 50, 5]}))
    s = simulate(trace, 1, 1, "online", "llama-65b", predictor=reverse)
    first = s.requests.sort_values("prefill_start_s")["request_id"].tolist()
    assert first == [0, 2, 1, 3]  # by predicted length, longest first
    truth = simulate(trace, 1, 1, "online", "llama-65b")
    assert truth.requests.sort_values("prefill_start_s")["request_id"].tolist() == [3, 1, 2, 0]


def test_predicted_finish_counts_clamp_outlived_requests(small_cost):
    c = ClientState(0, 4, small_cost, None, 1.0)
    c.running = [(30, 0), (40, 1), (50, 2)]
    c.predicted_finish = [12, 45, 20]
    c.decode_count = 25  # request 0 and 2 outlived their predictions
    assert c.predicted_finish_counts() == [26, 26, 45]
    assert c.predicted_iterations_to_next_completion() == 1
    c.decode_count = 10
    assert c.predicted_finish_counts() == [12, 20, 45]
    assert c.predicted_iterations_to_next_completion() == 2


def test_prediction_error_summary():
    err = prediction_error(TRACE, Noisy(0.2, 0).predict(TRACE))
    assert 0.1 < err["mean_relative_error"] < 0.3
    assert 0.15 < err["sd_log_error"] < 0.25


def test_cli_predictor_option(tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "s"
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "4", "--batch-size", "8", "--policy",
                 "hybrid-steal", "--predictor", "noisy:0.3:2", "--out", str(out)]) == 0
    assert validate(out, "gsm8k-test").ok
    assert pd.read_csv(out / "requests.csv")["predicted_output_tokens"].min() >= 1
    assert main(["compare", "--clients", "2", "--batch-size", "8", "--policies", "paper-baseline,online",
                 "--predictor", "bucketed:4"]) == 0


@pytest.mark.parametrize("spec, field", [("noisy:1e308", "spread"), ("noisy:6", "spread"),
                                         ("bucketed:1e20", "n_classes"), ("bucketed:1e12", "n_classes"),
                                         ("bucketed:2.5", "n_classes")])
def test_predictor_arguments_out_of_range_are_refused_naming_the_field(spec, field):
    # noisy:1e308 overflowed, bucketed:1e20 overflowed a C long, bucketed:1e12 tried to allocate 7 TiB
    with pytest.raises(ConfigError) as info:
        make_predictor(spec).predict(synthetic_trace(50, seed=1))
    assert info.value.field == field and "Fix:" in str(info.value), str(info.value)


def test_many_classes_take_memory_of_the_requests_not_of_the_classes():
    import tracemalloc

    trace = synthetic_trace(50, seed=1)
    tracemalloc.start()
    predicted = Bucketed(10**6).predict(trace)  # more classes than requests: each its own class
    peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak_bytes < 10**6 and predicted.tolist() == trace["output_tokens"].tolist()


def test_cli_refuses_an_out_of_range_predictor_with_exit_2(tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "s"
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "2", "--batch-size", "8", "--predictor",
                 "bucketed:1e12", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "n_classes" in err and len(err.strip().splitlines()) == 1 and not out.exists()
