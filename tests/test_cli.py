import json

import pandas as pd
import pytest

from workbench.cli import main


def test_simulate_validate_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "4", "--batch-size", "8",
                 "--policy", "static", "--out", str(out), "--report"]) == 0
    assert {p.name for p in out.iterdir()} == {"timeline.csv", "requests.csv", "metrics.json", "report.html",
                                               ".workbench-output"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy"] == "static" and metrics["clients"] == 4 and metrics["batch_size"] == 8
    assert main(["validate", str(out), "--trace", "gsm8k-test"]) == 0
    assert "valid" in capsys.readouterr().out


def test_compare_writes_report_and_schedules(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--clients", "2", "--batch-size", "4", "--trace", str(_small_trace(tmp_path)),
                 "--policies", "static,paper-baseline", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "paper-baseline" in text and "Assumptions" in text
    assert (out / "report.html").stat().st_size > 1000
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table.index) == ["static", "paper-baseline"]
    assert main(["report", str(out / "static"), str(out / "paper-baseline"), "--out", str(tmp_path / "r.html")]) == 0


def _small_trace(tmp_path):
    path = tmp_path / "small.csv"
    pd.DataFrame({"request_id": range(30), "input_tokens": [10 + i for i in range(30)],
                  "output_tokens": [3 + (i * 7) % 20 for i in range(30)]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "0"], "batch_size"),
    (["--clients", "0"], "clients"),
    (["--policy", "nope"], "unknown policy"),
    (["--trace", "nope.csv"], "no trace named"),
    (["--cost-model", "nope"], "unknown cost-model preset"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    assert main(["simulate", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_bad_trace_file_names_row_and_keeps_old_output(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,input_tokens,output_tokens\n0,5,5\n1,-3,5\n")
    assert main(["simulate", "--trace", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "input_tokens" in err and "row 1" in err
    assert (out / "keep.txt").read_text() == "previous result"


def test_invalid_schedule_exits_1(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", str(_small_trace(tmp_path)), "--clients", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["makespan_s"] += 1
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert main(["validate", str(out)]) == 1
    assert "makespan_s" in capsys.readouterr().out


def test_listings(capsys):
    assert main(["policies"]) == 0
    assert main(["presets"]) == 0
    assert main(["trace", "list"]) == 0
    assert main(["trace", "info", "gsm8k-test"]) == 0
    out = capsys.readouterr().out
    assert "paper-baseline" in out and "llama-65b" in out and "gsm8k-train" in out


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    args = ["simulate", "--trace", str(_small_trace(tmp_path)), "--clients", "2"]
    assert main([*args, "--out", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "years of work"
    run = tmp_path / "run"
    assert main([*args, "--out", str(run)]) == 0
    assert main([*args, "--out", str(run)]) == 0  # a rerun of the same settings replaces its own output
    assert main([*args, "--policy", "static", "--out", str(run), "--force"]) == 0  # other settings: --force
    assert json.loads((run / "metrics.json").read_text())["policy"] == "static"


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_another_commands_or_settings_output_is_not_replaced_without_force(tmp_path, capsys):
    """Issue 28: `simulate --out results` after run.sh replaced the main job's outputs, printing only 'wrote'."""
    args = ["--trace", str(_small_trace(tmp_path)), "--clients", "2"]
    run = tmp_path / "run"
    assert main(["simulate", *args, "--policy", "hybrid", "--out", str(run)]) == 0
    before = _tree(run)
    capsys.readouterr()
    for other in (["simulate", *args], ["offline", *args], ["compare", *args], ["exact", *args]):
        assert main([*other, "--out", str(run)]) == 2, other
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--force" in err and "workbench simulate" in err, err
        assert _tree(run) == before, other  # nothing changed on disk
    assert main(["simulate", *args, "--out", str(run)]) == 2
    assert "with policy=hybrid; this run has policy=paper-baseline" in capsys.readouterr().err
    assert main(["offline", *args, "--out", str(run), "--force"]) == 0
    assert (run / "assignment.csv").is_file() and not (run / "timeline.csv").exists()


def test_an_unrecorded_output_folder_is_replaced_only_with_force(tmp_path, capsys):
    """A folder an older workbench marked (no command recorded) may hold anything: --force replaces it."""
    args = ["simulate", "--trace", str(_small_trace(tmp_path)), "--clients", "2", "--out", str(tmp_path / "old")]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / ".workbench-output").write_text("written by workbench; the next run replaces it\n")
    (tmp_path / "old" / "results.json").write_text("{}")
    assert main(args) == 2
    assert "not recorded" in capsys.readouterr().err
    assert (tmp_path / "old" / "results.json").is_file()
    assert main([*args, "--force"]) == 0 and not (tmp_path / "old" / "results.json").exists()


def test_chunked_prefill_through_simulate_and_compare(tmp_path, capsys):
    trace = str(_small_trace(tmp_path))
    out = tmp_path / "chunked"
    assert main(["simulate", "--trace", trace, "--clients", "2", "--policy", "chunked-prefill", "--out", str(out)]) == 0
    assert main(["validate", str(out), "--trace", trace]) == 0
    assert "mixed" in (out / "timeline.csv").read_text()
    assert main(["compare", "--trace", trace, "--clients", "2", "--policies", "paper-baseline,chunked-prefill"]) == 0
    # One engine: predicted lengths now steer the chunked-prefill policies too (the old simulator refused them).
    assert main(["simulate", "--trace", trace, "--policy", "chunked-prefill", "--predictor", "noisy:0.2",
                 "--out", str(tmp_path / "x")]) == 0
    assert main(["validate", str(tmp_path / "x"), "--trace", trace]) == 0
    assert "predicted_output_tokens" in (tmp_path / "x" / "requests.csv").read_text()


def test_help_is_plain_text_without_restructuredtext(capsys):
    from workbench.cli import COMMANDS, build_parser

    parser = build_parser()
    helps = [parser.format_help()]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    helps += [p.format_help() for p in sub.choices.values()]
    assert len(helps) > len(COMMANDS)
    for text in helps:
        assert "``" not in text and ":mod:" not in text and ":func:" not in text, text[:200]
    assert "The workbench command line" in helps[0]


def test_counts_print_as_integers(capsys):
    assert main(["trace", "info", "gsm8k-test"]) == 0
    out = capsys.readouterr().out
    assert "1,319.0000" not in out and " 1319 " in out


def test_presets_table_states_each_coefficients_unit(capsys):
    from workbench.costmodel.linear import load_preset

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "milliseconds" not in out
    header = out.splitlines()[0]
    assert "a_p_ms: ms per prefill stage" in header and "c_d_ns: ns per context token read" in header
    columns = next(line for line in out.splitlines() if "c_d_ns" in line and ":" not in line).split()
    row = next(line for line in out.splitlines() if line.startswith("llama-65b "))
    c_d_ns = float(row.split()[1 + columns.index("c_d_ns")])
    assert c_d_ns > 1 and abs(c_d_ns - load_preset("llama-65b").c_d * 1e9) < 1e-3  # not 0.0000


def test_compare_without_paper_baseline_names_its_gap_closed_baseline_or_leaves_it_out(tmp_path, capsys):
    """Issue 27 item 20: gap_closed was taken silently against the last listed policy."""
    trace = str(_small_trace(tmp_path))
    out = tmp_path / "cmp"
    args = ["compare", "--clients", "2", "--batch-size", "4", "--trace", trace, "--policies", "least-work,static"]
    assert main(args + ["--out", str(out)]) == 0
    assert "gap_closed: left out" in capsys.readouterr().out
    assert not any("gap_closed" in c for c in pd.read_csv(out / "comparison.csv", index_col=0).columns)
    assert main(args + ["--baseline", "static", "--out", str(tmp_path / "b")]) == 0
    assert "gap_closed: against static" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "b" / "comparison.csv", index_col=0)
    assert table.loc["static", "gap_closed_pct"] == 0.0  # a share, in percent (one unit per quantity)
    assert main(args + ["--baseline", "paper-baseline", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "--baseline" in err and "not among the compared policies" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_a_policy_typo_is_named_before_a_missing_out(capsys):
    """Issue 28: `simulate --policy hybird` said only "--out required"."""
    assert main(["simulate", "--policy", "hybird"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown policy 'hybird'" in err and "hybrid" in err, err
    assert main(["simulate"]) == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_validate_on_a_missing_folder_is_bad_input(tmp_path, capsys):
    """Exit 2 (bad input, one line), not 1 (an invalid schedule)."""
    assert main(["validate", str(tmp_path / "nothere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a folder" in err and "Fix:" in err


def test_simulate_help_shows_the_defaults(capsys):
    """A README line relies on simulate's defaults; --help must state them."""
    assert main(["simulate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: gsm8k-test)", "(default: 8)", "(default: 16)", "(default: llama-65b)",
                    "(default: paper-baseline)"):
        assert default in text, default
    assert "(default: None)" not in text and "(default: False)" not in text


def test_trace_info_prints_counts_as_whole_numbers(capsys):
    assert main(["trace", "info", "gsm8k-test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    row = dict(zip(header, lines[2].split()[1:]))
    assert row["min"] == "24" and row["max"] == "191" and row["total"] == "90258", row


def test_presets_show_no_nan_and_one_preset_in_a_screen(capsys):
    assert main(["presets"]) == 0
    assert "NaN" not in capsys.readouterr().out
    assert main(["presets", "llama-65b"]) == 0
    shown = capsys.readouterr().out
    assert len(shown.splitlines()) < 20 and "a_p = 14.95 ms" in shown and "--json" in shown
    assert main(["presets", "llama-65b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "llama-65b"


def test_bound_states_its_times_in_seconds_and_survives_a_closed_pipe():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    full = subprocess.run([sys.executable, "-m", "workbench", "bound", "--method", "closed"], capture_output=True,
                          text=True, env=env)
    times = full.stdout.splitlines()[-1]
    assert times.startswith("times: ") and all(part.endswith(" s") for part in times[7:].split(", ")), times
    piped = subprocess.run(["bash", "-c", f"set -o pipefail; '{sys.executable}' -m workbench bound | head -1"],
                           capture_output=True, text=True, env=env)
    assert piped.returncode == 0 and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
