"""A small time-boxed fuzz loop on top of hypothesis, shared by the scripts in this folder.

Hypothesis generates the inputs (no shrinking: the loop must keep going after a
finding); every exception that is not a :class:`~workbench.errors.WorkbenchError`,
every warning, and every broken invariant is a *finding*, grouped by a
signature (exception type and the innermost ``workbench`` frame) and kept with
the smallest input that produced it.  Each script is run as::

    python fuzz/fuzz_trace_loader.py --minutes 5 [--seed N]

and prints how many examples it tried and each finding, then exits 1 if there
were findings.  ``run(..., examples=N)`` (a fixed count, no clock) is what the pytest smoke tests call.
"""

from __future__ import annotations

import argparse
import sys
import math
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from workbench.errors import WorkbenchError  # noqa: E402


class Invariant(AssertionError):
    """An input was accepted but the result breaks the contract."""


class _TimeUp(Exception):
    pass


@dataclass
class Finding:
    signature: str
    count: int = 0
    example: str = ""
    detail: str = ""


@dataclass
class FuzzResult:
    name: str
    tried: int = 0
    accepted: int = 0
    refused: int = 0
    seconds: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.name}: {self.tried} examples in {self.seconds:.0f} s "
                 f"({self.accepted} accepted, {self.refused} refused with a WorkbenchError), "
                 f"{len(self.findings)} finding(s)"]
        for f in self.findings.values():
            lines.append(f"--- {f.signature}  (x{f.count})\n    smallest input: {f.example}\n{f.detail}")
        return "\n".join(lines)


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "workbench" in f.filename and "/fuzz/" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    loc = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    if isinstance(exc, Invariant):
        return f"Invariant: {str(exc).splitlines()[0][:120]}"
    return f"{type(exc).__name__} at {loc}"


def run(name: str, strategy: st.SearchStrategy, target: Callable[[object], bool], *, seconds: float | None = None,
        examples: int | None = None, seed: int = 0, describe: Callable[[object], str] = repr,
        verbose: bool = False) -> FuzzResult:
    """Call ``target(example)`` on generated examples for ``seconds``, or on exactly ``examples`` of them.

    A fixed count is what a test wants: the same examples on any machine, however
    busy.  A time box is what a fuzzing session wants.

    ``target`` returns True when the input was accepted, False when it was refused
    with a WorkbenchError it caught itself; it raises ``Invariant`` for a broken
    contract.  A WorkbenchError that escapes counts as refused.
    """
    if (seconds is None) == (examples is None):
        raise ValueError("give seconds or examples, not both")
    result = FuzzResult(name)
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else math.inf

    @settings(max_examples=examples if examples is not None else 10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False)
    @hypothesis_seed(seed)
    @given(strategy)
    def loop(example):
        if time.monotonic() > deadline:
            raise _TimeUp
        result.tried += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                accepted = target(example)
            if accepted:
                result.accepted += 1
            else:
                result.refused += 1
        except WorkbenchError:
            result.refused += 1
        except (KeyboardInterrupt, _TimeUp):
            raise
        except BaseException as exc:  # noqa: BLE001 - every other exception is a finding
            sig = _signature(exc)
            text = describe(example)
            f = result.findings.setdefault(sig, Finding(sig))
            f.count += 1
            if not f.example or len(text) < len(f.example):
                f.example = text[:600]
                f.detail = "    " + "".join(traceback.format_exception(exc)[-3:]).strip().replace("\n", "\n    ")[:1500]
            if verbose and f.count == 1:
                print(f"new finding: {sig}", flush=True)

    try:
        loop()
    except _TimeUp:
        pass
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    result.seconds = time.monotonic() - started
    return result


def main(name: str, strategy, target, describe=repr, argv=None) -> int:
    parser = argparse.ArgumentParser(description=f"fuzz {name} (hypothesis-generated inputs, time-boxed)")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (runs are reproducible per seed)")
    parser.add_argument("--verbose", action="store_true", help="print each new finding as it appears")
    args = parser.parse_args(argv)
    result = run(name, strategy, target, seconds=args.minutes * 60, seed=args.seed, describe=describe,
                 verbose=args.verbose)
    print(result.summary(), flush=True)
    return 1 if result.findings else 0
