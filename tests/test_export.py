"""Exported schedules (workbench.schedule.schema): CSV bytes pinned, Parquet beside it, bad files refused."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench._version import __version__
from workbench.cli import main
from workbench.cli._common import simulate_any
from workbench.costmodel.linear import load_preset
from workbench.errors import ConfigError, ScheduleFileError
from workbench.schedule import schema
from workbench.schedule.schema import ParquetFileError, Schedule, expand_runs
from workbench.schedule.validator import validate
from workbench.workload.trace import load_trace

POLICIES = ("paper-baseline", "hybrid", "static", "chunked-prefill")

#: sha256 of the files written by the code before the export was vectorised (commit c6d347f, pandas'
#: to_csv), for gsm8k-test on 8 clients with B = 16 and a seeded synthetic trace with arrivals on 3
#: clients with B = 4.  metrics.json is hashed with its "version" set to 0.1.0, so a release does not
#: move the pin.
#: The CSV files as the code before the vectorised export wrote them (timeline, requests; the third hash,
#: metrics.json as it was then, is kept for the record and no longer compared).
PINNED = {
    ("gsm8k-test", "paper-baseline"): ("544a1918501052a70fabf2d217daffc00c4057f9d4244c3695c18667bda172fe",
                                       "5cdec08fdc975756af42109b488a83eabc7133ca0f8a660275af1901ee1a6c64",
                                       "e87fd3d2abfe8161686cc3d7694b9536021318a8c5cb64a89524e79a011ee9fb"),
    ("gsm8k-test", "hybrid"): ("1d426ebceff4528b0cc156e6ed21910881329cd181c45e9ba3f2e1f7528aa3ea",
                               "9062bb5113dabd5864fdef51aed93c78df8ac40045b345b2ca333820ac804c6c",
                               "ec579ab721af57fc460686f5ad11c44f52d0eceec1fc0bfc27c4037e92b7713e"),
    ("gsm8k-test", "static"): ("e8351f5a8230d3758077361845335e90eebaea5a695856957b9788302d6c2f33",
                               "51b3263cc267998adbef8cc9313dcad9495bae388fcc34182005ddd7eed30515",
                               "b44831cf1fbe2e7966d21b80f0403e3d7500b50acbc449ca293962fdb40ffe36"),
    ("gsm8k-test", "chunked-prefill"): ("73a5cdabb0c23455445c9dae06cab6fbb7a781a17f1268252baf101cee56d74f",
                                        "9280a5215648d111d4ae2e217d34ab8ded1fb8722f71f4501b72b29c619fd18f",
                                        "e60800c672ca06efee3995eb31cac0251704c22673df40445f1e968b053591d7"),
    ("synthetic", "paper-baseline"): ("63c7b407845c7c6b5e38e73ebb9e2056ada12387f2720c48004fcaca90b9dd5f",
                                      "cd9c5d4b7537b21374f4144b312a3bf7816f43c9f43fc872de3c487ddde41dc0",
                                      "8f74e1b358b4e4bbf84b8afd2253a045537d66614c68a4153757c9a3bbef399a"),
    ("synthetic", "hybrid"): ("a1107984ff1173c6829c5059fe36c299224d818e5460c19b4815ab3fe03346cc",
                              "ce7cc695f0c8680e826d106d217530b21202c17ef507efeaf69978ac8cf5dc48",
                              "2b5819e6abb804eb772adff5239a795b07a1486f0d249bb17c4a14d78fbae050"),
    ("synthetic", "static"): ("617cd8f5573ab9f82aa3e9fea7d148e85c872754b574606d6798f0b87c6b549b",
                              "048c4ab5943b3cccc08605d77381b5f1d77d7d3fd6fdd89631b52e9b1d7b456a",
                              "fa0499fa346f0f08019ed0ef4b6ad9e4cb361353b5fdcd79cd34d04d38b8ab27"),
    ("synthetic", "chunked-prefill"): ("cea6f93c6f24797e0354fd36e56626fff0d72ef363c9dda5c87bfb8d79674cbd",
                                       "89a0df6aea5f2ecbc36ecf6335210bd39408dd13873b210f5db23e1d55837ff7",
                                       "405972cba92bb4e2bf7be01e4782e8eb49198e18b45bf45e48de66ee4d7c6e4a"),
}


def _synthetic() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 60
    return pd.DataFrame({"request_id": np.arange(n), "input_tokens": rng.integers(5, 200, n),
                         "output_tokens": rng.integers(1, 80, n),
                         "arrival_s": np.round(np.sort(rng.uniform(0, 20, n)), 3)})


def _schedule(trace_name: str, policy: str) -> Schedule:
    if trace_name == "gsm8k-test":
        return simulate_any(load_trace("gsm8k-test"), 8, 16, policy, load_preset("llama-65b"))
    return simulate_any(load_trace(_synthetic()), 3, 4, policy, load_preset("llama-65b"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("case", list(PINNED))
def test_csv_bytes_are_pinned(tmp_path, monkeypatch, case):
    schedule = _schedule(*case)
    schedule.write(tmp_path / "out")
    metrics = (tmp_path / "out" / "metrics.json").read_bytes()
    metrics = metrics.replace(f'"version": "{__version__}"'.encode(), b'"version": "0.1.0"')
    got = (_sha((tmp_path / "out" / "timeline.csv").read_bytes()),
           _sha((tmp_path / "out" / "requests.csv").read_bytes()))
    # The CSV files byte for byte; metrics.json is JSON, whose keys grew since the pins (the engine's
    # options, the bound as a pure function of the instance): its schedule figures must recompute.
    assert got == PINNED[case][:2]
    m = json.loads(metrics)
    assert m["makespan_s"] == schedule.metrics["makespan_s"] and m["lower_bound_s"] <= m["makespan_s"]


@pytest.mark.parametrize("policy", ["paper-baseline", "chunked-prefill"])
def test_chunked_writing_gives_the_same_bytes(tmp_path, monkeypatch, policy):
    schedule = _schedule("gsm8k-test", policy)
    schedule.write(tmp_path / "whole")
    monkeypatch.setattr(schema, "EXPORT_CHUNK_ROWS", 7)
    monkeypatch.setattr(schema._timeline_parts, "__defaults__", (7,))
    _schedule("gsm8k-test", policy).write(tmp_path / "chunks")
    for name in ("timeline.csv", "requests.csv"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "chunks" / name).read_bytes()


def test_csv_matches_pandas_on_awkward_values(tmp_path):
    rng = np.random.default_rng(3)
    floats = np.concatenate([10.0 ** rng.uniform(-12, 22, 3000) * rng.choice([-1, 1], 3000),
                             rng.integers(0, 10**6, 500).astype(float), [0.0, -0.0, np.nan, np.inf, 1e16, 1e15,
                                                                         1e-4, 9.999999e-5, 0.1, 5e-324]])
    frame = pd.DataFrame({"x": floats, "k": np.arange(len(floats)) - 100, "b": np.arange(len(floats)) % 2 == 0,
                          "t": [["a b", "", "é ü", "12 3", None][i % 5] for i in range(len(floats))]})
    schema._write_csv(tmp_path / "fast.csv", lambda: schema._write_frame_csv(tmp_path / "fast.csv", frame,
                                                                             list(frame.columns)),
                      lambda: iter([frame]), list(frame.columns))
    frame.to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


@pytest.mark.parametrize("text", ['a,b', 'say "hi"', "line\nbreak"])
def test_fields_pandas_would_quote_take_the_pandas_path(tmp_path, text):
    frame = pd.DataFrame({"request_id": [text, "x"], "n": [1, 2]})
    schema._write_csv(tmp_path / "out.csv", lambda: schema._write_frame_csv(tmp_path / "out.csv", frame,
                                                                            ["request_id", "n"]),
                      lambda: iter([frame]), ["request_id", "n"])
    frame.to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_expand_runs_repeats_extra_columns():
    schedule = _schedule("synthetic", "paper-baseline")
    runs = schedule.runs.copy()
    runs["preempt"] = np.arange(len(runs)) % 3 == 0
    timeline = expand_runs(runs, schedule.metrics)
    assert len(timeline) == int(runs["iterations"].sum())
    seg = np.repeat(np.arange(len(runs)), runs["iterations"].to_numpy())
    assert (timeline["preempt"].to_numpy() == runs["preempt"].to_numpy()[seg]).all()
    assert (timeline["request_ids"].to_numpy() == runs["request_ids"].to_numpy()[seg]).all()
    assert "first_tokens" not in timeline.columns and "iterations" not in timeline.columns


def test_expand_runs_refuses_long_runs_without_a_closed_form():
    schedule = _schedule("synthetic", "paper-baseline")
    runs = schedule.runs.copy()
    runs["kind"] = runs["kind"].astype(object)
    first = int(np.flatnonzero(runs["iterations"].to_numpy() > 1)[0])
    runs.loc[first, "kind"] = "mixed"
    with pytest.raises(ValueError, match="only decode runs"):
        expand_runs(runs, schedule.metrics)


@pytest.mark.parametrize("policy", POLICIES)
def test_parquet_holds_the_same_tables(tmp_path, policy):
    schedule = _schedule("synthetic", policy)
    schedule.write(tmp_path / "csv")
    schedule.write(tmp_path / "pq", format="parquet")
    assert {p.name for p in (tmp_path / "pq").iterdir()} == {"timeline.parquet", "requests.parquet",
                                                            "metrics.json", ".workbench-output"}
    a, b = Schedule.read(tmp_path / "csv"), Schedule.read(tmp_path / "pq")
    pd.testing.assert_frame_equal(a.timeline, b.timeline, check_dtype=False)
    pd.testing.assert_frame_equal(a.requests, b.requests, check_dtype=False)
    assert a.metrics == b.metrics
    assert validate(tmp_path / "pq").ok
    from workbench.viz.figures import gantt

    assert gantt(a).to_json() == gantt(b).to_json()
    types = pq.read_schema(tmp_path / "pq" / "timeline.parquet")
    assert pa.types.is_int64(types.field("iteration").type) and pa.types.is_float64(types.field("start_s").type)


def test_validate_streams_in_groups_with_the_same_verdict(tmp_path):
    schedule = _schedule("gsm8k-test", "paper-baseline")
    for fmt in ("csv", "parquet"):
        schedule.write(tmp_path / fmt, format=fmt)
        whole = validate(tmp_path / fmt, group_rows=10**9)
        grouped = validate(tmp_path / fmt, group_rows=50)
        assert whole.ok and grouped.ok and whole.checked == grouped.checked
        for key in ("makespan_s", "iterations", "requests"):
            assert grouped.summary[key] == pytest.approx(whole.summary[key], rel=1e-12)


def test_validate_in_groups_finds_a_request_on_the_wrong_client(tmp_path):
    schedule = _schedule("gsm8k-test", "static")
    schedule.write(tmp_path / "out")
    tl = pd.read_csv(tmp_path / "out" / "timeline.csv", dtype={"request_ids": str}, keep_default_na=False)
    rq = pd.read_csv(tmp_path / "out" / "requests.csv")
    victim = int(rq.loc[rq["client"] == 0, "request_id"].iloc[0])
    rq.loc[rq["request_id"] == victim, "client"] = 7  # requests.csv now puts it on another client's group
    rq.to_csv(tmp_path / "out" / "requests.csv", index=False)
    tl.to_csv(tmp_path / "out" / "timeline.csv", index=False)
    report = validate(tmp_path / "out", group_rows=50)
    assert "same-client" in report.rules_violated()


def test_validate_unsorted_timeline_in_groups(tmp_path):
    schedule = _schedule("synthetic", "paper-baseline")
    schedule.write(tmp_path / "out")
    tl = pd.read_csv(tmp_path / "out" / "timeline.csv", dtype={"request_ids": str}, keep_default_na=False)
    tl.sample(frac=1.0, random_state=1).to_csv(tmp_path / "out" / "timeline.csv", index=False)
    assert validate(tmp_path / "out", group_rows=20).ok


def test_integer_ids_parse_like_split():
    from workbench.schedule.validator import _int_ids

    series = pd.Series(["1 2 30", "", "0", "99999999 5"])
    counts, values = _int_ids(series)
    assert counts.tolist() == [3, 0, 1, 2] and values.tolist() == [1, 2, 30, 0, 99999999, 5]
    for odd in (["01 2"], ["1  2"], [" 1"], ["1 x"], ["1234567890123456789"]):
        assert _int_ids(pd.Series(odd)) is None


def test_non_canonical_ids_are_checked_as_text(tmp_path):
    schedule = _schedule("synthetic", "static")
    schedule.write(tmp_path / "out")
    tl = pd.read_csv(tmp_path / "out" / "timeline.csv", dtype={"request_ids": str}, keep_default_na=False)
    tl.loc[0, "request_ids"] = "0" + tl.loc[0, "request_ids"].split()[0]
    tl.loc[0, "n_requests"] = 1
    tl.to_csv(tmp_path / "out" / "timeline.csv", index=False)
    report = validate(tmp_path / "out")
    assert "ids" in report.rules_violated()


# -- bad input ----------------------------------------------------------------------------------------

def test_unknown_format_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "--clients", "2", "--out", str(out), "--format", "xlsx"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--format" in err and "parquet" in err
    assert not out.exists()
    assert main(["compare", "--clients", "2", "--out", str(out), "--format", "json"]) == 2
    assert not out.exists()
    with pytest.raises(ConfigError, match="format"):
        _schedule("synthetic", "static").write(out, format="xml")
    assert not out.exists()


def test_simulate_writes_parquet_and_validates(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "--clients", "4", "--out", str(out), "--format", "parquet"]) == 0
    assert (out / "timeline.parquet").is_file() and not (out / "timeline.csv").exists()
    assert main(["validate", str(out)]) == 0


def _parquet_schedule(tmp_path):
    out = tmp_path / "out"
    _schedule("synthetic", "paper-baseline").write(out, format="parquet")
    return out


@pytest.mark.parametrize("name", ["timeline.parquet", "requests.parquet"])
def test_truncated_parquet_is_one_line_exit_2(tmp_path, capsys, name):
    out = _parquet_schedule(tmp_path)
    data = (out / name).read_bytes()
    (out / name).write_bytes(data[: len(data) // 2])
    before = sorted(p.name for p in out.iterdir())
    assert main(["validate", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and name in err and "truncated" in err
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(ParquetFileError):
        Schedule.read(out)


@pytest.mark.parametrize("name,column", [("timeline.parquet", "request_ids"), ("timeline.parquet", "start_s"),
                                         ("requests.parquet", "finish_s")])
def test_parquet_with_a_missing_column(tmp_path, capsys, name, column):
    out = _parquet_schedule(tmp_path)
    table = pq.read_table(out / name)
    pq.write_table(table.drop_columns([column]), out / name)
    assert main(["validate", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and column in err
    with pytest.raises(ParquetFileError, match=column):
        Schedule.read(out)


@pytest.mark.parametrize("name,column", [("timeline.parquet", "start_s"), ("timeline.parquet", "client"),
                                         ("timeline.parquet", "request_ids"), ("requests.parquet", "input_tokens")])
def test_parquet_with_a_mistyped_column(tmp_path, capsys, name, column):
    out = _parquet_schedule(tmp_path)
    table = pq.read_table(out / name)
    index = table.schema.get_field_index(column)
    if column == "request_ids":
        wrong = pa.array(np.arange(len(table)), type=pa.int64())
    elif column == "client":
        wrong = pa.array(table.column(column).to_numpy() + 0.5)
    else:
        wrong = pa.array([str(v) for v in table.column(column).to_pylist()])
    pq.write_table(table.set_column(index, column, wrong), out / name)
    assert main(["validate", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and column in err
    with pytest.raises(ParquetFileError, match=column):
        Schedule.read(out)


def test_folder_with_both_formats_is_refused(tmp_path):
    out = _parquet_schedule(tmp_path)
    _schedule("synthetic", "paper-baseline").write(tmp_path / "csv")
    (out / "timeline.csv").write_bytes((tmp_path / "csv" / "timeline.csv").read_bytes())
    with pytest.raises(ScheduleFileError, match="both CSV and Parquet"):
        Schedule.read(out)
    report = validate_files_report(out)
    assert not report.ok and "both CSV and Parquet" in str(report)


def validate_files_report(folder):
    from workbench.schedule.validator import validate_files

    return validate_files(folder)


def test_metrics_json_is_unchanged_by_the_format(tmp_path):
    schedule = _schedule("synthetic", "hybrid")
    schedule.write(tmp_path / "a")
    schedule.write(tmp_path / "b", format="parquet")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "b" / "metrics.json").read_text())


def test_group_rules_run_on_every_group(tmp_path, monkeypatch):
    from workbench.schedule import validator

    seen = []

    def no_empty_rows(group, report):
        seen.append((int(group.client.min()), int(group.client.max())) if len(group.client) else None)
        empty = (group.counts == 0).nonzero()[0]
        if len(empty):
            report.add("ids", "empty row: " + group.where(int(empty[0])))

    monkeypatch.setattr(validator, "GROUP_RULES", [no_empty_rows])
    _schedule("gsm8k-test", "paper-baseline").write(tmp_path / "out")
    assert validate(tmp_path / "out", group_rows=500).ok
    assert len(seen) > 1 and sorted(seen) == seen  # whole clients, group after group


def test_compare_writes_every_schedule_as_parquet(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--clients", "2", "--batch-size", "4", "--policies", "static,paper-baseline",
                 "--out", str(out), "--format", "parquet"]) == 0
    for name in ("static", "paper-baseline"):
        assert (out / name / "timeline.parquet").is_file() and not (out / name / "timeline.csv").exists()
        assert validate(out / name).ok
    assert main(["report", str(out / "static"), str(out / "paper-baseline"), "--out", str(tmp_path / "r.html")]) == 0


@pytest.mark.solver
def test_exact_exports_parquet(tmp_path):
    from workbench.offline import solver_available

    if not solver_available():
        pytest.skip("HiGHS (highspy) not installed")
    trace = tmp_path / "small.csv"
    pd.DataFrame({"request_id": range(4), "input_tokens": [40, 90, 15, 60], "output_tokens": [3, 2, 4, 1]}).to_csv(
        trace, index=False)
    out = tmp_path / "exact"
    assert main(["exact", "--trace", str(trace), "--clients", "2", "--batch-size", "2", "--time-limit", "30",
                 "--out", str(out), "--format", "parquet"]) == 0
    assert (out / "timeline.parquet").is_file() and validate(out, trace).ok


def test_reproduce_refuses_an_unknown_format_before_running(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["reproduce", "--cases", "0", "--workers", "0", "--out", str(out), "--format", "feather"]) == 2
    assert "--format" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("policy", ["paper-baseline", "vllm"])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_timeline_of_no_rows_is_invalid_or_refused_in_one_line(tmp_path, capsys, policy, fmt):
    # a zero-row timeline.parquet crashed validate (paged: "No objects to concatenate") and report
    out = tmp_path / "out"
    _schedule("synthetic", policy).write(out, format=fmt)
    path = out / f"timeline.{fmt}"
    empty = (pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)).iloc[:0]
    empty.to_parquet(path) if fmt == "parquet" else empty.to_csv(path, index=False)
    before = sorted(p.name for p in out.iterdir())
    assert main(["validate", str(out)]) == 1
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no iterations" in err, err
    assert sorted(p.name for p in out.iterdir()) == before and not (tmp_path / "r").exists()
