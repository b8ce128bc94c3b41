"""Write notebooks/06-uncertainty-and-fleets.ipynb (helpers from make_notebooks.py; fold it in there when convenient)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbformat
from make_notebooks import code, md, notebook

CELLS = [
    md("""
        # 06 · Uncertain output lengths and mixed fleets

        **The problem.** The paper's hybrid method reads every request's output length `o_i`: the
        offline bin packing balances `Σ w_i` per client, the queues put the longest output first,
        and the Lagrangian rule looks ahead to the next completion. A real server learns `o_i`
        only when the request ends; it has a *prediction* `ô_i`. And real fleets mix hardware:
        A100 and H100 replicas with their own speeds, batch sizes and KV caches.

        This notebook asks two questions: how do the policies degrade as predictions get worse,
        and what keeps the hybrid ahead; and what changes in the bin packing and the lower bound
        when clients differ. The text with the full tables is `docs/beyond.md`; the code is
        `workbench.workload.predict`, `workbench.studies.uncertainty` and `workbench.schedule.fleet`.
    """),
    code("""
        # Parameters
        TRACE = "gsm8k-test"        # shipped trace (question-only prompts)
        N_REQUESTS = 480            # a random subset, to keep the notebook fast
        SEED = 0                    # seed of the subset
        CLIENTS = 4
        BATCH_SIZE = 16
        COST_MODEL = "llama-65b"
        SPREADS = [0.0, 0.2, 0.5, 1.0]   # prediction error: sd of the log error
        SEEDS = [0, 1]                   # predictor seeds per error level
        POLICIES = ["paper-baseline", "online", "hybrid", "hybrid-steal", "hybrid-robust"]
        FLEET = "llama2-70b-a100-tp8:2x32,llama2-70b-h100-tp4:2x32"
    """),
    code("""
        import numpy as np
        import pandas as pd

        from workbench.studies.experiments import Scenario
        from workbench.viz.figures import comparison_table, gantt_compare
        from workbench.schedule.fleet import Fleet, fleet_lower_bound, fleet_weights, fractional_work_bound
        from workbench.workload.predict import Bucketed, Exact, Noisy, prediction_error
        from workbench.engine.core import simulate
        from workbench.workload.trace import load_trace, sample_trace
        from workbench.studies.uncertainty import uncertainty_study
        from workbench.schedule.validator import validate
    """),
    md("""
        ## The data: true and predicted lengths

        A random subset of GSM8K test questions (the trace contract of MODEL.md §9) and three
        predictors. `Noisy(S, seed)` multiplies each length by `exp(S Z − S²/2)` with
        `Z ~ N(0, 1)`: the error factor has mean 1, so total predicted work is right on average.
        `Bucketed(4)` is a perfect classifier into four length classes that predicts each class's
        mean.
    """),
    code("""
        trace = sample_trace(load_trace(TRACE), N_REQUESTS, seed=SEED)
        predictors = {"exact": Exact(), "noisy 0.2": Noisy(0.2, 0), "noisy 1.0": Noisy(1.0, 0),
                      "bucketed 4": Bucketed(4)}
        lengths = trace[["request_id", "input_tokens", "output_tokens"]].copy()
        for name, p in predictors.items():
            lengths[name] = p.predict(trace)
        lengths.head(8)
    """),
    code("""
        pd.DataFrame({name: prediction_error(trace, p.predict(trace)) for name, p in predictors.items()}).T
    """),
    md("""
        ## The symbols

        | symbol | meaning |
        |---|---|
        | `o_i`, `ô_i` | true and predicted output tokens of request `i` |
        | `S` | the spread: the standard deviation of `log(ô_i / o_i)` |
        | `w_i(ô)` | the additive weight of MODEL.md §3 computed with `ô_i` |
        | `d`, `c_i` | a client's decode count now, and when request `i` was admitted |
        | `W_j`, `s_j` | predicted outstanding work of client `j` and its speed |

        The error model: $\\hat o_i = \\max\\bigl(1, \\mathrm{round}(o_i\\, e^{S Z_i - S^2/2})\\bigr)$,
        $Z_i \\sim N(0,1)$, so $E[e^{S Z - S^2/2}] = 1$ and the relative error has standard deviation
        $\\sqrt{e^{S^2}-1}$ (0.20 at $S = 0.2$, 1.31 at $S = 1$).

        **What each decision reads.** Dispatch weights, the offline bin packing, the queue order and
        work stealing use $w_i(\\hat o)$ and $\\hat o_i$. The Lagrangian rule's look-ahead uses the
        predicted finish counts

        $$\\hat f_i = \\max\\bigl(c_i + \\hat o_i,\\; d + 1\\bigr),$$

        so a request that has outlived its prediction is expected to end at the next iteration.
        The simulator runs the true $o_i$; with exact predictions every schedule is today's.

        **Work stealing.** A client `t` with free slots and an empty queue takes, from the client
        `v` with waiting requests and the largest $W_v / s_v$, the requests `v` would start next,
        one at a time, while

        $$\\frac{W_v - w_i}{s_v} \\;\\ge\\; \\frac{W_t + w_i}{s_t},$$

        so work only moves from a heavier client to a lighter one and never comes back.
    """),
    md("""
        ## One schedule under 50% error

        The hybrid method and its robust variant (stealing plus a prefill-eager price `μ = 10`) on
        the same noisy predictions. Both schedules pass the validator, which reads only the
        exported files (stolen requests are exported on the client that ran them).
    """),
    code("""
        noisy = Noisy(0.5, seed=1)
        schedules = {name: simulate(trace, CLIENTS, BATCH_SIZE, name, COST_MODEL, predictor=noisy, method="kk")
                     for name in ("paper-baseline", "hybrid", "hybrid-robust")}
        for name, s in schedules.items():
            assert validate(s, trace).ok, name
        comparison_table(schedules, base="paper-baseline")
    """),
    code("""
        gantt_compare(schedules, title="Per-client timelines with 50% prediction error")
    """),
    md("""
        ## The study: makespan against prediction error

        `uncertainty_study` sweeps the spread over seeds; each (spread, seed) gets one predictor
        and one offline assignment, computed on the predicted lengths, shared by the hybrid
        variants. `paper-baseline` reads no length, so it is flat. The full study on the paper
        scenario is `workbench reproduce --uncertainty`.
    """),
    code("""
        scenario = Scenario(name="notebook", trace=trace, clients=CLIENTS, batch_size=BATCH_SIZE,
                            cost_model=COST_MODEL, lower_bound_method="closed")
        study = uncertainty_study(SPREADS, SEEDS, POLICIES, scenario=scenario)
        study["table"][["spread", "policy", "makespan_mean_s", "makespan_max_s", "gap_closed_mean",
                        "share_beating_base", "stolen_mean"]]
    """),
    code("""
        study["figure"]
    """),
    md("""
        ## Mixed fleets

        Client `j` has its own batch size `B_j` and cost model; request `i` weighs

        $$W_{ij} = v_i^j + \\frac{a_p^j}{B_j} + \\frac{a_d^j\\,(o_i-1)}{B_j}$$

        on it, and client `j`'s busy time is at least $\\sum_{i\\in S_j} W_{ij}$ (MODEL.md §3 on
        client `j`). For any $y \\ge 0$ with $\\sum_j y_j = 1$,

        $$T = \\sum_j y_j T \\;\\ge\\; \\sum_j y_j \\sum_{i \\in S_j} W_{ij} \\;\\ge\\; \\sum_i \\min_j y_j W_{ij},$$

        because each request is in exactly one $S_j$. Every $y$ gives a proven bound (a point of the
        dual of the bin packing's LP relaxation); `fractional_work_bound` searches for a good one.
        With one kind of client it is the classic $\\sum_i w_i / |J|$. Pricing the whole fleet with
        one client's model is *not* a bound.
    """),
    code("""
        fleet = Fleet.parse(FLEET)
        fleet.table()
    """),
    code("""
        W = fleet_weights(trace, fleet.batch_size, fleet.cost_model)
        value, y = fractional_work_bound(W)
        bound = fleet_lower_bound(trace, fleet.clients, fleet.batch_size, fleet.cost_model)
        pd.DataFrame({"y_j": y, "client load if alone (s)": W.sum(axis=0)}), bound.table()
    """),
    code("""
        fleet_schedules = {name: simulate(trace, policy=name, method="lpt", **fleet.simulate_kwargs())
                           for name in ("paper-baseline", "online", "hybrid", "hybrid-steal")}
        for name, s in fleet_schedules.items():
            assert validate(s, trace).ok and s.metrics["lower_bound_s"] <= s.makespan_s, name
        comparison_table(fleet_schedules, base="paper-baseline")
    """),
    code("""
        gantt_compare({k: fleet_schedules[k] for k in ("paper-baseline", "hybrid")},
                      title="A100 clients 0-1, H100 clients 2-3")
    """),
    md("""
        ## Exercises

        1. Replace `Noisy` by `Bucketed(n)` for `n = 2, 4, 8, 16`. How many length classes does the
           hybrid need to stay within 5% of its exact-length makespan?
        2. `hybrid-robust` fixes `μ = 10`. Sweep `μ` at spreads 0, 0.2 and 1.0 (pass `mu=` to
           `simulate` with `policy="hybrid-steal"`). Derive a rule `μ(S)` and say what it costs
           with exact lengths.
        3. The predictor's error is mean-preserving. Make it biased (`Column` with `0.7 * o_i`):
           which decisions does a biased predictor still get right, and why?
        4. Show that with uniform machines, `W_ij = w_i / s_j`, the best `y` is `y_j = s_j / Σ s` and
           the bound is total work over total speed. Check it with `fractional_work_bound`.
        5. Build a fleet where the cheaper clients (per request) have the smaller batch. Does the
           offline assignment send the longest requests to the fast clients? Compare with `least-work`.

        Solutions: [`solutions/06-uncertainty-and-fleets-solutions.ipynb`](solutions/06-uncertainty-and-fleets-solutions.ipynb).
    """),
]

nb = notebook("06-uncertainty-and-fleets", CELLS)
nbformat.write(nb, Path(__file__).resolve().parents[1] / "notebooks" / "06-uncertainty-and-fleets.ipynb")
print("written")
