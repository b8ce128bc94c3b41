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
    # pandas 3 refuses it as a CSV it cannot parse, pandas 2 as text that is not UTF-8: one line either way.
    "binary junk": ("t.csv", bytes(range(256)) * 4, ("cannot read", "is not UTF-8 text")),
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
    "column named twice": ("t.csv", b"output_tokens,input_tokens,request_id,input_tokens\n48,59,22,10\n",
                           "has two columns named 'input_tokens'. Fix: give each column once."),
    "JSONL input_tokens: true": ("t.jsonl", b'{"request_id": 0, "input_tokens": true, "output_tokens": 2}\n',
                                 "field 'input_tokens', row 0: true is a boolean, not a number"),
    "CSV ids 1e3 beside 1000 are two ids": ("t.csv", (H + "1e3,5,5\n1000,5,5\n1000,6,6\n").encode(),
                                            "field 'request_id', row 2: '1000' repeats the id of row 1"),
}


def _found(needle, text: str, *, before_quote: bool = False) -> bool:
    """Whether ``text`` holds the case's expected words (one of them, where pandas versions differ)."""
    for words in (needle if isinstance(needle, tuple) else (needle,)):
        if (words.split("'")[0] if before_quote else words) in text:
            return True
    return False


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_python_api(tmp_path, case):
    name, content, needle = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert _found(needle, str(info.value))
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
    assert _found(needle, err) and len(err.splitlines()) == 1 and "Traceback" not in err
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
    assert _found(needle, picker.last_error) and "workbench-upload" not in picker.last_error
    assert picker.trace is before and picker.label == label
    assert _found(needle, picker.error.value, before_quote=True) or "error" in picker.error.value.lower()


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


def test_output_folder_that_cannot_be_moved_aside(tmp_path, monkeypatch, capsys):
    """Issue 27 item 11: an earlier output that cannot be renamed (immutable, or permissions) gave a
    PermissionError traceback; it is one line naming --out, and the earlier output stays whole."""
    import workbench.schedule.schema as schema

    out = tmp_path / "out"
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "2", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = schema.os.replace

    def refuse_moving_out(src, dst):
        if Path(src) == out:
            raise PermissionError(1, "Operation not permitted")
        return real_replace(src, dst)

    monkeypatch.setattr(schema.os, "replace", refuse_moving_out)
    capsys.readouterr()
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot replace" in err and "Operation not permitted" in err and "field 'out'" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


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


