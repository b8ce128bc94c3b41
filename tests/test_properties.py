"""Property-based tests (issue 7, part 1): random traces, client counts, batch sizes, cost models, every policy.

For every registered policy (offline-dispatch policies use a heuristic
``method`` so no solver time limit is involved):

* the validator accepts the schedule, in memory and from its files, against the trace;
* every token is generated exactly once (one prefill and ``o_i - 1`` decodes per request,
  counted independently of the validator);
* the makespan is at least the lower bound (the reported one and the closed form);
* the same inputs give the same files, byte for byte;
* relabelling the ids (renaming, rows kept in place) changes nothing but the ids;
* permuting the rows does not change the makespan of an order-independent policy
  (see :func:`test_row_order_does_not_matter_to_order_independent_policies`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workbench.schedule.bounds import closed_form_lower_bound
from workbench.costmodel.linear import LinearCostModel
from workbench.policies.registry import POLICIES, resolve_policy
from workbench.engine.core import simulate
from workbench.schedule.validator import validate

try:  # registers online, hybrid, ... when the online stage is present
    import workbench.policies.lagrangian  # noqa: F401
except ImportError:
    pass

ALL_POLICIES = sorted(POLICIES)
LENGTH_ORDERS = ("longest-output", "shortest-output", "longest-input", "shortest-input", "longest-total")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@st.composite
def traces(draw, min_size=1, max_size=24, arrivals=True):
    n = draw(st.integers(min_size, max_size))
    l = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    o = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    a = [0.0] * n
    if arrivals and draw(st.booleans()):
        a = draw(st.lists(st.floats(0, 5, allow_nan=False).map(lambda x: round(x, 3)), min_size=n, max_size=n))
    ids = draw(st.sampled_from(["int", "text", "sparse"]))
    rid = {"int": list(range(n)), "text": [f"q{i}" for i in range(n)], "sparse": [i * 7919 - 50 for i in range(n)]}[ids]
    return pd.DataFrame({"request_id": rid, "input_tokens": l, "output_tokens": o, "arrival_s": a})


COSTS = st.builds(
    LinearCostModel,
    a_p=st.sampled_from([0.0, 1e-3, 0.015, 1.0]), b_p=st.sampled_from([1e-5, 1e-4, 0.5]),
    a_d=st.sampled_from([1e-3, 0.015, 1.0]), b_d=st.sampled_from([0.0, 1e-4, 0.02]),
    c_d=st.sampled_from([0.0, 2e-7, 1e-5]), name=st.just("hyp"),
)


@st.composite
def instances(draw, policies=tuple(ALL_POLICIES), arrivals=True):
    trace = draw(traces(arrivals=arrivals))
    clients = draw(st.integers(1, 4))
    if draw(st.booleans()) and clients > 1:
        batch = draw(st.lists(st.integers(1, 6), min_size=clients, max_size=clients))
    else:
        batch = draw(st.integers(1, 6))
    policy = draw(st.sampled_from(policies))
    params = {}
    if resolve_policy(policy).dispatch == "offline":
        params["method"] = draw(st.sampled_from(["lpt", "ls"] + (["kk"] if np.ndim(batch) == 0 else [])))
    kv = None
    if draw(st.integers(0, 4)) == 0 or resolve_policy(policy).engine.get("kv") == "paged":
        # Paged KV needs a capacity; one request must fit (in 16-token blocks), several may not.
        kv = (int((trace["input_tokens"] + trace["output_tokens"]).max()) + 16) * draw(st.integers(1, 3))
    return trace, clients, batch, draw(COSTS), policy, params, kv


def run(instance, trace=None):
    t, clients, batch, cost, policy, params, kv = instance
    return simulate(t if trace is None else trace, clients, batch, policy, cost, kv_capacity_tokens=kv, **params)


def _token_counts(schedule) -> tuple[dict, dict]:
    """Per request, the prompts it completed (each yields a token) and the decodes it took part in.

    A prefill row completes its requests' prompts; in mixed rows a prompt completes with the chunk that
    brings its computed tokens to the prompt (plus, after a preemption, the tokens it is recomputing).
    """
    tl = schedule.timeline
    req = schedule.requests.set_index(schedule.requests["request_id"].astype(str))
    need = (req["input_tokens"]).to_dict()
    prefills, decodes, done, generated = {}, {}, {}, {}
    chunk_cols = "prefill_ids" in tl.columns
    for row in tl.itertuples(index=False):
        ids = str(row.request_ids).split() if isinstance(row.request_ids, str) else []
        if row.kind == "preempt":
            for rid in ids:
                done[rid] = 0
            continue
        if row.kind == "prefill":
            for rid in ids:
                prefills[rid] = prefills.get(rid, 0) + 1
                generated[rid] = generated.get(rid, 0) + 1
            continue
        for rid in ids:
            decodes[rid] = decodes.get(rid, 0) + 1
            generated[rid] = generated.get(rid, 0) + 1
        if chunk_cols and row.kind == "mixed":
            for rid, tok in zip(str(row.prefill_ids).split(), str(row.prefill_tokens).split()):
                done[rid] = done.get(rid, 0) + int(tok)
                prompt = need[rid] + (generated.get(rid, 0) if prefills.get(rid) else 0)
                if done[rid] >= prompt - (req.at[rid, "cached_tokens"] if "cached_tokens" in req else 0) or \
                        done[rid] >= prompt:
                    prefills[rid] = prefills.get(rid, 0) + 1
                    generated[rid] = generated.get(rid, 0) + 1
                    done[rid] = 0
    return prefills, decodes


@SETTINGS
@given(instances())
def test_schedules_are_valid_and_generate_every_token_once(tmp_path_factory, instance):
    trace = instance[0]
    s = run(instance)
    report = validate(s, trace=trace)
    assert report.ok, str(report)
    folder = tmp_path_factory.mktemp("s")
    s.write(folder)
    assert validate(folder, trace=trace).ok
    if "preemptions" in s.requests.columns and s.requests["preemptions"].any():
        return  # a recomputed request's token count is the validator's to check (paged rules)
    prefills, decodes = _token_counts(s)
    for rid, o in zip(trace["request_id"].astype(str), trace["output_tokens"]):
        assert prefills.get(rid) == 1, rid
        assert decodes.get(rid, 0) == o - 1, rid
    assert sum(prefills.values()) + sum(decodes.values()) == trace["output_tokens"].sum()


@SETTINGS
@given(instances())
def test_makespan_is_at_least_the_lower_bound(instance):
    trace, clients, batch, cost = instance[:4]
    s = run(instance)
    if s.metrics.get("iteration_mode", "exclusive") == "mixed" or "token_budget" in s.metrics:
        # Mixed iterations pay no a_p per prefill stage: the bound of MODEL.md section 3 is not theirs.
        from workbench.schedule.bounds import chunked_lower_bound

        closed = chunked_lower_bound(trace, clients, batch, cost, token_budget=s.metrics["token_budget"])
    else:
        closed = closed_form_lower_bound(trace, clients, batch, cost)
    tol = 1e-9 * s.makespan_s
    assert s.makespan_s >= s.metrics["lower_bound_s"] - tol
    assert s.makespan_s >= closed.value_s - tol
    assert s.metrics["lower_bound_s"] >= closed.value_s - tol


@SETTINGS
@given(instances())
def test_same_inputs_give_the_same_files_byte_for_byte(tmp_path_factory, instance):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    run(instance).write(a)
    run(instance).write(b)
    for name in ("timeline.csv", "requests.csv", "metrics.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@SETTINGS
@given(instances(), st.sampled_from(["text", "shift", "shuffle"]))
def test_relabelling_ids_changes_nothing_but_the_ids(instance, how):
    """Any policy: ids renamed (rows in place) give the same schedule up to the renaming."""
    trace = instance[0]
    n = len(trace)
    new_ids = {"text": [f"id-{i}" for i in range(n)], "shift": [10**9 + i for i in range(n)],
               "shuffle": list(np.random.default_rng(n).permutation(n) * 3)}[how]
    renamed = trace.assign(request_id=new_ids)
    a, b = run(instance), run(instance, renamed)
    back = dict(zip(pd.Series(new_ids).astype(str), trace["request_id"].astype(str)))
    tl_b = b.timeline.copy()
    tl_b["request_ids"] = [" ".join(sorted(back[x] for x in ids.split())) for ids in tl_b["request_ids"]]
    tl_a = a.timeline.copy()
    tl_a["request_ids"] = [" ".join(sorted(ids.split())) for ids in tl_a["request_ids"].astype(str)]
    if "prefill_ids" in tl_b.columns:  # chunks keep their order (aligned with prefill_tokens): map, do not sort
        tl_b["prefill_ids"] = [" ".join(back[x] for x in str(ids).split()) for ids in tl_b["prefill_ids"]]
    pd.testing.assert_frame_equal(tl_a.reset_index(drop=True), tl_b.reset_index(drop=True))
    pd.testing.assert_frame_equal(a.requests.drop(columns="request_id"), b.requests.drop(columns="request_id"))
    assert json.dumps(a.metrics, sort_keys=True, default=str) == json.dumps(b.metrics, sort_keys=True, default=str)


def _order_independent() -> list[tuple[str, int | None]]:
    """(policy, clients) pairs for which row order cannot matter; None = any number of clients."""
    pairs = []
    for name, p in sorted(POLICIES.items()):
        if p.order not in LENGTH_ORDERS:
            continue
        if p.dispatch == "offline" and not p.params.get("steal"):
            pairs.append((name, None))
        pairs.append((name, 1))
    return pairs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_order_independent()), st.data())
def test_row_order_does_not_matter_to_order_independent_policies(pair, data):
    """Permuting the trace rows leaves the makespan unchanged for an order-independent policy.

    Order-independent means: every request arrives at t = 0; the queue order is a
    function of the lengths (longest-output, shortest-input, ...: never fifo or
    arrival, which *are* the row order); no two requests tie on the sort key
    unless they are identical (so the row index never breaks a tie that
    matters); and the dispatch does not look at the row order either: one
    client (any dispatcher sends everything to it), or the offline bin-packing
    assignment with LPT, which sorts by weight (distinct weights assumed) and
    breaks no ties by row.  The iteration rules (static, continuous,
    Lagrangian) read only the client's state.  Round-robin and least-work
    dispatch over several clients, fifo queues and work stealing are *not*
    claimed order-independent.
    """
    name, clients = pair
    policy = POLICIES[name]
    clients = clients or data.draw(st.integers(2, 4))
    trace = data.draw(traces(min_size=2, max_size=20, arrivals=False))
    cost = data.draw(COSTS)
    key = {"longest-output": "output_tokens", "shortest-output": "output_tokens", "longest-input": "input_tokens",
           "shortest-input": "input_tokens"}.get(policy.order)
    keys = trace[key] if key else trace["input_tokens"] + trace["output_tokens"]
    pairs = list(zip(trace["input_tokens"], trace["output_tokens"]))
    for k in set(keys):  # ties only between identical requests
        assume(len({p for p, kk in zip(pairs, keys) if kk == k}) == 1)
    params = {"method": "lpt"} if policy.dispatch == "offline" else {}
    if policy.dispatch == "offline":
        w = cost.request_weight_s(trace["input_tokens"], trace["output_tokens"], 4)
        assume(len(set(np.round(w, 15))) == len({p for p in pairs}))
    perm = data.draw(st.permutations(range(len(trace))))
    shuffled = trace.iloc[list(perm)].reset_index(drop=True)
    a = simulate(trace, clients, 4, name, cost, **params)
    b = simulate(shuffled, clients, 4, name, cost, **params)
    assert a.makespan_s == pytest.approx(b.makespan_s, rel=1e-12, abs=1e-12)


# -- the engine's options together (issue 27): policy x iteration x KV x prefix columns x block size x
# stealing x predictors x fleets; each schedule valid against its trace and never below its bound ------------

@st.composite
def engine_instances(draw):
    trace = draw(traces(max_size=16))
    n = len(trace)
    columns = draw(st.sampled_from(["none", "prefix_id", "prefix_hashes"]))
    if columns == "prefix_id":
        group = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        shortest = {g: min(int(trace["input_tokens"][i]) for i in range(n) if group[i] == g) for g in set(group)}
        share = draw(st.floats(0, 1))
        trace = trace.assign(prefix_id=[f"p{g}" for g in group],
                             prefix_tokens=[int(shortest[g] * share) for g in group])
    elif columns == "prefix_hashes":
        hb = draw(st.sampled_from([8, 16, 50]))
        family = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        chains = []
        for i in range(n):
            blocks = -(-int(trace["input_tokens"][i]) // hb)
            shared = draw(st.integers(0, blocks))
            chains.append(" ".join([f"f{family[i]}-{b}" for b in range(shared)] +
                                   [f"r{i}-{b}" for b in range(shared, blocks)]))
        trace = trace.assign(prefix_hashes=chains, prefix_block_tokens=hb)
    clients = draw(st.integers(1, 3))
    batch = draw(st.integers(1, 6))
    policy = draw(st.sampled_from(ALL_POLICIES))
    options: dict = {"iteration": draw(st.sampled_from(["exclusive", "mixed"])),
                     "kv": draw(st.sampled_from(["reserve", "paged"]))}
    if resolve_policy(policy).dispatch == "offline":
        options["method"] = "lpt"
    if options["iteration"] == "mixed":
        options["token_budget"] = batch + draw(st.integers(1, 300))
    block = draw(st.sampled_from([1, 4, 16, 100]))
    longest = int((trace["input_tokens"] + trace["output_tokens"]).max())
    if options["kv"] == "paged":
        options.update(block_size=block, prefix_caching=draw(st.booleans()),
                       kv_capacity_tokens=(longest + 2 * block) * draw(st.integers(1, 3)))
    else:
        options["prefix_caching"] = False
    if draw(st.booleans()):
        options["steal"] = True
    options["predictor"] = draw(st.sampled_from([None, "noisy:0.3", "bucketed:3"]))
    cost = draw(COSTS)
    models = [cost] * clients if clients == 1 or draw(st.booleans()) else [draw(COSTS) for _ in range(clients)]
    return trace, clients, batch, models, policy, options


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(engine_instances())
def test_every_combination_of_engine_options_is_valid_and_above_its_bound(instance):
    from workbench.errors import ConfigError

    trace, clients, batch, models, policy, options = instance
    try:
        s = simulate(trace, clients, batch, policy, models, **options)
    except ConfigError as exc:  # a combination refused in one line (e.g. an option the policy does not take)
        assert "\n" not in str(exc)
        assume(False)
    report = validate(s, trace)
    assert report.ok, f"{policy} {options}: {report}"
    lb = s.metrics["lower_bound_s"]
    assert not lb > s.makespan_s * (1 + 1e-9), f"{policy} {options}: bound {lb} > makespan {s.makespan_s}"
