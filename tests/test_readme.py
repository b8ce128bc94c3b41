"""The README works as written: its command-line block, its Python snippet and its headline numbers.

The command-line block is run line for line, exactly as the README prints it, by bash in a
temporary folder laid out like a fresh checkout after ``scripts/run.sh``: ``data/`` and
``benchmarks/`` from this repository and ``.venv`` pointing at the environment running the
tests (``scripts/test.sh`` runs them from the ``.venv`` that ``scripts/run.sh`` makes).  The
README's headline table and case-study sentence are then compared with the
``results.json`` that the block's own ``workbench reproduce`` wrote, so the README cannot
drift from what the command prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(sys.prefix == sys.base_prefix or not (Path(sys.prefix) / "bin" / "workbench").exists(),
                                reason="needs the tests to run from a virtual environment with `workbench` installed "
                                       "(scripts/test.sh makes one)")


def section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def fresh_checkout(tmp: Path) -> Path:
    """A folder that looks like the repository root after ``scripts/run.sh``, for the README's relative paths."""
    shutil.copytree(ROOT / "data", tmp / "data")
    (tmp / "src").symlink_to(ROOT / "src", target_is_directory=True)
    shutil.copytree(ROOT / "benchmarks", tmp / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return tmp


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The package under test, also when the environment's editable install points elsewhere.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env.pop("VIRTUAL_ENV", None)
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.fixture(scope="module")
def command_line_run(tmp_path_factory):
    """Run the README's command-line block(s) as one bash script; (folder, completed process)."""
    blocks = code_blocks(section("The command line"), "bash")
    assert blocks, "the README's command-line section has no ```bash block"
    folder = fresh_checkout(tmp_path_factory.mktemp("readme-cli"))
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    # -x echoes each command before it runs, so a failure names the README line
    script = "set -euo pipefail\nset -x\n" + "\n".join(lines) + "\n"
    proc = subprocess.run(["bash", "-c", script], cwd=folder, env=_env(), capture_output=True, text=True,
                          timeout=300)
    return folder, lines, proc


def test_every_command_line_of_the_readme_runs_as_written(command_line_run):
    folder, lines, proc = command_line_run
    assert proc.returncode == 0, f"a README command failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    commands = [line for line in lines if line.startswith("workbench ")]
    assert len(commands) >= 10, commands
    for out in re.findall(r"--out (\S+)", "\n".join(lines)):
        assert (folder / out).is_dir(), f"{out} was not written"


def test_readme_never_calls_a_command_that_needs_out_without_it():
    from workbench.cli import build_parser

    parser = build_parser()
    for line in code_blocks(section("The command line"), "bash")[0].splitlines():
        if line.startswith("workbench "):
            argv = line.split("#", 1)[0].split()[1:]
            parser.parse_args(argv)  # exits (status 2) on a missing --out or an unknown option


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def test_readme_headline_table_is_what_reproduce_prints(command_line_run):
    folder, _, proc = command_line_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((folder / "runs" / "reproduce" / "results.json").read_text())
    rows = {r["policy"]: r for r in res["headline"]}
    names = {"paper-baseline": "paper-baseline", "offline (bin packing only)": "offline",
             "online (sorting + rule only)": "online", "**hybrid**": "hybrid", "lower bound": "lower bound"}
    table = {}
    for line in section("What the paper's experiment gives here").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in names:
            table[names[cells[0]]] = [c.strip("*") for c in cells[1:]]
    assert set(table) == set(names.values()), table
    for name, cells in table.items():
        r = rows[name]
        assert cells[0] == f"{r['makespan_s']:.2f}", (name, cells)
        if name == "lower bound":
            continue
        gap_closed = "0" if r["gap_closed"] == 0 else _pct(r["gap_closed"])
        assert cells[1:] == [_pct(r["slot_utilization"]), _pct(r["gap"]), gap_closed], (name, cells)
    paper = res["paper"]
    text = " ".join(section("What the paper's experiment gives here").split())  # the prose wraps anywhere
    assert f"{paper['baseline_makespan_s']:.2f} → {paper['hybrid_makespan_s']:.2f}" in text
    s = res["case_study"]["summary"]
    assert f"in {s['share_won']:.0%} of the cases" in text
    assert f"mean slot-utilization gain {s['utilization_gain_mean'] * 100:+.1f} points" in text
    assert f"paper: {paper['case_study_mean_improvement'] * 100:+.1f}" in text
    from workbench.studies.experiments import format_points

    assert f"smallest gain is {format_points(s['utilization_gain_min'])} points" in text


def test_readme_python_snippet_runs_as_written(tmp_path):
    blocks = code_blocks(section("In Python"), "python")
    assert len(blocks) == 2
    folder = fresh_checkout(tmp_path)
    for block in blocks:
        proc = subprocess.run([sys.executable, "-c", block], cwd=folder, env=_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        for out in re.findall(r"""write(?:_html)?\("([^"]+)"\)""", block):
            assert (folder / out).exists(), out


def test_runs_folder_is_ignored_by_git():
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert "/runs/" in ignored or "runs/" in ignored


def _performance_commands() -> list:
    blocks = code_blocks(section("Performance"), "bash")
    assert blocks, "the README's performance section has no ```bash block"
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    return [pytest.param(line, id="quick" if "--quick" in line else "full",
                         marks=[] if "--quick" in line else [pytest.mark.slow]) for line in lines]


@pytest.mark.parametrize("line", _performance_commands())
def test_readme_benchmark_commands_run_as_written(line, tmp_path):
    folder = fresh_checkout(tmp_path)
    env = _env()
    env.pop("PYTHONPATH")  # the benchmarks must find the package on their own
    env["PATH"] = os.pathsep.join([str(folder / ".venv" / "bin"), env.get("PATH", "")])  # `.venv` activated
    tracked = {p: p.read_bytes() for p in (folder / "benchmarks").rglob("*") if p.is_file()}
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + line], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "appended" in proc.stdout
    # Issue 28: a benchmark run rewrote the tracked benchmarks/results/history.csv; its history is untracked now.
    assert {p: p.read_bytes() for p in (folder / "benchmarks").rglob("*") if p.is_file()} == tracked
    history = folder / "runs" / "benchmarks" / "history.csv"
    assert f"to {history.relative_to(folder)}" in proc.stdout or str(history) in proc.stdout
    assert history.read_text().count("\n") > 1


@pytest.mark.parametrize("script, option", [("run_all.py", "--csv"), ("scaling.py", "--out")])
def test_benchmarks_write_untracked_files_by_default(script, option):
    """Issue 28: `run_all.py --quick` appended to the tracked benchmarks/results/history.csv."""
    text = (ROOT / "benchmarks" / script).read_text()
    assert f'parser.add_argument("{option}", default=' in text
    assert '"runs"' in text and '"benchmarks"' in text  # under the checkout's runs/benchmarks/
    if shutil.which("git") and (ROOT / ".git").exists():
        probe = subprocess.run(["git", "check-ignore", "-q", "runs/benchmarks/history.csv"], cwd=ROOT)
        assert probe.returncode == 0, "runs/ must be git-ignored"
