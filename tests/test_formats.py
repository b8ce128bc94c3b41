"""Trace importers (workbench.workload.formats): each format read as it is, prefix columns, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.cli import main
from workbench.errors import TraceError
from workbench.workload.formats import describe_trace, detect_format, prefix_summary
from workbench.workload.trace import load_trace

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AZURE = SHARED / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
RUN = SHARED / "llmservingsim" / "runs" / "RTXPRO6000" / "Llama-3.1-8B" / "requests.jsonl"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_azure_timestamps_parse_exactly_from_the_earliest(tmp_path):
    path = _write(tmp_path / "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                  "2023-11-16 18:15:50.9951690,396,109\n"
                  "2023-11-16 18:15:46.6805900,374,44\n"
                  "2023-11-16 18:16:46.6805901,10,1\n")
    trace = load_trace(path)
    assert trace.attrs["format"] == "azure"
    assert trace["request_id"].tolist() == [0, 1, 2]  # file order kept
    assert trace["input_tokens"].tolist() == [396, 374, 10]
    assert trace["output_tokens"].tolist() == [109, 44, 1]
    # 4.314579 s apart, to the 100 ns digit the text gives; the earliest row arrives at 0
    assert trace["arrival_s"].tolist() == pytest.approx([4.314579, 0.0, 60.0000001], abs=1e-12)


def test_azure_bad_timestamp_names_row_and_field(tmp_path):
    path = _write(tmp_path / "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                  "2023-11-16 18:15:50.9951690,396,109\nyesterday,3,4\n")
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert info.value.field == "TIMESTAMP" and info.value.row == 1 and "az.csv" in str(info.value)


def test_vidur_csv(tmp_path):
    path = _write(tmp_path / "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens,num_total_tokens\n"
                  "10.5,100,20,120\n11.0,50,5,55\n")
    trace = load_trace(path)
    assert trace.attrs["format"] == "vidur"
    assert trace["arrival_s"].tolist() == [0.0, 0.5]
    assert trace["input_tokens"].tolist() == [100, 50] and trace["output_tokens"].tolist() == [20, 5]
    lengths_only = load_trace(_write(tmp_path / "l.csv", "num_prefill_tokens,num_decode_tokens\n7,3\n"))
    assert lengths_only.attrs["format"] == "vidur" and lengths_only["arrival_s"].tolist() == [0.0]


def _vllm_rows():
    return [{"request_id": "bench-0", "input_toks": 100, "output_toks": 11, "arrival_time": 1777142838.5,
             "queued_ts": 1000.25, "scheduled_ts": 1000.26, "first_token_ts": 1000.35, "last_token_ts": 1001.35},
            {"request_id": "bench-1", "input_toks": 50, "output_toks": 1, "arrival_time": 1777142839.0,
             "queued_ts": 1000.75, "scheduled_ts": 1000.8, "first_token_ts": 1000.9, "last_token_ts": 1000.9}]


def test_vllm_requests_keep_ids_and_measured_times(tmp_path):
    trace = load_trace(_jsonl(tmp_path / "requests.jsonl", _vllm_rows()))
    assert trace.attrs["format"] == "vllm"
    assert trace["request_id"].tolist() == ["bench-0", "bench-1"]
    assert trace["arrival_s"].tolist() == [0.0, 0.5]
    assert trace["queued_ts"].tolist() == [1000.25, 1000.75]
    # pandas' JSON reader would make arrival_time a date-time; it comes back as epoch seconds
    assert trace["arrival_time"].tolist() == pytest.approx([1777142838.5, 1777142839.0])
    assert trace["measured_ttft_s"].tolist() == pytest.approx([0.1, 0.15])
    assert trace["measured_tpot_s"].iloc[0] == pytest.approx(0.1) and np.isnan(trace["measured_tpot_s"].iloc[1])
    assert trace["measured_e2e_s"].tolist() == pytest.approx([1.1, 0.15])


def test_vllm_last_token_before_first_is_refused(tmp_path):
    rows = _vllm_rows()
    rows[1]["last_token_ts"] = 1000.85
    with pytest.raises(TraceError) as info:
        load_trace(_jsonl(tmp_path / "requests.jsonl", rows))
    assert info.value.field == "last_token_ts" and info.value.row == 1


def test_mooncake_hash_ids_become_prefix_hashes(tmp_path):
    path = _jsonl(tmp_path / "mc.jsonl", [
        {"timestamp": 27482, "input_length": 1100, "output_length": 10, "hash_ids": [1, 2, 3]},
        {"timestamp": 28982, "input_length": 600, "output_length": 5, "hash_ids": [1, 4]},
        {"timestamp": 29982, "input_length": 1030, "output_length": 5, "hash_ids": [1, 2, 5]}])
    trace = load_trace(path)
    assert trace.attrs["format"] == "mooncake"
    assert trace["arrival_s"].tolist() == pytest.approx([0.0, 1.5, 2.5])
    assert trace["prefix_hashes"].tolist() == ["1 2 3", "1 4", "1 2 5"]
    assert trace["prefix_block_tokens"].tolist() == [512, 512, 512]
    summary = prefix_summary(trace)
    # the second reuses block 1 (512 tokens), the third blocks 1 and 2 (1024)
    assert summary["reusable_prompt_tokens"] == 512 + 1024
    assert summary["requests_sharing"] == 2


def test_prefix_hashes_as_json_lists_in_the_workbench_layout(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [
        {"request_id": "a", "input_tokens": 40, "output_tokens": 2, "prefix_hashes": [7, 8], "prefix_block_tokens": 16},
        {"request_id": "b", "input_tokens": 20, "output_tokens": 2, "prefix_hashes": [7], "prefix_block_tokens": 16}])
    trace = load_trace(path)
    assert trace["prefix_hashes"].tolist() == ["7 8", "7"]
    assert prefix_summary(trace)["reusable_prompt_tokens"] == 16


def test_mooncake_more_blocks_than_the_prompt_is_refused(tmp_path):
    path = _jsonl(tmp_path / "mc.jsonl", [{"timestamp": 0, "input_length": 512, "output_length": 1,
                                           "hash_ids": [1, 2]}])
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert info.value.field == "prefix_hashes" and info.value.row == 0


def test_prefix_id_columns_validated(tmp_path):
    good = pd.DataFrame({"request_id": [0, 1, 2], "input_tokens": [100, 120, 30], "output_tokens": [1, 1, 1],
                         "prefix_id": ["sys", "sys", None], "prefix_tokens": [64, 64, 0]})
    trace = load_trace(good)
    assert trace["prefix_id"].tolist() == ["sys", "sys", ""] and trace["prefix_tokens"].tolist() == [64, 64, 0]
    assert prefix_summary(trace)["reusable_prompt_tokens"] == 64
    with pytest.raises(TraceError) as info:
        load_trace(good.assign(prefix_tokens=[64, 32, 0]))
    assert info.value.field == "prefix_tokens" and info.value.row == 1 and "row 0" in str(info.value)
    with pytest.raises(TraceError) as info:
        load_trace(good.assign(prefix_tokens=[64, 64, 31], prefix_id=["sys", "sys", "x"]))
    assert info.value.field == "prefix_tokens" and info.value.row == 2
    with pytest.raises(TraceError) as info:
        load_trace(good.drop(columns=["prefix_tokens"]))
    assert info.value.field == "prefix_tokens"


def test_named_format_and_undetectable_file(tmp_path):
    path = _write(tmp_path / "x.csv", "when,prompt,answer\n1,2,3\n")
    with pytest.raises(TraceError) as info:
        load_trace(path)
    text = str(info.value)
    assert "when, prompt, answer" in text and "azure" in text and "mooncake" in text
    with pytest.raises(TraceError) as info:
        load_trace(path, format="azure")
    assert info.value.field == "TIMESTAMP"
    with pytest.raises(TraceError) as info:
        load_trace(path, format="nonsense")
    assert info.value.field == "format"


def test_detect_prefers_the_workbench_layout():
    frame = pd.DataFrame({"request_id": [0], "input_tokens": [1], "output_tokens": [1], "arrived_at": [0.0],
                          "num_prefill_tokens": [5], "num_decode_tokens": [5]})
    assert detect_format(frame) == "workbench"


def test_cli_trace_info_and_simulate_take_each_format(tmp_path, capsys):
    path = _write(tmp_path / "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,20\n0.5,50,5\n")
    assert main(["trace", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "vidur" and info["requests"] == 2 and info["arrival_span_s"] == 0.5
    assert main(["simulate", "--trace", str(path), "--trace-format", "vidur", "--clients", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    bad = _write(tmp_path / "bad.csv", "a,b\n1,2\n")
    assert main(["trace", "info", str(bad)]) == 2
    assert "has no column" in capsys.readouterr().err


@pytest.mark.skipif(not AZURE.is_file(), reason="../shared/data/azure-llm-2023 is absent")
def test_shared_azure_trace():
    trace = load_trace(AZURE)
    info = describe_trace(trace)
    assert info["format"] == "azure" and info["requests"] == 19366
    assert trace["arrival_s"].iloc[0] == 0.0 and info["arrival_span_s"] == pytest.approx(3501.721937, abs=1e-6)


@pytest.mark.skipif(not RUN.is_file(), reason="../shared/data/llmservingsim is absent")
def test_shared_vllm_run_means_match_its_readme():
    trace = load_trace(RUN)
    assert trace.attrs["format"] == "vllm" and len(trace) == 300
    assert trace["request_id"].iloc[0] == "bench-0"
    # the README's measured means: TTFT 7,097 ms, TPOT 32.5 ms, end-to-end 28,201 ms
    assert trace["measured_ttft_s"].mean() == pytest.approx(7.097, abs=5e-4)
    assert trace["measured_tpot_s"].mean() == pytest.approx(0.0325, abs=5e-5)
    assert trace["measured_e2e_s"].mean() == pytest.approx(28.201, abs=5e-4)


@pytest.mark.parametrize("digits", [0, 3, 6, 9])
def test_azure_timestamps_with_few_fractional_digits_keep_seconds(tmp_path, digits):
    # pandas 3 parses <= 6 fractional digits at microsecond (or coarser) resolution: int64 is then not ns
    frac = ("." + "5" * digits) if digits else ""
    path = _write(tmp_path / "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                  f"2023-11-16 18:15:46{frac},10,1\n2023-11-16 19:15:46{frac},10,1\n")
    assert load_trace(path)["arrival_s"].tolist() == pytest.approx([0.0, 3600.0], abs=1e-9)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_datetime_column_becomes_seconds_at_any_resolution(unit):
    from workbench.workload.formats import _numbers
    stamps = pd.Series(pd.to_datetime(["2023-11-16 18:15:46", "2023-11-16 19:15:46"])).dt.as_unit(unit)
    seconds = _numbers(pd.DataFrame({"t": stamps}), "t", "x", "fix")
    assert (seconds - seconds[0]).tolist() == [0.0, 3600.0]


def test_prefix_ids_are_text_as_written_in_csv(tmp_path):
    # 007, 7, 7.0 and 70e-1 are four labels: read as numbers they became one prefix and shared cache hits
    path = _write(tmp_path / "p.csv", "request_id,input_tokens,output_tokens,prefix_id,prefix_tokens\n"
                  "0,100,5,007,10\n1,100,5,7,10\n2,100,5,7.0,10\n3,100,5,70e-1,10\n4,100,5,,0\n")
    trace = load_trace(path)
    assert trace["prefix_id"].tolist() == ["007", "7", "7.0", "70e-1", ""]
    summary = prefix_summary(trace)
    assert summary["distinct"] == 4 and summary["reusable_prompt_tokens"] == 0


def test_prefix_hashes_are_text_as_written_in_csv(tmp_path):
    path = _write(tmp_path / "h.csv", "request_id,input_tokens,output_tokens,prefix_hashes,prefix_block_tokens\n"
                  "0,10,5,012,16\n1,10,5,12,16\n")
    assert load_trace(path)["prefix_hashes"].tolist() == ["012", "12"]
