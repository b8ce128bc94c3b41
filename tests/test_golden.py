"""Every registered policy keeps its result, bit for bit, through changes of the engine.

The values were pinned by ``scripts/pin_golden.py`` on the engine before it gained the mixed
mode, paged KV and prefix caching (floats stored as ``float.hex``).  Bounds are not pinned here:
they are functions of the instance, checked in the bound tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import workbench
from workbench.policies import POLICIES

GOLDEN = json.loads((Path(__file__).parent / "golden" / "policies.json").read_text())
#: The headline columns that do not depend on the lower bound.
SCHEDULE_COLUMNS = ("makespan_s", "slot_utilization", "busy_utilization", "prefills", "decode_iterations")


@pytest.mark.parametrize("name", sorted(GOLDEN["policies"]))
def test_every_policy_keeps_its_gsm8k_makespan_bit_for_bit(name):
    assert name in POLICIES, f"policy {name!r} was pinned but is no longer registered"
    s = workbench.simulate("gsm8k-test", 8, 16, name, "llama-65b")
    want = GOLDEN["policies"][name]
    assert float(s.makespan_s).hex() == want["makespan_s"], (s.makespan_s, float.fromhex(want["makespan_s"]))
    assert len(s.timeline) == want["iterations"]


def test_every_registered_policy_is_pinned():
    """A new policy gets pinned too (run scripts/pin_golden.py after checking its result)."""
    assert set(POLICIES) <= set(GOLDEN["policies"]) | {"vllm"}


def test_the_reproduce_headline_table_is_unchanged():
    from workbench.studies.experiments import headline

    table = headline("paper-gsm8k")["table"]
    for name, want in GOLDEN["headline"].items():
        if name == "lower bound":
            continue
        row = table.loc[name]
        for col in SCHEDULE_COLUMNS:
            assert float(row[col]).hex() == want[col], (name, col, row[col], float.fromhex(want[col]))
