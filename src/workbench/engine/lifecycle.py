"""Replicas that come and go: when each was held, serving and gone, and the replica-seconds the run held.

A replica is *held* (its GPUs are allocated, loading or serving) from ``added_s`` to ``left_s``,
*serves* from ``ready_s``.  One that never drained is held to the end of the run (the makespan).
Written into ``metrics.json`` only when the set changed during the run (MODEL.md section 11.4), so
a fixed fleet's files are as before.
"""

from __future__ import annotations


def replica_lives(replicas, schedule) -> dict:
    """``metrics`` entries for a run whose replica set changed: each replica's life and the seconds held."""
    end_s = float(schedule.makespan_s)
    lives = []
    held = 0.0
    for c in replicas:
        gone = c.left_s == c.left_s  # left_s is NaN while the replica is held
        lives.append({"replica": c.index, "added_s": float(c.added_s), "ready_s": float(c.ready_s),
                      "left_s": float(c.left_s) if gone else None})
        held += (max(c.left_s, c.added_s) if gone else end_s) - c.added_s
    return {"replicas": lives, "replica_seconds": held,
            "lower_bound_assumes": "every replica that served, available from t = 0"}