def test_ctrl_c_while_the_package_imports_is_one_line(tmp_path):
    """Issue 27 item 19: a Ctrl-C in the first half second (while ``workbench`` imports pandas, Plotly and
    Pyomo) printed a 35-line traceback.  The console script's entry point lives outside the package, so the
    import happens inside it; the interrupt is planted at the import, so no timing is involved."""
    import subprocess
    import sys
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["workbench"] == "_workbench_main:main"
    planted = (
        "import importlib.abc, sys\n"
        "class Interrupt(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'workbench.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "import _workbench_main\n"
        "sys.exit(_workbench_main.main())\n")
    run = subprocess.run([sys.executable, "-c", planted], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (run.returncode, run.stderr, run.stdout) == (130, "workbench: interrupted\n", "")


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


# -- issue 12: options honoured or refused, ids as written, no hangs ---------------------------------------
def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


#: Each case: (files to write {name: text}, CLI arguments with {tmp} for the folder, the exact error line).
#: The line is what `workbench ...` prints on stderr, exit status 2, nothing written.
ISSUE12_CLI = {
    "--param steal=maybe": ({}, ["simulate", "--policy", "hybrid-steal", "--param", "steal=maybe"],
                            "workbench simulate: error: field 'steal': 'maybe' is not a boolean (true/false, yes/no, "
                            "1/0). Fix: give steal as a boolean (true/false, yes/no, 1/0) (work stealing: a client "
                            "with free slots and an empty queue takes waiting requests from the most loaded client)."),
    "--param mue=5 (a typo)": ({}, ["simulate", "--policy", "hybrid", "--param", "mue=5"],
                               "workbench simulate: error: field 'mue': 'mue' is an unknown parameter of policy "
                               "'hybrid'. Fix: use one of horizon, lookahead, method, mu, rel_gap, steal, time_limit."),
    "--param token_budget=5 on static": ({}, ["simulate", "--policy", "static", "--param", "token_budget=5"],
                                         "workbench simulate: error: field 'token_budget': 'token_budget' is a "
                                         "parameter that policy 'static' does not take. Fix: use one of steal."),
    "--param mu=fast": ({}, ["simulate", "--policy", "hybrid", "--param", "mu=fast"],
                        "workbench simulate: error: field 'mu': 'fast' is not a number. Fix: give mu as a number "
                        "(price multiplier: 0 = static, inf = continuous, 1 = the plain price)."),
    "compare: a parameter no policy takes": ({}, ["compare", "--policies", "static,continuous", "--param", "mu=2"],
                                             "workbench compare: error: field 'mu': no policy of static, continuous "
                                             "takes parameter 'mu'. Fix: drop it, or add a policy that takes it "
                                             "(workbench policies lists them)."),
    "preset a_p: true": ({"p.json": '{"a_p": true, "b_p": 0, "a_d": 0.01, "b_d": 0, "c_d": 0}'},
                         ["simulate", "--cost-model", "{tmp}/p.json"],
                         "workbench simulate: error: field 'a_p': must be a number, got True. Fix: give every "
                         "coefficient as seconds, a JSON number >= 0 (not text or true/false)."),
    "preset a_p: \"0.015\"": ({"p.json": '{"a_p": "0.015", "b_p": 0, "a_d": 0.01, "b_d": 0, "c_d": 0}'},
                              ["simulate", "--cost-model", "{tmp}/p.json"],
                              "workbench simulate: error: field 'a_p': must be a number, got '0.015'. Fix: give "
                              "every coefficient as seconds, a JSON number >= 0 (not text or true/false)."),
    "preset kv_capacity_tokens: 1000.5": (
        {"p.json": '{"a_p": 0.01, "b_p": 0, "a_d": 0.01, "b_d": 0, "c_d": 0, "kv_capacity_tokens": 1000.5}'},
        ["simulate", "--cost-model", "{tmp}/p.json"],
        "workbench simulate: error: field 'kv_capacity_tokens': must be a whole number of tokens in 1..10**12, got "
        "1000.5. Fix: give the KV cache size in tokens, or leave it out."),
    "preset kv_capacity_tokens: \"lots\"": (
        {"p.json": '{"a_p": 0.01, "b_p": 0, "a_d": 0.01, "b_d": 0, "c_d": 0, "kv_capacity_tokens": "lots"}'},
        ["simulate", "--cost-model", "{tmp}/p.json"],
        "workbench simulate: error: field 'kv_capacity_tokens': must be a whole number of tokens in 1..10**12, got "
        "'lots'. Fix: give the KV cache size in tokens, or leave it out."),
    "preset number of 400 digits": ({"p.json": '{"a_p": 1' + "0" * 399 + ', "b_p": 0, "a_d": 0.01, "b_d": 0, "c_d": 0}'},
                                    ["simulate", "--cost-model", "{tmp}/p.json"],
                                    "workbench simulate: error: field 'a_p': a number of 400 digits is too large for a "
                                    "float. Fix: give seconds, at most 10000."),
    "a_p = a_d = 1e308": ({"p.json": '{"a_p": 1e308, "b_p": 0, "a_d": 1e308, "b_d": 0, "c_d": 0}'},
                          ["simulate", "--cost-model", "{tmp}/p.json"],
                          "workbench simulate: error: field 'a_p': 1e+308 s is above 10000 s. Fix: check the units: "
                          "coefficients are in seconds (an iteration of hours, summed over a trace, overflows the "
                          "clock)."),
    "--kv-capacity preset, preset without one": (
        {"p.json": '{"a_p": 0.01, "b_p": 0, "a_d": 0.01, "b_d": 0, "c_d": 0}'},
        ["simulate", "--cost-model", "{tmp}/p.json", "--kv-capacity", "preset"],
        "workbench simulate: error: field 'kv_capacity_tokens': 'preset' asks for the preset's KV capacity, but p "
        "has none (client 0). Fix: give a capacity in tokens, or a preset with kv_capacity_tokens."),
    "--cost-model DIR.json (a folder)": ({"d.json/x": ""}, ["simulate", "--cost-model", "{tmp}/d.json"],
                                         "workbench simulate: error: field 'cost_model': cost-model file "
                                         "'{tmp}/d.json' is a folder, not a file. Fix: give the path of a JSON "
                                         "file, or one of the presets {presets}."),
    "--trace DIR.json (a folder)": ({"d.json/x": ""}, ["simulate", "--trace", "{tmp}/d.json"],
                                    "workbench simulate: error: field 'trace': trace '{tmp}/d.json' is a folder, not "
                                    "a file. Fix: give the path of a CSV, Parquet or JSONL file."),
    "--trace /dev/zero": ({}, ["simulate", "--trace", "/dev/zero"],
                          "workbench simulate: error: field 'trace': trace '/dev/zero' is a device; only regular "
                          "files are read. Fix: save the data to a file first and give its path."),
    "--clients 10000000": ({}, ["simulate", "--clients", "10000000"],
                           "workbench simulate: error: field 'clients': 10,000,000 is above the limit of 100,000. "
                           "Fix: give clients as an integer >= 1 and <= 100,000."),
    "--clients 1000000000000 (bound)": ({}, ["bound", "--clients", "1000000000000"],
                                        "workbench bound: error: field 'clients': 1,000,000,000,000 is above the "
                                        "limit of 100,000. Fix: give clients as an integer >= 1 and <= 100,000."),
    "--batch-size 9223372036854775808": ({}, ["simulate", "--batch-size", "9223372036854775808"],
                                         "workbench simulate: error: field 'batch_size': 9,223,372,036,854,775,808 "
                                         "is above the limit of 1,000,000. Fix: give batch_size as an integer >= 1 "
                                         "and <= 1,000,000."),
    "--threads 100000": ({}, ["bound", "--threads", "100000"],
                         "workbench bound: error: field '--threads': 100000 is not between 1 and 256 threads. Fix: "
                         "give a whole number of solver threads, e.g. 2, or leave it out."),
    "--threads -1": ({}, ["offline", "--threads", "-1"],
                     "workbench offline: error: field '--threads': -1 is not between 1 and 256 threads. Fix: give a "
                     "whole number of solver threads, e.g. 2, or leave it out."),
    "exact --kv-capacity": ({"t.csv": H + "0,100,4\n1,100,4\n2,100,4\n3,100,4\n"},
                            ["exact", "--trace", "{tmp}/t.csv", "--kv-capacity", "210"],
                            "workbench exact: error: field 'kv_capacity_tokens': the exact MIP has no KV-cache "
                            "constraint, so it cannot honour a KV capacity. Fix: drop --kv-capacity, or simulate a "
                            "policy with it (workbench simulate --kv-capacity)."),
    "offline --kv-capacity below a request": ({"t.csv": H + "0,100,4\n1,100,4\n"},
                                              ["offline", "--trace", "{tmp}/t.csv", "--clients", "2",
                                               "--kv-capacity", "100"],
                                              "workbench offline: error: field 'kv_capacity_tokens', row 0: request "
                                              "'0' needs 104 KV tokens (input + output) but no client holds more "
                                              "than 100. Fix: raise kv_capacity_tokens or drop requests longer than "
                                              "the cache."),
    "four requests of 10^7 output tokens on 4 clients of B=1": (
        {"t.csv": H + "".join(f"{i},5,10000000\n" for i in range(4))},
        ["simulate", "--trace", "{tmp}/t.csv", "--clients", "4", "--batch-size", "1"],
        "workbench simulate: error: field 'trace': any schedule of this instance has at least 40,000,000 iterations "
        "(39,999,996 decode tokens on batches of at most 1), above the export limit of 10,000,000 timeline rows "
        "(about 5.2 GB). Fix: simulate fewer or shorter requests, or larger batches; in Python, simulate() without "
        "exporting keeps only the runs (schedule.runs)."),
    "iterations below the clock's resolution": (
        {"t.csv": HA + "0,1,2,1e9\n", "p.json": '{"a_p": 0, "b_p": 1e-8, "a_d": 0.01, "b_d": 0, "c_d": 0}'},
        ["simulate", "--trace", "{tmp}/t.csv", "--clients", "1", "--cost-model", "{tmp}/p.json"],
        "workbench simulate: error: field 'cost_model': the shortest iteration (1e-08 s) is below the clock's "
        "resolution late in the run (64 ulps at t = 1e+09 s is 7.63e-06 s): start and end times would collapse. "
        "Fix: shift arrival times to start near 0, or check the cost model's units (seconds)."),
    "loadsweep --loads 1e-9": ({}, ["loadsweep", "--loads", "1e-9"],
                               "workbench loadsweep: error: field 'loads': load 1e-09 spreads 7,473 requests over "
                               "about 1.36e+11 s (5.49e-08 requests/s), beyond the 1e+09 s a trace may span. Fix: "
                               "give loads as fractions of capacity, e.g. 0.5,0.7,0.8,0.9."),
}


@pytest.mark.parametrize("case", list(ISSUE12_CLI))
def test_issue12_cli_refusals_are_one_exact_line(tmp_path, capsys, case):
    from workbench.costmodel.linear import list_presets

    files, args, line = ISSUE12_CLI[case]
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] in ("simulate", "offline", "exact"):
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == line.replace("{tmp}", str(tmp_path)).replace("{presets}", ", ".join(list_presets()))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_issue12_fifo_as_trace_is_refused_without_hanging(tmp_path, capsys):
    import os

    fifo = tmp_path / "t.csv"
    os.mkfifo(fifo)  # nothing ever writes it: opening it for reading would block forever
    line = (f"field 'trace': trace '{fifo}' is a FIFO (named pipe); only regular files are read. "
            "Fix: save the data to a file first and give its path.")
    with pytest.raises(TraceError) as info:
        load_trace(fifo)
    assert str(info.value) == line
    assert main(["simulate", "--trace", str(fifo), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "workbench simulate: error: " + line
    simulate(synthetic_trace(4), 2, 2, "static", SMALL).write(tmp_path / "s")
    assert main(["validate", str(tmp_path / "s"), "--trace", str(fifo)]) == 2
    assert capsys.readouterr().err.strip() == "workbench validate: error: " + line


@pytest.mark.parametrize("name", ["timeline.csv", "requests.csv", "metrics.json"])
def test_a_folder_where_a_schedule_file_should_be_is_bad_input(tmp_path, capsys, name):
    """Issue 27 item 21: a folder named timeline.csv made validate exit 1 (an invalid schedule); it is bad
    input (exit 2, one line), as a FIFO there is.  A schedule missing a file is still reported as invalid."""
    simulate(synthetic_trace(4), 2, 2, "static", SMALL).write(tmp_path / "s")
    (tmp_path / "s" / name).unlink()
    (tmp_path / "s" / name).mkdir()
    assert main(["validate", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"workbench validate: error: field '{name}': schedule file '{tmp_path / 's' / name}' is a folder, "
                   "not a file. Fix: a schedule folder holds the regular files timeline.csv, requests.csv and "
                   "metrics.json.")
    (tmp_path / "s" / name).rmdir()
    assert main(["validate", str(tmp_path / "s")]) == 1
    assert f"has no {name}" in capsys.readouterr().out


def test_issue12_a_300_character_path_is_one_line(capsys, tmp_path):
    long = str(tmp_path / ("x" * 300 + ".csv"))
    assert main(["simulate", "--trace", long, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be opened (File name too long)" in err and len(err.splitlines()) == 1


def test_issue12_steal_no_turns_stealing_off_and_yes_on(tmp_path):
    from workbench.cli._common import checked_params

    for text, value in [("no", False), ("false", False), ("0", False), ("yes", True), ("true", True), ("1", True),
                        ("No", False), ("TRUE", True)]:
        assert checked_params("hybrid-steal", {"steal": text})["steal"] is value
    trace = synthetic_trace(60, seed=4)
    off = simulate(trace, 3, 4, "hybrid-steal", "llama-65b", steal="no")
    plain = simulate(trace, 3, 4, "hybrid", "llama-65b")
    assert off.metrics["params"]["steal"] is False
    assert off.makespan_s == plain.makespan_s


def test_issue12_policy_parameters_are_typed_through_the_api():
    with pytest.raises(ConfigError, match="'mue' is an unknown parameter of policy 'hybrid'"):
        simulate(synthetic_trace(5), 2, 2, "hybrid", "llama-65b", mue=5)
    with pytest.raises(ConfigError, match="'maybe' is not a boolean"):
        simulate(synthetic_trace(5), 2, 2, "hybrid-steal", "llama-65b", steal="maybe")
    with pytest.raises(ConfigError, match="is not a whole number"):
        simulate(synthetic_trace(5), 2, 2, "hybrid", "llama-65b", horizon=2.5)


def test_issue12_csv_ids_are_kept_exactly_as_written(tmp_path):
    path = _write(tmp_path, "t.csv", H + "007,5,5\n008,5,5\n1e3,5,5\n1000,4,4\n")
    trace = load_trace(path)
    assert trace["request_id"].tolist() == ["007", "008", "1e3", "1000"]
    s = simulate(trace, 2, 2, "paper-baseline", SMALL)
    out = tmp_path / "out"
    s.write(out)
    assert validate(out, trace=path).ok
    assert Schedule.read(out).requests["request_id"].tolist() == ["007", "008", "1e3", "1000"]
    plain = load_trace(_write(tmp_path, "p.csv", H + "7,5,5\n8,5,5\n"))
    assert plain["request_id"].tolist() == [7, 8]  # plain integers stay integers


def test_issue12_extra_columns_reach_the_column_predictor(tmp_path, capsys):
    path = _write(tmp_path, "t.csv", "request_id,input_tokens,output_tokens,guess\n0,5,5,4\n1,6,9,8\n2,3,3,3\n")
    assert main(["simulate", "--trace", str(path), "--clients", "2", "--policy", "hybrid", "--predictor",
                 "column:guess", "--out", str(tmp_path / "out")]) == 0
    assert validate(tmp_path / "out", trace=path).ok


@pytest.mark.parametrize("unit", ["us", "ns", "s"])
def test_issue12_timedelta_arrivals_are_seconds(tmp_path, unit):
    arrivals = pd.to_timedelta([0.5, 1.0, 2.0], unit="s").astype(f"timedelta64[{unit}]") if unit != "s" else \
        pd.to_timedelta([0, 1, 2], unit="s").astype("timedelta64[s]")
    frame = pd.DataFrame({"request_id": [0, 1, 2], "input_tokens": [5, 5, 5], "output_tokens": [5, 5, 5],
                          "arrival_s": arrivals})
    expected = [0.5, 1.0, 2.0] if unit != "s" else [0.0, 1.0, 2.0]
    assert load_trace(frame)["arrival_s"].tolist() == expected
    frame.to_parquet(tmp_path / "t.parquet")
    assert load_trace(tmp_path / "t.parquet")["arrival_s"].tolist() == expected


def test_issue12_boolean_values_are_refused(tmp_path):
    frame = pd.DataFrame({"request_id": [0, 1], "input_tokens": [5, 5], "output_tokens": [5, 5],
                          "arrival_s": [True, False]})
    frame.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(TraceError) as info:
        load_trace(tmp_path / "b.parquet")
    assert str(info.value) == ("field 'arrival_s', row 0: true is a boolean, not a number (rows 0, 1). Fix: give "
                               "arrival times in seconds from 0, or drop the column.")
    path = _write(tmp_path, "t.jsonl", '{"request_id": 0, "input_tokens": true, "output_tokens": 2}\n')
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert str(info.value) == ("field 'input_tokens', row 0: true is a boolean, not a number (rows 0). Fix: give "
                               "input_tokens as a whole number of tokens >= 1.")


def test_issue12_report_out_replaces_only_its_own_reports(tmp_path, capsys):
    trace = _write(tmp_path, "t.csv", H + "0,5,5\n1,6,6\n")
    assert main(["simulate", "--trace", str(trace), "--clients", "2", "--out", str(tmp_path / "s")]) == 0
    keep = _write(tmp_path, "keep.csv", H + "0,5,5\n")
    assert main(["report", str(tmp_path / "s"), "--out", str(keep)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"workbench report: error: field '--out': '{keep}' exists and is not a report workbench wrote; writing "
        "there would replace it. Fix: give a new file name, or delete that file first.")
    assert keep.read_text() == H + "0,5,5\n"
    assert main(["report", str(tmp_path / "s"), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "s"), "--out", str(tmp_path / "r.html")]) == 0
    assert main(["report", str(tmp_path / "s"), "--out", str(tmp_path / "r.html")]) == 0  # ours: replaced


def test_issue12_hybrid_rolling_on_a_mixed_fleet():
    trace = synthetic_trace(50, seed=1, rate_per_s=20)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        models = [str(rng.choice(["llama-65b", "llama2-70b-a100-tp4", "llama2-70b-h100-tp8"])) for _ in range(3)]
        s = simulate(trace, 3, [int(b) for b in rng.integers(2, 17, 3)], "hybrid-rolling", models)
        assert validate(s).ok


def test_issue12_expanding_a_huge_timeline_is_refused_before_allocating():
    trace = pd.DataFrame({"request_id": range(4), "input_tokens": 5, "output_tokens": 10_000_000})
    s = simulate(trace, 4, 1, "static", SMALL)  # the runs are cheap: 8 of them
    assert len(s.runs_without_ids()) == 8
    with pytest.raises(ConfigError, match="the per-iteration timeline would have 40,000,000 rows"):
        s.timeline


CONCURRENT_WRITER = """
import sys
sys.path.insert(0, {src!r})
from workbench.schedule.schema import atomic_dir
for k in range(5):
    with atomic_dir({out!r}) as tmp:
        (tmp / "who.txt").write_text({tag!r})
"""


def test_issue12_concurrent_writers_of_one_output_folder(tmp_path):
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER.format(src=src, out=str(out), tag=str(i))],
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp-* or .old-PID left
    assert (out / "who.txt").read_text() in {str(i) for i in range(8)}


SIGTERM_WRITER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from workbench.schedule.schema import atomic_dir
with atomic_dir({out!r}) as tmp:
    (tmp / "half.txt").write_text("half")
    os.kill(os.getpid(), signal.SIGTERM)
    (tmp / "never.txt").write_text("never")
"""


def test_issue12_sigterm_while_writing_leaves_no_temporary_folder(tmp_path):
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("previous")
    p = subprocess.run([sys.executable, "-c", SIGTERM_WRITER.format(src=src, out=str(out))], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 143, p.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old.txt").read_text() == "previous"


def test_issue12_out_given_as_a_symlink(tmp_path):
    target = tmp_path / "real"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    link = tmp_path / "link"
    link.symlink_to(target)
    with atomic_dir(link) as tmp:
        (tmp / "a.txt").write_text("2")
    assert link.is_symlink() and (link / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no stale .old-PID link


def test_issue12_one_bound_per_instance_whatever_ran_before(tmp_path, capsys):
    """compare static,hybrid and hybrid,static give static the same bound; bound, simulate agree."""
    from workbench.offline import lower_bound

    path = tmp_path / "t.csv"
    synthetic_trace(80, seed=3).to_csv(path, index=False)
    bounds = {}
    for order in ("static,hybrid", "hybrid,static"):
        out = tmp_path / order.replace(",", "-")
        assert main(["compare", "--trace", str(path), "--clients", "3", "--batch-size", "4", "--policies", order,
                     "--out", str(out)]) == 0
        bounds[order] = json.loads((out / "static" / "metrics.json").read_text())["lower_bound_s"]
    assert bounds["static,hybrid"] == bounds["hybrid,static"]
    api = simulate(load_trace(path), 3, 4, "static", "llama-65b").metrics["lower_bound_s"]
    assert api == bounds["static,hybrid"] == lower_bound(load_trace(path), 3, "llama-65b", batch_size=4).value_s
    capsys.readouterr()
    assert main(["bound", "--trace", str(path), "--clients", "3", "--batch-size", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["value_s"] == api
