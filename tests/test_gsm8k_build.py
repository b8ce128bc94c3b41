"""The shipped GSM8K token-count traces (data/traces/gsm8k-*.csv).

(a) always: the committed CSVs meet their contract.
(b) when ``../shared`` (GSM8K jsonl + LLaMA tokenizer.json) sits beside the
    repository and ``tokenizers`` is installed: a full rebuild is byte-identical.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "data" / "traces"
SHARED = Path(__file__).resolve().parents[2] / "shared"
GSM8K_DIR = SHARED / "data" / "gsm8k"
TOKENIZER = SHARED / "tokenizers" / "llama" / "tokenizer.json"

COLUMNS = ["request_id", "input_tokens", "output_tokens", "input_tokens_8shot"]
ROWS = {"test": 1319, "train": 7473}


@pytest.mark.parametrize("split", sorted(ROWS))
def test_shipped_csv_contract(split: str) -> None:
    path = TRACES / f"gsm8k-{split}.csv"
    assert path.is_file(), f"{path} missing; run python -m workbench.workload.gsm8k"
    df = pd.read_csv(path)

    assert list(df.columns) == COLUMNS
    assert len(df) == ROWS[split]
    assert df["request_id"].tolist() == list(range(ROWS[split]))
    for col in COLUMNS[1:]:
        assert pd.api.types.is_integer_dtype(df[col]), col
        assert (df[col] >= 1).all(), col
    assert (df["input_tokens_8shot"] > df["input_tokens"]).all()


def test_shipped_provenance_present() -> None:
    text = (TRACES / "PROVENANCE.md").read_text(encoding="utf-8")
    for needle in ("openai/grade-school-math", "MIT", "Meta", "sha256",
                   "python -m workbench.workload.gsm8k"):
        assert needle in text, needle


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    missing = [p for p in (GSM8K_DIR / "test.jsonl", GSM8K_DIR / "train.jsonl", TOKENIZER)
               if not p.is_file()]
    if missing:
        pytest.skip(f"GSM8K/tokenizer inputs not available: {missing[0]}")
    if importlib.util.find_spec("tokenizers") is None:
        pytest.skip("the 'tokenizers' package is not installed (pip install tokenizers)")

    from workbench.workload.gsm8k import build_gsm8k_traces

    frames = build_gsm8k_traces(GSM8K_DIR, TOKENIZER, tmp_path)
    assert sorted(frames) == ["test", "train"]
    for split in ROWS:
        name = f"gsm8k-{split}.csv"
        assert (tmp_path / name).read_bytes() == (TRACES / name).read_bytes(), name
    assert (tmp_path / "PROVENANCE.md").is_file()


def test_missing_input_raises_workbench_error(tmp_path: Path) -> None:
    from workbench.errors import WorkbenchError
    from workbench.workload.gsm8k import build_gsm8k_traces

    with pytest.raises(WorkbenchError, match="not found"):
        build_gsm8k_traces(tmp_path / "nope", tmp_path / "tokenizer.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
