"""Pools: replicas that only prefill, only decode, or do both (today's), and the KV cache moved between them.

Disaggregated serving (DistServe, OSDI 2024; Splitwise, ISCA 2024; the disaggregated modes of vLLM and
NVIDIA Dynamo) is one more choice of the one engine (MODEL.md section 11.11), a *role* per replica:

* ``mixed`` (today's): prefills and decodes its own requests;
* ``prefill``: runs prefill stages only.  A request's first token is produced there, then its prompt's KV
  cache stays held on the prefill replica until a transfer to a decode replica has ended;
* ``decode``: receives a prefilled request's KV cache over the declared link (a
  :class:`~workbench.costmodel.calibrate.LinkModel`, the description the cost model uses for collectives)
  and decodes it.  A transfer starts at one of the decode replica's iteration boundaries, when the request
  has a slot and its memory there (``l_i + o_i`` reserved, or the prompt's blocks, less the blocks its prefix
  cache already holds, paged); it holds memory on both ends while it runs, and the request joins the running
  batch at the first boundary at or after the transfer's end.  ``overlap=False`` makes the decode replica
  wait for the transfers it started before its next iteration (the copy then takes its compute); the
  sending side always copies beside its compute.  A request preempted on a decode replica (paged KV)
  recomputes there, as vLLM's disaggregated decode instances do.

A router per stage: the prefill stage's router (round-robin, least-work, or the hybrid method's offline bin
packing over the prefill pool with each request's prefill work) places arrivals; the decode stage's router
places each request when its prefill ends (the offline table is over the decode pool with decode work).
The iteration former is :class:`PooledFormer`, the exclusive former with the roles; the loop is unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from heapq import heappop, heappush

import numpy as np

from workbench.engine.formers import ExclusiveFormer
from workbench.engine.recorder import DECODE, PREFILL
from workbench.errors import ConfigError

ROLES = ("mixed", "prefill", "decode")
STAGE_ROUTERS = ("round-robin", "least-work", "offline")
#: Seconds the offline bin packing of one pool may take (its local search; the LPT start is instant).
POOL_PACKING_TIME_S = 0.5


@dataclass(frozen=True)
class Pools:
    """A fleet split into pools: ``prefill`` and ``decode`` replica counts, or one role per replica.

    ``link``: a name of :data:`~workbench.costmodel.calibrate.LINKS` (``nvlink``, ``pcie``, ``rdma``,
    ``infinite``) or a :class:`~workbench.costmodel.calibrate.LinkModel`.  ``overlap``: whether a decode
    replica computes while its incoming transfers run.  ``prefill_router`` / ``decode_router``: one of
    :data:`STAGE_ROUTERS` (default: the policy's dispatcher where it is one of them, else round-robin).
    ``kv_bytes_per_token`` (a replica's whole KV cache per token) and ``gpus_per_replica`` (links used in
    parallel, and the GPUs goodput is counted per) default to what the cost model's preset records.
    """

    prefill: int | None = None
    decode: int | None = None
    roles: tuple | list | None = None
    link: object = "nvlink"
    overlap: bool = True
    prefill_router: str | None = None
    decode_router: str | None = None
    kv_bytes_per_token: float | None = None
    gpus_per_replica: int | None = None

    def replica_roles(self) -> list[str]:
        """One role per replica, checked."""
        if self.roles is not None:
            if self.prefill is not None or self.decode is not None:
                raise ConfigError("give either roles or the prefill and decode counts, not both.", field="roles",
                                  fix="drop prefill/decode, or drop roles.")
            roles = [str(r) for r in self.roles]
        else:
            counts = []
            for name, value in (("prefill", self.prefill), ("decode", self.decode)):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                    raise ConfigError(f"{name} replicas is {value!r}, not a whole number >= 1.",
                                      field=f"{name}_replicas", fix=f"give at least one {name} replica.")
                counts.append(int(value))
            roles = ["prefill"] * counts[0] + ["decode"] * counts[1]
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ConfigError(f"role {bad[0]!r} is not known.", field="roles", fix=f"use {', '.join(ROLES)}.")
        if "decode" in roles and "prefill" not in roles:
            raise ConfigError("decode replicas, but no prefill replica to feed them.", field="roles",
                              fix="give at least one prefill replica.")
        if "prefill" in roles and "decode" not in roles:
            raise ConfigError("prefill replicas, but no decode replica to decode what they prefill.", field="roles",
                              fix="give at least one decode replica.")
        return roles


def pools_option(value) -> Pools | None:
    """``simulate(pools=...)``: a :class:`Pools`, a dict of its fields, or None."""
    if value is None or isinstance(value, Pools):
        return value
    if isinstance(value, dict):
        unknown = set(value) - set(Pools.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"pools has no field {sorted(unknown)[0]!r}.", field="pools",
                              fix=f"use {', '.join(Pools.__dataclass_fields__)}.")
        return Pools(**value)
    raise ConfigError(f"pools is {value!r}.", field="pools", fix="give a Pools(...) or a dict of its fields.")


def link_model(link):
    """A :class:`LinkModel` from a name of ``LINKS`` or a link itself."""
    from workbench.costmodel.calibrate import LINKS, LinkModel

    if isinstance(link, LinkModel):
        if not link.bandwidth_bytes_per_s > 0 or not link.efficiency > 0 or not 0 <= link.latency_s < math.inf:
            raise ConfigError(f"link {link.name!r} needs a bandwidth and efficiency above 0 and a latency >= 0.",
                              field="link", fix="give bandwidth_bytes_per_s > 0, efficiency > 0, latency_s >= 0.")
        return link
    if isinstance(link, str) and link in LINKS:
        return LINKS[link]
    raise ConfigError(f"link {link!r} is not known.", field="link",
                      fix=f"use {', '.join(LINKS)} or a LinkModel(...).")


def kv_bytes_per_token(cost_model) -> float | None:
    """A replica's KV-cache bytes per context token (K and V of every layer, all its GPUs), from what the
    preset records of its model (``provenance``); None when it names no known model."""
    own = getattr(cost_model, "kv_bytes_per_token", None)
    if own:
        return float(own)
    prov = getattr(cost_model, "provenance", None) or {}
    model = prov.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    from workbench.costmodel import roofline

    for spec in (roofline.LLAMA_65B, roofline.LLAMA2_70B):
        if name == spec.name:
            return spec.kv_bytes_per_token(1)
    source = prov.get("source")
    hf = source.get("model") if isinstance(source, dict) else None
    if isinstance(hf, str):
        from workbench.costmodel.shapes import model_shape

        try:
            return float(model_shape(hf).kv_bytes_per_token(2, 1))
        except ConfigError:
            return None
    return None


def gpus_per_replica(cost_model) -> int:
    """GPUs of one replica as the preset names them (``x8`` in its hardware, ``tp2`` in its name); else 1."""
    prov = getattr(cost_model, "provenance", None) or {}
    hardware = prov.get("hardware")
    text = hardware.get("name", "") if isinstance(hardware, dict) else ""
    found = re.search(r"x(\d+)\s*$", text) or re.search(r"-tp(\d+)", str(getattr(cost_model, "name", "")))
    return int(found.group(1)) if found else 1


@dataclass
class PoolPlan:
    """The checked pools of one run: roles, link, bytes per token, routers (names and objects)."""

    roles: list[str]
    link: object
    overlap: bool
    kv_bytes_per_token: float
    gpus_per_replica: int
    prefill_router: str
    decode_router: str
    members: dict = field(default_factory=dict)  # role -> replica indices

    @property
    def disaggregated(self) -> bool:
        return "decode" in self.roles

    def transfer_s(self, tokens: int) -> float:
        return self.link.transfer_s(tokens * self.kv_bytes_per_token, self.gpus_per_replica)

    def describe(self) -> dict:
        link = self.link
        return {"roles": list(self.roles), "transfer_overlap": self.overlap,
                "kv_bytes_per_token": self.kv_bytes_per_token, "gpus_per_replica": self.gpus_per_replica,
                "prefill_router": self.prefill_router, "decode_router": self.decode_router,
                "link": {"name": link.name, "bandwidth_bytes_per_s": link.bandwidth_bytes_per_s,
                         "efficiency": link.efficiency, "latency_s": link.latency_s, "source": link.source}}


def plan_pools(pools: Pools, models, policy, config, *, steal: bool) -> PoolPlan:
    """Check ``pools`` against the run's other options; the plan the engine is built from."""
    roles = pools.replica_roles()
    if config.iteration != "exclusive":
        raise ConfigError("pooled replicas run exclusive iterations (a prefill replica only prefills, a decode "
                          "replica only decodes).", field="iteration", fix="pass iteration='exclusive'.")
    if steal or config.dp_lockstep:
        raise ConfigError("work stealing and lockstep groups are not modelled across pools.",
                          field="steal" if steal else "dp_lockstep", fix="leave them off with pools.")
    if not isinstance(pools.overlap, (bool, np.bool_)):
        raise ConfigError(f"overlap is {pools.overlap!r}, not true or false.", field="overlap",
                          fix="give True (transfers beside compute) or False.")
    reference = models[0]
    kv_bytes = pools.kv_bytes_per_token if pools.kv_bytes_per_token is not None else kv_bytes_per_token(reference)
    if kv_bytes is None:
        raise ConfigError(f"the cost model {getattr(reference, 'name', '?')!r} records no model shape, so the KV "
                          "bytes per token are not known.", field="kv_bytes_per_token",
                          fix="give Pools(kv_bytes_per_token=...) (2 x layers x KV heads x head dim x bytes).")
    if isinstance(kv_bytes, bool) or not isinstance(kv_bytes, (int, float)) or not 0 < kv_bytes < math.inf:
        raise ConfigError(f"kv_bytes_per_token is {kv_bytes!r}.", field="kv_bytes_per_token",
                          fix="give a number of bytes above 0.")
    gpus = pools.gpus_per_replica if pools.gpus_per_replica is not None else gpus_per_replica(reference)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise ConfigError(f"gpus_per_replica is {gpus!r}.", field="gpus_per_replica", fix="give a whole number >= 1.")
    default = policy.dispatch if policy.dispatch in STAGE_ROUTERS else "round-robin"
    routers = []
    for name, value in (("prefill_router", pools.prefill_router), ("decode_router", pools.decode_router)):
        value = default if value is None else value
        if value not in STAGE_ROUTERS:
            raise ConfigError(f"{name} {value!r} is not known.", field=name, fix=f"use {', '.join(STAGE_ROUTERS)}.")
        routers.append(value)
    plan = PoolPlan(roles, link_model(pools.link), bool(pools.overlap), float(kv_bytes), int(gpus), *routers)
    plan.members = {r: [j for j, x in enumerate(roles) if x == r] for r in ROLES}
    return plan


# -- routers per stage --------------------------------------------------------------------------------------
def stage_weights(model, l: np.ndarray, o: np.ndarray, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Each request's predicted work at each stage (MODEL.md section 3's ``w_i`` split at its first token):
    prefill ``a_p/B + b_p l_i``; decode ``b_d d_i + c_d (d_i l_i + d_i (d_i + 1)/2) + a_d d_i/B``, ``d_i = o_i - 1``."""
    l, d = np.asarray(l, dtype=float), np.asarray(o, dtype=float) - 1.0
    prefill = model.a_p / B + model.b_p * l
    decode = model.b_d * d + model.c_d * (d * l + d * (d + 1.0) / 2.0) + model.a_d * d / B
    return prefill, decode


def pool_router(name: str, weights: np.ndarray, pool_size: int, params: dict | None = None):
    """A router over one pool (positions 0..pool_size-1): round-robin, least-work, or the offline packing of
    ``weights`` (the registry's ``offline`` dispatcher, which :mod:`workbench.offline.dispatch` fills)."""
    from workbench.policies.registry import DISPATCHERS

    if name != "offline":
        return DISPATCHERS[name]()
    return DISPATCHERS["offline"](trace=None, clients=pool_size, batch_size=None, cost_model=None,
                                  params={"time_limit": 4 * POOL_PACKING_TIME_S, **(params or {})},
                                  weights_s=weights)


class PoolRouter:
    """The engine's router (``assign(i, now, replicas)``) for the prefill stage: a pool router over the
    replicas that prefill (roles prefill and mixed), its answer turned back into a replica index."""

    def __init__(self, inner, members: list[int]) -> None:
        self.inner, self.members = inner, members
        self._pool = None

    def assign(self, request: int, now_s: float, replicas) -> int:
        if self._pool is None:
            self._pool = [replicas[j] for j in self.members]
        return self.members[self.inner.assign(request, now_s, self._pool)]


# -- the former ---------------------------------------------------------------------------------------------
class PooledFormer(ExclusiveFormer):
    """The exclusive former with roles: prefill-only and decode-only replicas and the transfers between them.

    Set up by :func:`workbench.engine.core.build_engine` with ``plan``, ``replicas`` (the run's list),
    ``decode_router`` (a pool router over the decode pool), ``w_decode`` (per request, its decode-stage work).
    A request's KV memory on its prefill replica is released at the first boundary of that replica at or after
    its transfer's end (an idle replica with waiting requests is woken there).
    """

    plan: PoolPlan
    replicas: list
    decode_router = None
    w_decode: list
    decode_pool: list

    def setup(self, plan: PoolPlan, replicas: list, decode_router, w_decode: list) -> None:
        self.plan, self.replicas, self.decode_router, self.w_decode = plan, replicas, decode_router, w_decode
        self.decode_pool = [replicas[j] for j in plan.members["decode"]]
        n = len(w_decode)
        self.longest_prompt = max(self.requests.l) if n else 0
        self.prefill_client = [-1] * n  # where each request was prefilled
        self.transfers: list[tuple] = []  # (request, from, to, start_s, end_s, tokens)
        for c in replicas:
            c.role = plan.roles[c.index]

    # -- phase 1 ------------------------------------------------------------------------------------------
    def prepare(self, c, now: float) -> int:
        role = c.role
        if role == "prefill":
            self._release_sent(c, now)
            c.clock_s = now
            c.current = None
            if not c.waiting:
                return 0
            rq = self.requests
            c.admissible = admissible = self._prompt_admissible(c, rq)
            return admissible
        if role == "decode":
            self._join(c, now)
            admissible = super().prepare(c, now)  # requests preempted here, recomputed here
            held = len(c.inflight)
            if admissible > c.batch_size - c.n_running - held:
                c.admissible = admissible = max(0, c.batch_size - c.n_running - held)
            return admissible
        return super().prepare(c, now)

    def _prompt_admissible(self, c, rq) -> int:
        """Reserved KV on a prefill replica: each admitted prompt holds its ``l_i`` tokens (head-of-line)."""
        cap, waiting = c.kv_capacity_tokens, c.waiting
        head = min(c.batch_size, len(waiting))
        paged = self.paged
        if cap is None and not paged:
            return head
        room = c.paged.free_blocks if paged else cap - c.kv_reserved_tokens
        if not paged and room >= head * self.longest_prompt:
            return head  # every prompt fits: no need to look at the queue
        # Pop the queue's head and push it back (ranks are distinct, so the order of later pops is the same):
        # k log n, where a scan of a long queue held back by memory would be n log k at every boundary.
        taken: list[int] = []
        while len(taken) < head:
            i = rq.request_of_rank(waiting[0])
            need = self._prompt_blocks(c, i) if paged else rq.l[i]
            if need > room:
                break
            room -= need
            taken.append(heappop(waiting))
        for r in taken:
            heappush(waiting, r)
        return len(taken)

    def _prompt_blocks(self, c, i: int) -> int:
        """Paged: the free blocks admitting request i's prompt takes."""
        return self.kv.admission_blocks(c, i, self.requests.l[i])

    # -- phase 2 ------------------------------------------------------------------------------------------
    def form(self, c, now: float, m: int) -> bool:
        role = c.role
        if role == "prefill":
            if m > 0:
                self._prefill(c, now, m)
            elif c.waiting and c.held_out:
                self.clock.at(c, max(now, c.held_out[0][0]))  # memory comes back when a transfer ends
            else:
                c.pending = False
            return True
        if role != "decode" or m > 0:
            return super().form(c, now, m)
        if not c.waiting and c.incoming:
            last = self._start_transfers(c, now)
            if last > now and not self.plan.overlap:
                c.current = None
                self.clock.at(c, last)  # the copies take the decode replica's compute until they end
                return True
        if not super().form(c, now, 0):
            return False
        if c.inflight:
            t = c.inflight[0][0]
            if c.current is not None and self.recorder.kind[c.current] == DECODE:
                self.cut_run_at(c, t)
            elif not c.pending:
                self.clock.at(c, t)
        return True

    def _prefill(self, c, now: float, m: int) -> None:
        if c.role != "prefill":
            super()._prefill(c, now, m)
            return
        rq = self.requests
        l = rq.l
        members = [rq.pop_waiting(c) for _ in range(m)]
        tokens, pieces = 0, []
        for i in members:
            hit = self.kv.admit(c, i, l[i]) if self.paged else 0
            if not self.paged:
                c.kv_reserved_tokens += l[i]
            rq.cached[i] += hit
            tokens += l[i] - hit
            pieces.append((l[i] - hit, hit))
            rq.prefill_start[i] = now
            rq.admissions += 1
            rq.admit_seq[i] = rq.admissions
        end = now + (c.a_p + c.b_p * tokens if c.linear else float(c.cost_model.prefill_time(tokens)))
        c._just_prefilled = (members, members)
        ids = rq.ids_text
        c.current = self.recorder.add_listed(
            c.index, PREFILL, now, end, 1, m, tokens, self.sorted_ids(members), " ".join(ids[i] for i in members),
            " ".join(str(p[0]) for p in pieces), " ".join(str(p[1]) for p in pieces))
        self.clock.at(c, end)

    # -- the end of an iteration ----------------------------------------------------------------------------
    def complete(self, c) -> None:
        if c.role != "prefill":
            super().complete(c)
            return
        index = c.current
        if index is None:
            return
        rq = self.requests
        end = self.recorder.end[index]
        for i in c._just_prefilled[0]:
            rq.first_token[i] = end
            self.prefill_client[i] = c.index
            if self.paged:
                self.kv.register(c, i, rq.l[i])
            c.outstanding_s -= rq.w[i]
            if rq.o[i] == 1:  # its only token came with the prefill: nothing to move
                rq.last_seg[i] = index
                rq.finish[i] = end
                rq.finished += 1
                self._release(c, i)
            else:
                self._handoff(i, end)
        c._just_prefilled = ((), ())

    def _release(self, c, i: int) -> None:
        if self.paged:
            c.paged.release(i, c.paged.blocks(self.requests.l[i]), True)
        else:
            c.kv_reserved_tokens -= self.requests.l[i]

    def _release_sent(self, c, now: float) -> None:
        held = c.held_out
        while held and held[0][0] <= now:
            self._release(c, heappop(held)[1])

    def _handoff(self, i: int, t: float) -> None:
        """Request i's prefill ended at ``t``: the decode stage's router picks its decode replica."""
        rq = self.requests
        d = self.decode_pool[self.decode_router.assign(i, t, self.decode_pool)]
        rq.client_of[i] = d.index
        rq.w[i] = self.w_decode[i]  # from here its predicted work is its decode work
        d.outstanding_s += rq.w[i]
        d.incoming.append(i)
        if not d.pending:
            self.clock.at(d, max(d.clock_s, t))
        elif d.n_running + len(d.inflight) < d.batch_size:
            self.cut_run_at(d, t)

    def _fits(self, c, i: int) -> bool:
        rq = self.requests
        if not self.paged:
            cap = c.kv_capacity_tokens
            return cap is None or c.kv_reserved_tokens + rq.l[i] + rq.o[i] <= cap
        kvm, blocks = c.paged, self._prompt_blocks(c, i)
        # Room for the running decodes' next blocks first: a transfer must not make them preempt.
        grow = self.kv.decode_blocks_needed(c, 1) if c.running else 0
        return blocks + grow <= kvm.free_blocks

    def _start_transfers(self, c, now: float) -> float:
        """Start the transfers the decode replica ``c`` has slots and memory for (first come, first served);
        return the latest end (``-inf`` when none started)."""
        rq, plan, inc = self.requests, self.plan, c.incoming
        last = -math.inf
        while inc and c.n_running + len(c.inflight) < c.batch_size and self._fits(c, inc[0]):
            i = inc.popleft()
            if self.paged:
                hit = self.kv.admit(c, i, rq.l[i])
                rq.cached[i] += hit
            else:
                hit = 0
                c.kv_reserved_tokens += rq.l[i] + rq.o[i]
            tokens = rq.l[i] - hit
            end = now + plan.transfer_s(tokens)
            heappush(c.inflight, (end, i))
            p = self.replicas[self.prefill_client[i]]
            self.transfers.append((i, p.index, c.index, now, end, tokens))
            heappush(p.held_out, (end, i))
            if not p.pending and p.waiting:
                self.clock.at(p, max(p.clock_s, end))  # an idle prefill replica waits for this memory
            last = max(last, end)
        self._join(c, now)
        return last

    def _join(self, c, now: float) -> None:
        """Transfers into ``c`` that have ended: their requests join the running decodes."""
        flight = c.inflight
        if not flight or flight[0][0] > now:
            return
        rq = self.requests
        count = c.decode_count - 1
        while flight and flight[0][0] <= now:
            i = heappop(flight)[1]
            rq.gen_base[i] = count  # its first token came from the prefill replica
            heappush(c.running, (rq.o[i] + count, i))
            self._joins(c, i)
            if self.paged:
                self.kv.join(c, i)
                self.kv.register(c, i, rq.l[i])
            rq.predicted_finish[i] = count + max(rq.seen[i], 1)
            c.ctx_sum += rq.l[i] + 1
            rq.admissions += 1
            rq.admit_seq[i] = rq.admissions
        c.n_running = len(c.running)
        c.ids_cache = None



# -- the schedule ---------------------------------------------------------------------------------------------
def pooled_schedule(schedule, plan: PoolPlan, former: PooledFormer, prefill_client: np.ndarray, bound) -> None:
    """Add what pools export (MODEL.md section 9): ``requests.prefill_client``, the transfers table, and the
    pools, the link, the transfer totals and the bound's terms in the metrics."""
    import pandas as pd

    from workbench.schedule.metrics import transfer_metrics

    rq = schedule.requests
    rq["prefill_client"] = np.where(prefill_client >= 0, prefill_client, rq["client"].to_numpy())
    rows = former.transfers
    req = np.array([t[0] for t in rows], dtype=np.int64)
    tokens = np.array([t[5] for t in rows], dtype=np.int64)
    schedule.transfers = pd.DataFrame({
        "request_id": rq["request_id"].to_numpy()[req], "from_client": np.array([t[1] for t in rows], dtype=np.int64),
        "to_client": np.array([t[2] for t in rows], dtype=np.int64),
        "start_s": np.array([t[3] for t in rows], dtype=float), "end_s": np.array([t[4] for t in rows], dtype=float),
        "tokens": tokens, "bytes": tokens * plan.kv_bytes_per_token})
    metrics = schedule.metrics
    metrics.update(plan.describe())
    metrics.update(transfer_metrics(schedule.transfers))
    if bound is not None:
        metrics["lower_bound_binding"] = bound.binding
        metrics["lower_bound_terms"] = dict(bound.terms)
