"""The classic policies: static and continuous batching, round-robin and least-work dispatch, fixed assignments."""

from __future__ import annotations

import numpy as np

from workbench.policies.registry import (
    DISPATCH_DOCS,
    DISPATCHERS,
    RULES,
    ClientView,
    Policy,
    declare_params,
    register_policy,
)


class StaticRule:
    """Static batching: refill only when the batch is empty."""

    def admit(self, client: ClientView) -> int:
        return client.admissible if client.n_running == 0 else 0


class ContinuousRule:
    """Continuous batching, prefill first: fill every free slot as soon as it frees."""

    def admit(self, client: ClientView) -> int:
        return client.admissible


RULES["static"] = lambda **_: StaticRule()
RULES["continuous"] = lambda **_: ContinuousRule()


class RoundRobin:
    """Request k (in arrival order) goes to client ``k mod |J|``."""

    def __init__(self) -> None:
        self._next = 0

    def assign(self, request: int, now_s: float, clients: list[ClientView]) -> int:
        j = self._next % len(clients)
        self._next += 1
        return j

    def in_advance(self, arrival_order: list[int], n_clients: int) -> np.ndarray:
        """Each request's client, known before the run: it depends on the arrival order alone."""
        client = np.empty(len(arrival_order), dtype=np.int64)
        client[np.asarray(arrival_order, dtype=np.int64)] = (self._next + np.arange(len(arrival_order))) % n_clients
        return client


class LeastWork:
    """Join the client with the least outstanding work (sum of ``w_i`` assigned and unfinished).

    Ties go to the lowest client index, so runs are deterministic.
    """

    def assign(self, request: int, now_s: float, clients: list[ClientView]) -> int:
        best, best_load = 0, float("inf")
        for j, c in enumerate(clients):
            load = c.outstanding_s / c.speed
            if load < best_load:
                best, best_load = j, load
        return best


class VllmDataParallel:
    """vLLM's front end over data-parallel engines: the replica with the lowest ``4 x waiting + running``
    (vLLM 0.19's ``DPLBAsyncMPClient``), the counts as they stand when the request arrives; ties go to the
    lowest index, so runs are deterministic."""

    def assign(self, request: int, now_s: float, clients: list[ClientView]) -> int:
        best, best_score = 0, None
        for j, c in enumerate(clients):
            score = 4 * c.n_waiting + c.n_running
            if best_score is None or score < best_score:
                best, best_score = j, score
        return best


class Assigned:
    """A fixed assignment computed before the run (the offline stage)."""

    def __init__(self, assignment: np.ndarray) -> None:
        self.assignment = np.asarray(assignment, dtype=np.int64)

    def assign(self, request: int, now_s: float, clients: list[ClientView]) -> int:
        return int(self.assignment[request])

    def in_advance(self, arrival_order: list[int], n_clients: int) -> np.ndarray:
        return self.assignment


DISPATCHERS["round-robin"] = lambda **_: RoundRobin()
DISPATCHERS["least-work"] = lambda **_: LeastWork()
DISPATCH_DOCS["round-robin"] = "request k in arrival order goes to client k mod |J|"
DISPATCH_DOCS["least-work"] = "join the client with the least outstanding work"
DISPATCHERS["vllm-dp"] = lambda **_: VllmDataParallel()
DISPATCH_DOCS["vllm-dp"] = "vLLM's data-parallel front end: the client with the lowest 4 x waiting + running"
# They take no parameters: declared so, a stray --param on them is refused (a user's own rule or
# dispatcher, registered without a declaration, takes whatever it is given).
for _part, _name in (("rule", "static"), ("rule", "continuous"), ("dispatch", "round-robin"),
                     ("dispatch", "least-work"), ("dispatch", "vllm-dp")):
    declare_params(_part, _name)

register_policy(Policy("static", "round-robin", "fifo", "static",
                       description="static batching: fill the batch, decode until empty, refill"))
register_policy(Policy("continuous", "round-robin", "fifo", "continuous",
                       description="continuous batching, prefill first (vLLM's classic policy)"))
register_policy(Policy("paper-baseline", "round-robin", "fifo", "continuous",
                       description="the paper's baseline as we state it: round-robin dispatch in trace order, "
                                   "FIFO queues, continuous prefill-first batching"))
register_policy(Policy("least-work", "least-work", "fifo", "continuous",
                       description="online dispatch to the least-loaded client, continuous batching"))
register_policy(Policy("offline", "offline", "fifo", "continuous",
                       description="offline stage only: bin-packing assignment, then continuous batching"))




# -- policies that serve the way today's engines do ------------------------------------------------------
#: vLLM V1's scheduler defaults where they are choices of the engine (token budget of max_num_batched_tokens).
VLLM_ENGINE = {"iteration": "mixed", "token_budget": 2048, "max_partial_prefills": 1, "kv": "paged",
               "block_size": 16, "prefix_caching": True, "cache_at_schedule": True, "full_prompt_admission": True,
               "async_scheduling": True}

register_policy(Policy("chunked-prefill", "round-robin", "fifo", "continuous",
                       description="Sarathi-Serve / vLLM V1 mixed batching: every decode plus prefill chunks up to "
                                   "a token budget per iteration; round-robin dispatch, FIFO queues",
                       engine={"iteration": "mixed", "token_budget": 512}))
register_policy(Policy("chunked-least-work", "least-work", "fifo", "continuous",
                       description="chunked-prefill mixed batching with least-outstanding-work dispatch",
                       engine={"iteration": "mixed", "token_budget": 512}))
register_policy(Policy("vllm", "round-robin", "fifo", "continuous",
                       description="vLLM V1's default scheduler: FCFS, mixed iterations of at most "
                                   "max_num_batched_tokens (2048) and max_num_seqs (the batch size), one partial "
                                   "prefill at a time, paged KV (16-token blocks) with recompute preemption, "
                                   "prefix caching",
                       engine=dict(VLLM_ENGINE)))
