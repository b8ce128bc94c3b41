"""Pin every registered policy's gsm8k-test makespan (8 clients, B = 16) and the reproduce headline table.

    python scripts/pin_golden.py           # writes tests/golden/policies.json

Run once, before a change of the engine that must keep every result bit for bit; the
test ``tests/test_golden.py`` compares against the file (floats as ``float.hex``).
"""

from __future__ import annotations

import json
from pathlib import Path

import workbench
from workbench.policies import POLICIES

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "policies.json"


def golden() -> dict:
    from workbench.engine import CHUNKED_POLICIES, simulate_chunked
    from workbench.studies.experiments import headline

    out: dict = {"policies": {}, "headline": {}}
    for name in sorted(POLICIES):
        s = workbench.simulate("gsm8k-test", 8, 16, name, "llama-65b")
        out["policies"][name] = {"makespan_s": float(s.makespan_s).hex(), "iterations": int(len(s.timeline))}
    for name in sorted(CHUNKED_POLICIES):
        s = simulate_chunked("gsm8k-test", 8, 16, name, "llama-65b")
        out["policies"][name] = {"makespan_s": float(s.makespan_s).hex(), "iterations": int(len(s.timeline))}
    table = headline("paper-gsm8k")["table"]
    for name, row in table.iterrows():
        out["headline"][str(name)] = {k: (float(v).hex() if isinstance(v, float) else str(v)) for k, v in row.items()}
    return out


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
