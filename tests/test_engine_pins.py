"""The engine's exported schedules, bit for bit, on every branch of it (pinned by ``scripts/pin_engine.py``).

Policies x iteration modes x KV modes x prefix caching x stealing x predictors x fleets x arrivals:
each case's files (timeline, requests, metrics) hash to the pinned sha256, or the refusal's text is
the pinned one, and every schedule passes the validator against its trace.  A deliberate change of behaviour re-pins with ``python scripts/pin_engine.py`` and
says why in its commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import pin_engine  # noqa: E402

PINNED = json.loads((ROOT / "tests" / "golden" / "engine.json").read_text())


@pytest.fixture(scope="module")
def runs() -> dict:
    return {name: (trace, s) for name, trace, s in pin_engine.schedules()}


@pytest.fixture(scope="module")
def got(runs) -> dict[str, str]:
    return {name: s if isinstance(s, str) else pin_engine.digest(s) for name, (_, s) in runs.items()}


def test_every_case_is_pinned(got):
    assert set(got) == set(PINNED)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_schedule_bytes_unchanged(got, case):
    assert got[case] == PINNED[case]


@pytest.mark.parametrize("case", sorted(PINNED))
def test_every_schedule_passes_the_validator_against_its_trace(runs, case):
    from workbench.schedule.validator import validate

    trace, schedule = runs[case]
    if isinstance(schedule, str):
        pytest.skip(schedule)
    report = validate(schedule, trace)
    assert report.ok, str(report)
