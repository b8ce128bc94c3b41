"""Derive GSM8K token-count traces with the LLaMA tokenizer.

What
----
GSM8K (Cobbe et al. 2021, github.com/openai/grade-school-math, MIT licence) is a
set of grade-school maths word problems, one JSON object per line with the
fields ``question`` and ``answer``.  For serving/scheduling experiments the
project only needs *how long* each request is, not its text.  This module turns
``test.jsonl`` and ``train.jsonl`` into two small CSV traces::

    request_id, input_tokens, output_tokens, input_tokens_8shot

* ``request_id``         -- 0-based line number in the source jsonl.
* ``input_tokens``       -- tokens of the question alone, BOS included
  (``len(tok.encode(question).ids)``; the tokenizer prepends BOS id 1).
* ``output_tokens``      -- tokens of the ``answer`` field as it stands
  (calculator notes ``<<...>>`` and the final ``#### N`` included),
  with no BOS and no EOS.
* ``input_tokens_8shot`` -- tokens of an 8-shot prompt, BOS included: the
  first 8 *train* rows formatted as ``"Question: {q}\\nAnswer: {a}\\n\\n"`` and
  concatenated, followed by ``"Question: {q}\\nAnswer:"`` for this request.
  The whole prompt string is tokenised once.  The same 8 train exemplars are
  used for both files (so the first 8 train requests see themselves as
  exemplars; that is deliberate and harmless for a length trace).

Why
---
The raw GSM8K text and the LLaMA vocabulary are kept outside the repository
(the vocabulary is under Meta's LLaMA licence); only the derived integer
counts are committed, together with a ``PROVENANCE.md`` recording the source
and tokenizer checksums so the traces can be regenerated and verified.

``tokenizers`` is a build-time tool only: it is imported lazily inside
:func:`build_gsm8k_traces`, so the rest of the package never needs it.

Regenerate with::

    python -m workbench.workload.gsm8k --gsm8k-dir ../shared/data/gsm8k \\
        --tokenizer ../shared/tokenizers/llama/tokenizer.json --out data/traces
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "COLUMNS",
    "N_SHOTS",
    "SPLITS",
    "build_gsm8k_traces",
    "format_exemplar",
    "format_query",
    "main",
]

COLUMNS = ["request_id", "input_tokens", "output_tokens", "input_tokens_8shot"]
SPLITS = ("test", "train")
N_SHOTS = 8
EXEMPLAR_TEMPLATE = "Question: {q}\nAnswer: {a}\n\n"
QUERY_TEMPLATE = "Question: {q}\nAnswer:"
BOS_ID = 1
EOS_ID = 2
# Encode in chunks so that the 8-shot prompts (~1k tokens each) do not keep
# thousands of Encoding objects (ids, offsets, masks) alive at once.
_CHUNK = 512

REGENERATE_COMMAND = (
    "python -m workbench.workload.gsm8k --gsm8k-dir ../shared/data/gsm8k "
    "--tokenizer ../shared/tokenizers/llama/tokenizer.json --out data/traces"
)


def format_exemplar(question: str, answer: str) -> str:
    """One solved few-shot exemplar: ``"Question: {q}\\nAnswer: {a}\\n\\n"``."""
    return EXEMPLAR_TEMPLATE.format(q=question, a=answer)


def format_query(question: str) -> str:
    """The open query that ends an 8-shot prompt: ``"Question: {q}\\nAnswer:"``."""
    return QUERY_TEMPLATE.format(q=question)


# --------------------------------------------------------------------------- io


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require_file(path: Path, what: str, fix: str) -> None:
    if not path.is_file():
        raise WorkbenchError(f"{what} not found: {path}", field=what, fix=fix)


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    """Read ``(question, answer)`` pairs; row i is line i (0-based)."""
    rows: list[tuple[str, str]] = []
    with path.open("r", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                raise WorkbenchError(
                    f"{path.name}: blank line {i}; request_id is the line number, "
                    "so blank lines are not allowed",
                    row=i,
                    fix=f"restore the original {path.name} from openai/grade-school-math",
                )
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkbenchError(
                    f"{path.name}: line {i} is not valid JSON ({e.msg})",
                    row=i,
                    fix=f"restore the original {path.name} from openai/grade-school-math",
                ) from None
            for field in ("question", "answer"):
                if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                    raise WorkbenchError(
                        f"{path.name}: line {i} has no string field {field!r}",
                        field=field,
                        row=i,
                        fix=f"restore the original {path.name} from openai/grade-school-math",
                    )
            rows.append((obj["question"], obj["answer"]))
    if not rows:
        raise WorkbenchError(
            f"{path.name} is empty",
            fix=f"restore the original {path.name} from openai/grade-school-math",
        )
    return rows


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same dir + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use normal perms
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------- tokens


def _load_tokenizer(tokenizer_path: Path) -> Any:
    try:
        from tokenizers import Tokenizer  # build-time dependency only
    except ImportError:
        raise WorkbenchError(
            "the 'tokenizers' package is needed to build the GSM8K traces",
            field="tokenizers",
            fix="pip install tokenizers",
        ) from None
    try:
        tok = Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:  # tokenizers raises its own Exception subclass
        raise WorkbenchError(
            f"cannot load tokenizer {tokenizer_path}: {e}",
            field="tokenizer",
            fix="point --tokenizer at the LLaMA tokenizer.json (see its README.md)",
        ) from None
    # Self-check against the value documented in the tokenizer's README.
    probe = tok.encode("Hello world").ids
    if probe != [BOS_ID, 15043, 3186]:
        raise WorkbenchError(
            f"unexpected tokenizer: 'Hello world' -> {probe}, expected [1, 15043, 3186]",
            field="tokenizer",
            fix="use the LLaMA tokenizer.json from ../shared/tokenizers/llama/",
        )
    return tok


def _token_counts(
    tok: Any, texts: Sequence[str], *, what: str, with_bos: bool
) -> list[int]:
    """Token count per text.

    ``with_bos=True``: default encoding; checks that BOS is first and only
    there, and counts it.  ``with_bos=False``: encoded without special tokens;
    checks that neither BOS nor EOS was added.  EOS must never appear.
    """
    counts: list[int] = []
    for start in range(0, len(texts), _CHUNK):
        chunk = list(texts[start : start + _CHUNK])
        encs = tok.encode_batch(chunk, add_special_tokens=with_bos)
        for j, enc in enumerate(encs):
            ids = enc.ids
            row = start + j
            if with_bos:
                ok = len(ids) >= 2 and ids[0] == BOS_ID and BOS_ID not in ids[1:]
            else:
                ok = len(ids) >= 1 and BOS_ID not in ids
            if not ok or EOS_ID in ids:
                raise WorkbenchError(
                    f"{what} row {row}: unexpected special tokens in {ids[:4]}...{ids[-2:]}",
                    field=what,
                    row=row,
                    fix="check the tokenizer's BOS/EOS settings (BOS id 1 first, no EOS)",
                )
            counts.append(len(ids))
    return counts


# ----------------------------------------------------------------- provenance


def _stats_table(frames: dict[str, pandas.DataFrame]) -> str:
    lines = [
        "| file | column | mean | median | min | max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for split, df in frames.items():
        for col in COLUMNS[1:]:
            s = df[col]
            lines.append(
                f"| gsm8k-{split}.csv | {col} | {s.mean():.2f} | {s.median():g} "
                f"| {int(s.min())} | {int(s.max())} |"
            )
    for split, df in frames.items():
        d = df["input_tokens_8shot"] - df["input_tokens"]
        lines.append(
            f"\n`input_tokens_8shot - input_tokens` in gsm8k-{split}.csv: "
            + (f"{int(d.min())} on every row" if d.min() == d.max()
               else f"{int(d.min())} to {int(d.max())}")
            + " (the fixed 8-exemplar prefix plus the query wrapper)."
        )
    return "\n".join(lines)


def _provenance_text(
    *,
    tok_sha: str,
    src_sha: dict[str, str],
    frames: dict[str, pandas.DataFrame],
    tokenizers_version: str,
) -> str:
    counts = "\n".join(
        f"| `gsm8k-{split}.csv` | `{split}.jsonl` | {len(df):,} |"
        for split, df in frames.items()
    )
    shas = "\n".join(f"| `{split}.jsonl` | `{src_sha[split]}` |" for split in SPLITS)
    return f"""# GSM8K token-count traces: provenance

