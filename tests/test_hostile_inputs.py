"""Hostile and broken inputs through every entry point (issue 7, part 2).

Entry points: the Python API (``load_trace``/``simulate``/``load_preset``), the
command line (``workbench simulate``, in process, exit code 2 and one line on
stderr) and the widget upload (``TracePicker.load_file``: returns False, shows
the command line's message, keeps the previous trace).  Each case either gets
a clear error (the message fragment below) or a documented, correct behaviour;
no case corrupts an existing output folder.  The table in
``docs/hostile-inputs.md`` lists the same cases with the test that checks each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.cli import main
from workbench.costmodel.linear import LinearCostModel, load_preset
from workbench.errors import ConfigError, TraceError
from workbench.schedule.schema import Schedule, atomic_dir
from workbench.engine.core import simulate
from workbench.workload.trace import MAX_TOKENS, load_trace, synthetic_trace, validate_trace
from workbench.schedule.validator import validate

H = "request_id,input_tokens,output_tokens\n"
HA = "request_id,input_tokens,output_tokens,arrival_s\n"
SMALL = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small")

#: name -> (file name, bytes, message fragment).  Every one is refused by all three entry points.
BAD_FILES = {
    "empty file": ("t.csv", b"", "is empty"),
    "blank lines only": ("t.csv", b"\n \n\n", "is empty"),
    "header only": ("t.csv", H.encode(), "has no rows"),
    "UTF-16": ("t.csv", (H + "0,5,5\n").encode("utf-16"), "is not UTF-8 text"),
    "Latin-1": ("t.csv", (H + "\u00e9t\u00e9,5,5\n").encode("latin-1"), "is not UTF-8 text"),
    "binary junk": ("t.csv", bytes(range(256)) * 4, "cannot read"),
    "row longer than header": ("t.csv", (H + "0,1,2,3\n").encode(), "more fields than its header"),
    "missing column": ("t.csv", b"request_id,input_tokens\n0,5\n", "has no column 'output_tokens'"),
    "semicolon separated": ("t.csv", b"request_id;input_tokens;output_tokens\n0;5;5\n", "has no column 'request_id'"),
    "length above 10^7": ("t.csv", (H + f"0,{MAX_TOKENS + 1},5\n").encode(), "exceeds 10,000,000 tokens"),
    "negative length": ("t.csv", (H + "0,5,5\n1,-3,5\n").encode(), "-3 is below 1"),
    "zero length": ("t.csv", (H + "0,5,0\n").encode(), "0 is below 1"),
    "fractional length": ("t.csv", (H + "0,5.5,5\n").encode(), "is not a whole number"),
    "duplicate ids": ("t.csv", (H + "7,5,5\n7,6,6\n").encode(), "repeats the id of row 0"),
    "empty id": ("t.csv", (H + ",5,5\n").encode(), "field 'request_id', row 0: is empty"),
    "id with a space": ("t.csv", (H + '"a b",5,5\n').encode(), "contains whitespace"),
    "NaN length": ("t.csv", (H + "0,nan,5\n").encode(), "is empty or NaN"),
    "empty length": ("t.csv", (H + "0,,5\n").encode(), "is empty or NaN"),
    "infinite length": ("t.csv", (H + "0,inf,5\n").encode(), "is infinite"),
    "text length": ("t.csv", (H + "0,five,5\n").encode(), "'five' is not a number"),
    "NaN arrival": ("t.csv", (HA + "0,5,5,nan\n").encode(), "is not a finite time >= 0"),
    "infinite arrival": ("t.csv", (HA + "0,5,5,inf\n").encode(), "is not a finite time >= 0"),
    "negative arrival": ("t.csv", (HA + "0,5,5,-1\n").encode(), "is not a finite time >= 0"),
    "arrival as a Unix timestamp in ns": ("t.csv", (HA + "0,5,5,1.7e18\n").encode(), "check the units"),
    "JSON that is not JSON": ("t.json", b"{not json", "cannot read"),
    "JSONL line that is not an object": ("t.jsonl", b'{"request_id": 0, "input_tokens": 1, "output_tokens": 2}\nnull\n',
                                          "cannot read"),
    "corrupt Parquet": ("t.parquet", b"PAR1 not really", "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_python_api(tmp_path, case):
    name, content, needle = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert needle in str(info.value)
    assert "Fix:" in str(info.value) or "no column" in str(info.value)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_cli_keeps_the_old_output(tmp_path, capsys, case):
    name, content, needle = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")
    assert main(["simulate", "--trace", str(path), "--clients", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out"])  # no temporary folder left


@pytest.fixture(scope="module")
def picker():
    widgets = pytest.importorskip("workbench.viz.widgets")
    return widgets.TracePicker("gsm8k-test")


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_widget_upload(picker, case):
    name, content, needle = BAD_FILES[case]
    before, label = picker.trace, picker.label
    assert picker.load_file(name, content) is False
    assert needle in picker.last_error and "workbench-upload" not in picker.last_error
    assert picker.trace is before and picker.label == label
    assert needle.split("'")[0] in picker.error.value or "error" in picker.error.value.lower()


@pytest.mark.parametrize("filename", ["..", "a" * 300 + ".csv", "x\x00.csv"])
def test_widget_upload_with_a_hostile_file_name(picker, filename):
    """The upload is stored under a name of the widget's own; the user's name is only shown."""
    assert picker.load_file(filename, (H + "0,5,5\n").encode()) is True


def test_widget_upload_good_file_after_bad_ones(picker):
    assert picker.load_file("../../elsewhere/ok.csv", (H + "0,5,5\n1,6,6\n").encode()) is True
    assert len(picker.trace) == 2 and picker.label == "uploaded ok.csv"


# -- accepted with a documented behaviour ---------------------------------------------------------------
def test_extra_columns_are_kept_after_the_contract(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("request_id,input_tokens,output_tokens,model,note\n0,5,5,llama,hi\n")
    trace = load_trace(path)
    assert list(trace.columns) == ["request_id", "input_tokens", "output_tokens", "arrival_s", "model", "note"]
    assert trace["note"].tolist() == ["hi"]


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(("\ufeff" + H + "0,5,5\n").encode("utf-8"))
    assert load_trace(path)["request_id"].tolist() == [0]


def test_repeated_column_in_a_table_is_refused():
    frame = pd.DataFrame([[0, 5, 5, 6]], columns=["request_id", "input_tokens", "output_tokens", "input_tokens"])
    with pytest.raises(TraceError, match="two columns named 'input_tokens'"):
        validate_trace(frame)


@pytest.mark.parametrize("ids,needle", [([float("inf"), 1.0], "not an integer a float holds exactly"),
                                         ([1e30, 1.0], "not an integer a float holds exactly")])
def test_float_ids_out_of_range(ids, needle):
    with pytest.raises(TraceError, match=needle):
        validate_trace(pd.DataFrame({"request_id": ids, "input_tokens": [1, 1], "output_tokens": [2, 2]}))


def test_complex_lengths_are_refused():
    frame = pd.DataFrame({"request_id": [0], "input_tokens": pd.Series([1 + 2j], dtype=object), "output_tokens": [2]})
    with pytest.raises(TraceError, match="complex"):
        validate_trace(frame)


def test_lengths_of_10_to_the_7_tokens_simulate_and_validate():
    """MAX_TOKENS itself is accepted; one request of 10^7 in and out is 10^7 iterations, exported row by row."""
    trace = pd.DataFrame({"request_id": [0], "input_tokens": [MAX_TOKENS], "output_tokens": [MAX_TOKENS]})
    s = simulate(trace, 1, 4, "continuous", SMALL)
    assert len(s.runs) == 2  # one prefill and ONE closed-form decode run, not 10^7 loop steps
    alone = SMALL.alone_time_s(MAX_TOKENS, MAX_TOKENS)
    assert s.makespan_s == pytest.approx(float(alone), rel=1e-9)
    assert s.metrics["lower_bound_s"] <= s.makespan_s * (1 + 1e-12)


def test_arrivals_out_of_order_are_served_in_arrival_order():
    """Rows need not be sorted by arrival: the simulator serves requests by arrival time (stable)."""
    trace = pd.DataFrame({"request_id": ["late", "early", "mid"], "input_tokens": [5, 5, 5], "output_tokens": [3, 3, 3],
                          "arrival_s": [10.0, 0.0, 5.0]})
    s = simulate(trace, 1, 1, "paper-baseline", SMALL)
    assert validate(s, trace=trace).ok
    order = s.requests.sort_values("prefill_start_s")["request_id"].tolist()
    assert order == ["early", "mid", "late"]
    assert (s.requests["prefill_start_s"] >= s.requests["arrival_s"]).all()


def test_text_ids_that_look_like_numbers_round_trip(tmp_path):
    """'01', '+1', 'NaN' are ids, not numbers: the exported schedule validates against its trace."""
    trace = pd.DataFrame({"request_id": ["01", "1", "+1", "NaN", "1e3"], "input_tokens": [5, 6, 7, 8, 9],
                          "output_tokens": [3, 4, 5, 2, 1]})
    simulate(trace, 2, 2, "continuous", SMALL).write(tmp_path / "s")
    report = validate(tmp_path / "s", trace=trace)
    assert report.ok, str(report)
    assert Schedule.read(tmp_path / "s").requests["request_id"].tolist() == ["01", "1", "+1", "NaN", "1e3"]


def test_batch_size_larger_than_the_trace():
    """B above the number of requests behaves exactly like B = n (every request fits in one batch)."""
    trace = synthetic_trace(7, seed=4, output_mean_tokens=10)
    big, exact = simulate(trace, 1, 1000, "static", SMALL), simulate(trace, 1, 7, "static", SMALL)
    assert validate(big).ok
    assert big.makespan_s == exact.makespan_s
    pd.testing.assert_frame_equal(big.timeline, exact.timeline)


def test_more_clients_than_requests():
    s = simulate(synthetic_trace(3, seed=1), 50, 4, "paper-baseline", SMALL)
    assert validate(s).ok and s.metrics["clients"] == 50


# -- configuration: Python API and CLI -----------------------------------------------------------------------
@pytest.mark.parametrize("coefficients,needle", [
    (dict(a_p=-0.01), "must be finite and >= 0"),
    (dict(c_d=-1e-9), "must be finite and >= 0"),
    (dict(b_d=float("nan")), "must be finite and >= 0"),
    (dict(a_d=float("inf")), "must be finite and >= 0"),
    (dict(a_p=0.0, b_p=0.0), "a_p and b_p are both 0"),
    (dict(a_d=0.0, b_d=0.0), "a_d and b_d are both 0"),
    (dict(b_p="fast"), "must be a number"),
])
def test_bad_cost_model(tmp_path, capsys, coefficients, needle):
    data = {"a_p": 0.015, "b_p": 1e-4, "a_d": 0.015, "b_d": 1e-4, "c_d": 2e-7, **coefficients}
    with pytest.raises(ConfigError, match=needle):
        LinearCostModel(**data)
    path = tmp_path / "cm.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=needle):
        load_preset(path)
    assert main(["simulate", "--trace", "gsm8k-test", "--cost-model", str(path), "--out", str(tmp_path / "o")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_zero_coefficients_that_keep_iterations_positive_are_allowed():
    """A coefficient of 0 is fine as long as prefills and decodes still take time (c_d = 0: no context cost)."""
    cm = LinearCostModel(a_p=0.0, b_p=1e-3, a_d=0.01, b_d=0.0, c_d=0.0)
    assert validate(simulate(synthetic_trace(20, seed=0), 2, 4, "continuous", cm)).ok


@pytest.mark.parametrize("content,needle", [
    ("{not json", "is not valid JSON"),
    ("", "is not valid JSON"),
    ("[0.01, 0.001]", "must be a JSON object"),
    ('{"a_p": 0.01}', "lacks b_p, a_d, b_d, c_d"),
])
def test_preset_file_that_is_not_a_cost_model(tmp_path, capsys, content, needle):
    path = tmp_path / "preset.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_preset(path)
    assert main(["simulate", "--trace", "gsm8k-test", "--cost-model", str(path), "--out", str(tmp_path / "o")]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,needle", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=[4, 4]), "2 batch sizes for 3 clients"),
    (dict(clients=0), "clients"),
    (dict(kv_capacity_tokens=10), "needs"),
    (dict(kv_capacity_tokens=[10_000, 10_000, 10]), "where it was dispatched, holds 10"),
    (dict(kv_capacity_tokens=0), "kv_capacity_tokens"),
    (dict(assignment=np.full(12, 0.5)), "assignment must give each"),
    (dict(policy="nope"), "unknown policy"),
])
def test_bad_options_python_api(kwargs, needle):
    args = dict(clients=3, batch_size=4, policy="continuous")
    args.update(kwargs)
    with pytest.raises(ConfigError, match=needle):
        simulate(synthetic_trace(12, seed=0), cost_model=SMALL, **args)


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "16,16"], "2 batch sizes for 8 clients"),
    (["--batch-size", ","], "--batch-size"),
    (["--batch-size", "0"], "batch_size"),
    (["--kv-capacity", "1"], "needs"),
    (["--kv-capacity", "lots"], "is not a number of tokens"),
    (["--prompt-column", "nope"], "column 'nope' is not in"),
    (["--param", "mu"], "is not KEY=VALUE"),
])
def test_bad_options_cli(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code = None
    try:
        code = main(["simulate", "--trace", "gsm8k-test", "--out", str(out), *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_compare_without_policies(tmp_path, capsys):
    assert main(["compare", "--trace", "gsm8k-test", "--policies", ",", "--out", str(tmp_path / "c")]) == 2
    assert "no policy named" in capsys.readouterr().err


# -- output folders -------------------------------------------------------------------------------------------
def test_output_folder_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "2", "--out", str(target)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert target.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("where", ["cwd", "dot", "parent", "empty"])
def test_output_folder_that_holds_the_working_folder_is_refused(tmp_path, monkeypatch, capsys, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    monkeypatch.chdir(work)
    out = {"cwd": str(work), "dot": ".", "parent": "..", "empty": ""}[where]
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "2", "--out", out]) == 2
    assert "would replace everything in it" in capsys.readouterr().err
    assert (work / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_while_writing_leaves_the_old_output(tmp_path, exc):
    out = tmp_path / "out"
    simulate(synthetic_trace(5, seed=0), 1, 2, "static", SMALL).write(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(type(exc)):
        with atomic_dir(out) as tmp:
            (tmp / "timeline.csv").write_text("half")
            raise exc
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_ctrl_c_in_the_cli_exits_130_and_keeps_the_output(tmp_path, monkeypatch, capsys):
    import workbench.engine.core as sim

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim, "simulate", interrupted)
    assert main(["simulate", "--trace", "gsm8k-test", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# -- 10^6 requests ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def million(tmp_path_factory):
    trace = synthetic_trace(1_000_000, seed=0, output_mean_tokens=64)
    path = tmp_path_factory.mktemp("big") / "million.csv"
    trace.to_csv(path, index=False)
    return trace, path


def test_a_million_requests_load_and_validate(million):
    trace, path = million
    loaded = load_trace(path)
    assert len(loaded) == 1_000_000 and loaded["request_id"].is_unique


def test_200k_requests_simulate(million):
    """The simulator's loop is event-based: it steps over decode runs, far fewer than iterations."""
    trace, _ = million
    s = simulate(trace.iloc[:200_000], 16, 32, "paper-baseline", SMALL)
    assert s.metrics["makespan_s"] >= s.metrics["lower_bound_s"]
    decode = s.runs[s.runs["kind"] == "decode"]
    assert len(decode) < int(decode["iterations"].sum()) / 2


