import numpy as np
import pandas as pd
import pytest

from workbench.errors import TraceError
from workbench.workload.trace import list_traces, load_trace, sample_trace, synthetic_trace, validate_trace


@pytest.mark.parametrize("name", list_traces())
def test_named_traces_load_and_are_valid(name):
    trace = load_trace(name)
    assert list(trace.columns)[:4] == ["request_id", "input_tokens", "output_tokens", "arrival_s"]
    assert (trace["input_tokens"] >= 1).all() and (trace["output_tokens"] >= 1).all()
    assert trace["request_id"].is_unique
    assert len(trace) == (1319 if "test" in name else 7473)


def test_8shot_prompts_are_longer():
    plain, shot = load_trace("gsm8k-test"), load_trace("gsm8k-test-8shot")
    assert (shot["input_tokens"] > plain["input_tokens"]).all()
    assert (shot["output_tokens"] == plain["output_tokens"]).all()


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_file_formats_round_trip(tmp_path, suffix):
    trace = synthetic_trace(20, seed=3, rate_per_s=5.0)
    path = tmp_path / f"t.{suffix}"
    {"csv": lambda: trace.to_csv(path, index=False), "parquet": lambda: trace.to_parquet(path),
     "jsonl": lambda: trace.to_json(path, orient="records", lines=True)}[suffix]()
    loaded = load_trace(path)
    pd.testing.assert_frame_equal(loaded, validate_trace(trace), check_dtype=False)


def test_string_ids_and_missing_arrivals():
    trace = validate_trace(pd.DataFrame({"request_id": ["a", "b"], "input_tokens": [3, 4], "output_tokens": [1, 9]}))
    assert trace["arrival_s"].tolist() == [0.0, 0.0]
    assert trace["request_id"].tolist() == ["a", "b"]


BAD = [
    ({"request_id": [0, 1], "input_tokens": [3, 4]}, "output_tokens", None),
    ({"request_id": [0, 1], "input_tokens": [3, -4], "output_tokens": [1, 2]}, "input_tokens", 1),
    ({"request_id": [0, 1], "input_tokens": [3, 4], "output_tokens": [0, 2]}, "output_tokens", 0),
    ({"request_id": [0, 1], "input_tokens": [3, 4.5], "output_tokens": [1, 2]}, "input_tokens", 1),
    ({"request_id": [0, 1], "input_tokens": [3, np.nan], "output_tokens": [1, 2]}, "input_tokens", 1),
    ({"request_id": [0, 1], "input_tokens": [3, np.inf], "output_tokens": [1, 2]}, "input_tokens", 1),
    ({"request_id": [0, 1], "input_tokens": [3, "x"], "output_tokens": [1, 2]}, "input_tokens", 1),
    ({"request_id": [7, 7], "input_tokens": [3, 4], "output_tokens": [1, 2]}, "request_id", 1),
    ({"request_id": ["a b", "c"], "input_tokens": [3, 4], "output_tokens": [1, 2]}, "request_id", 0),
    ({"request_id": [0, 1], "input_tokens": [3, 4], "output_tokens": [1, 2], "arrival_s": [0, -1]}, "arrival_s", 1),
    ({"request_id": [0, 1], "input_tokens": [3, 10**8], "output_tokens": [1, 2]}, "input_tokens", 1),
]


@pytest.mark.parametrize("data,field,row", BAD)
def test_bad_traces_name_field_and_row(data, field, row):
    with pytest.raises(TraceError) as info:
        validate_trace(pd.DataFrame(data))
    assert info.value.field == field
    assert info.value.row == row
    assert "Fix:" in str(info.value)


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text("request_id,input_tokens,output_tokens\n")
    with pytest.raises(TraceError, match="empty"):
        load_trace(empty)
    with pytest.raises(TraceError, match="no rows"):
        load_trace(header)


def test_wrong_encoding_and_unknown_name(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("request_id,input_tokens,output_tokens\n\xe9,1,2\n".encode("latin-1"))
    with pytest.raises(TraceError, match="UTF-8"):
        load_trace(path)
    with pytest.raises(TraceError, match="no trace named"):
        load_trace("no-such-trace")


def test_synthetic_is_seeded():
    a = synthetic_trace(500, seed=42, rate_per_s=10, burstiness=3)
    b = synthetic_trace(500, seed=np.random.default_rng(42), rate_per_s=10, burstiness=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(synthetic_trace(500, seed=43, rate_per_s=10, burstiness=3))
    assert (np.diff(a["arrival_s"]) >= 0).all() and a["arrival_s"].iloc[0] == 0
    assert validate_trace(a).shape == a.shape


def test_sample_trace_keeps_order_and_is_seeded():
    trace = load_trace("gsm8k-train")
    s = sample_trace(trace, 100, seed=1)
    assert len(s) == 100 and s["request_id"].is_monotonic_increasing
    assert s.equals(sample_trace(trace, 100, seed=1))


@pytest.mark.parametrize("name,bom,compress", [("t.jsonl.gz", False, True), ("t.JSONL.GZ", False, True),
                                               ("t.jsonl", True, False), ("t.jsonl.gz", True, True),
                                               ("t.csv", True, False), ("t.csv.gz", False, True)])
def test_compressed_and_bom_traces_are_read_by_their_format(tmp_path, name, bom, compress):
    """Issue 27 item 17: a gzip'd JSONL was read as CSV (no column 'request_id'); a JSONL with a byte-order
    mark failed with the parser's 'Expected object or value'."""
    import gzip

    rows = pd.DataFrame({"request_id": [1, 2], "input_tokens": [10, 12], "output_tokens": [5, 3]})
    text = (rows.to_json(orient="records", lines=True) if ".jsonl" in name.lower()
            else rows.to_csv(index=False))
    data = ("\ufeff" if bom else "").encode() + text.encode()
    (tmp_path / name).write_bytes(gzip.compress(data) if compress else data)
    got = load_trace(tmp_path / name)
    assert got["request_id"].tolist() == [1, 2] and got["input_tokens"].tolist() == [10, 12]