Generated by `workbench.workload.gsm8k.build_gsm8k_traces` (this file is rewritten on every build).
Only the derived integer token counts are committed here: the GSM8K text and the
LLaMA tokenizer vocabulary stay outside the repository (in `../shared/`).

## Sources

- **GSM8K** -- Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems",
  public repository `openai/grade-school-math` (https://github.com/openai/grade-school-math),
  MIT licence (Copyright (c) 2021 OpenAI). Files `test.jsonl` and `train.jsonl`,
  fields `question` and `answer`.
- **Tokenizer** -- the LLaMA (v1/v2) 32,000-token SentencePiece vocabulary in Hugging Face
  `tokenizers` JSON format (`tokenizer.json`): vocabulary and merges taken from the npm
  package `llama-tokenizer-js` 1.2.2 (code MIT, belladore.ai) and converted with LLaMA's
  settings (leading "▁", spaces to "▁", BPE with byte fallback). The vocabulary itself is
  Meta's LLaMA tokenizer and is under Meta's LLaMA licence, which is why the file is not
  committed here. BOS `<s>` = 1, EOS `</s>` = 2; "Hello world" -> [1, 15043, 3186].
  Tokenised with `tokenizers` {tokenizers_version}.

## Checksums (sha256, computed from the files at build time)

| file | sha256 |
|---|---|
| `tokenizer.json` | `{tok_sha}` |
{shas}

## Outputs

| file | source | rows |
|---|---|---:|
{counts}

Columns, exactly: `{", ".join(COLUMNS)}`.

## Derivation rules

- `request_id`: 0-based line number in the source jsonl.
- `input_tokens`: `len(tok.encode(question).ids)` with the tokenizer's default special-token
  handling, i.e. **BOS included** (checked: id 1 first, and only there; no EOS).
- `output_tokens`: tokens of the `answer` field verbatim (including the `<<...>>` calculator
  notes and the final `#### N` line), encoded **without special tokens**: no BOS, no EOS
  (checked: neither id 1 nor id 2 appears).
- `input_tokens_8shot`: the prompt below, tokenised once as a single string with the default
  special-token handling (**BOS included**, once), and counted.

## 8-shot template

The exemplars are the **first 8 rows of `train.jsonl`** (request_id 0-7), the same for both
output files, each formatted as

```
"Question: {{q}}\\nAnswer: {{a}}\\n\\n"
```

and concatenated in order; then the request's own question is appended as

```
"Question: {{q}}\\nAnswer:"
```

(`q`, `a` are the raw jsonl strings, not stripped). So the tokenised prompt is
BOS + exemplar0 + ... + exemplar7 + query. For train rows 0-7 the request is also one of the
exemplars; this is intentional (one fixed prompt prefix for every request).

## Summary statistics

{_stats_table(frames)}

## Regenerate

From the repository root, with `tokenizers` and `pandas` installed (`pip install tokenizers`):

```
{REGENERATE_COMMAND}
```

(`workbench trace build-gsm8k` runs the same function.) The build is deterministic: the CSVs
are byte-identical across runs for the same inputs, and `tests/test_gsm8k_build.py` checks
that when `../shared/` is present.
"""


# ----------------------------------------------------------------------- build


def build_gsm8k_traces(
    gsm8k_dir: Path, tokenizer_path: Path, out_dir: Path
) -> dict[str, pandas.DataFrame]:
    """Build ``gsm8k-test.csv`` and ``gsm8k-train.csv`` (and ``PROVENANCE.md``) in ``out_dir``.

    Returns ``{"test": DataFrame, "train": DataFrame}`` with columns
    :data:`COLUMNS`.  Raises :class:`~workbench.errors.WorkbenchError` if an
    input file is missing or malformed, or if ``tokenizers`` is not installed.
    """
    import pandas as pd

    gsm8k_dir = Path(gsm8k_dir)
    tokenizer_path = Path(tokenizer_path)
    out_dir = Path(out_dir)

    src = {split: gsm8k_dir / f"{split}.jsonl" for split in SPLITS}
    for split, path in src.items():
        _require_file(
            path,
            f"gsm8k {split}.jsonl",
            fix="pass --gsm8k-dir pointing at the directory holding GSM8K's "
            "test.jsonl and train.jsonl (default ../shared/data/gsm8k)",
        )
    _require_file(
        tokenizer_path,
        "tokenizer",
        fix="pass --tokenizer pointing at the LLaMA tokenizer.json "
        "(default ../shared/tokenizers/llama/tokenizer.json)",
    )

    tok = _load_tokenizer(tokenizer_path)
    import tokenizers

    rows = {split: _read_jsonl(path) for split, path in src.items()}
    if len(rows["train"]) < N_SHOTS:
        raise WorkbenchError(
            f"train.jsonl has {len(rows['train'])} rows; {N_SHOTS} are needed as exemplars",
            fix="use the full GSM8K train.jsonl",
        )
    prefix = "".join(format_exemplar(q, a) for q, a in rows["train"][:N_SHOTS])

    frames: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        questions = [q for q, _ in rows[split]]
        answers = [a for _, a in rows[split]]
        n = len(questions)
        df = pd.DataFrame(
            {
                "request_id": range(n),
                "input_tokens": _token_counts(
                    tok, questions, what=f"{split} question", with_bos=True
                ),
                "output_tokens": _token_counts(
                    tok, answers, what=f"{split} answer", with_bos=False
                ),
                "input_tokens_8shot": _token_counts(
                    tok,
                    [prefix + format_query(q) for q in questions],
                    what=f"{split} 8-shot prompt",
                    with_bos=True,
                ),
            },
            columns=COLUMNS,
        ).astype("int64")
        frames[split] = df

    out_dir.mkdir(parents=True, exist_ok=True)
    for split, df in frames.items():
        _atomic_write_text(
            out_dir / f"gsm8k-{split}.csv", df.to_csv(index=False, lineterminator="\n")
        )
    _atomic_write_text(
        out_dir / "PROVENANCE.md",
        _provenance_text(
            tok_sha=_sha256(tokenizer_path),
            src_sha={split: _sha256(path) for split, path in src.items()},
            frames=frames,
            tokenizers_version=tokenizers.__version__,
        ),
    )
    return frames


# ------------------------------------------------------------------------ cli


def _repo_root() -> Path:
    """The checkout root (holding ``pyproject.toml``), else the current directory."""
    from workbench._paths import repo_root

    return repo_root() or Path.cwd()


def main(argv: Sequence[str] | None = None) -> int:
    root = _repo_root()
    p = argparse.ArgumentParser(
        prog="python -m workbench.workload.gsm8k",
        description="Derive GSM8K token-count traces (LLaMA tokenizer).",
    )
    p.add_argument(
        "--gsm8k-dir",
        type=Path,
        default=root.parent / "shared" / "data" / "gsm8k",
        help="directory with GSM8K test.jsonl and train.jsonl (default: %(default)s)",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=root.parent / "shared" / "tokenizers" / "llama" / "tokenizer.json",
        help="LLaMA tokenizer.json (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=root / "data" / "traces",
        help="output directory (default: %(default)s)",
    )
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    try:
        frames = build_gsm8k_traces(args.gsm8k_dir, args.tokenizer, args.out)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)  # str(e) already carries the fix
        return 1
    elapsed = time.perf_counter() - t0
    for split, df in frames.items():
        print(f"{args.out / f'gsm8k-{split}.csv'}: {len(df)} rows")
        for col in COLUMNS[1:]:
            s = df[col]
            print(
                f"  {col:<19} mean {s.mean():8.2f}  median {s.median():7g}  max {int(s.max()):5d}"
            )
    print(f"{args.out / 'PROVENANCE.md'} written; {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