@pytest.mark.slow
def test_a_million_requests_simulate(million):
    """10^6 requests simulate (about 18 s on 2 cores; benchmarks/scaling.py times it); the timeline is not expanded."""
    trace, _ = million
    s = simulate(trace, 64, 32, "paper-baseline", SMALL)
    assert s.metrics["makespan_s"] >= s.metrics["lower_bound_s"]
    assert s._timeline is None  # nothing asked for the per-iteration rows, so none were built


# -- the fuzzers, briefly (the real runs: python fuzz/fuzz_*.py --minutes 5) -------------------------------
@pytest.mark.parametrize("script", ["fuzz_trace_loader", "fuzz_validator"])
def test_fuzz_smoke(script):
    import importlib.util
    import sys

    fuzz_dir = Path(__file__).resolve().parents[1] / "fuzz"
    sys.path.insert(0, str(fuzz_dir))
    try:
        spec = importlib.util.spec_from_file_location(f"_smoke_{script}", fuzz_dir / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        harness = importlib.import_module("_harness")
    finally:
        sys.path.remove(str(fuzz_dir))
    strategy = module.INPUT if script == "fuzz_trace_loader" else module.EXAMPLE
    result = harness.run(script, strategy, module.target, examples=40, seed=1, describe=module.describe)
    assert result.tried == 40
    assert not result.findings, result.summary()
