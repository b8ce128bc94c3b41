"""Write the teaching notebooks and the dashboard notebook from this one script.

The committed ``.ipynb`` files are the product; this script is how they are
kept consistent (same parameters-cell convention, no outputs, stable cell
ids so a regenerated notebook diffs only where its text changed).

    python scripts/make_notebooks.py            # write every notebook
    python scripts/make_notebooks.py --check    # exit 1 if a committed notebook differs

Notebooks follow the MO-book arc (docs/notebooks.md): the problem, the data as
a table, the symbols, the model, solve, the schedule as a table, a Gantt
chart, exercises; widgets last, wrapping what already ran headless.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def md(text: str) -> tuple[str, str]:
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", textwrap.dedent(text).strip("\n"))


def notebook(slug: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, (kind, text) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"{slug}-{i:02d}"
        if kind == "code" and text.startswith("# Parameters"):
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


# -------------------------------------------------------------------------------------------------
DASHBOARD = [
    code("""
        # Parameters
        TRACE = "gsm8k-test"
        CLIENTS = 8
        BATCH_SIZE = 16
        POLICY = "hybrid"
    """),
    code("""
        from workbench.viz.widgets import dashboard

        dashboard(trace=TRACE, clients=CLIENTS, batch_size=BATCH_SIZE, policy=POLICY)
    """),
]

# -------------------------------------------------------------------------------------------------
TOUR = [
    md("""
        # 00 · A five-minute tour

        **The problem.** A batch of questions (the 1,319 GSM8K test problems) must be answered by a
        cluster of $|J|$ identical replicas of LLaMA-65B. Each replica (a *client*) serves at most $B$
        requests at once and works in *iterations*: a **prefill** reads newly admitted prompts and
        produces their first token; a **decode** produces one more token for every running request.
        Everything is known at time 0, so the question is purely one of scheduling: which client
        serves which request, in what order, and when to interrupt decoding to admit new requests, so
        that the **last request finishes as early as possible** (the makespan).

        This notebook runs the paper's baseline and the hybrid offline-online method of Pang, Li, She
        and Wang (2025) on the same instance, compares them with a proven lower bound, and draws their
        per-client timelines. The later notebooks take each piece apart.
    """),
    code("""
        # Parameters
        TRACE = "gsm8k-test"         # a shipped trace: see workbench.workload.trace.list_traces()
        CLIENTS = 8                  # |J|: model replicas
        BATCH_SIZE = 16              # B: requests a replica serves at once
        COST_MODEL = "llama-65b"     # iteration-time preset (notebook 01)
        POLICIES = ["paper-baseline", "hybrid"]
    """),
    code("""
        import pandas as pd

        import workbench.policies.lagrangian  # noqa: F401  (registers the "online" and "hybrid" policies)
        from workbench.costmodel.linear import load_preset
        from workbench.viz.figures import comparison_table, gantt, gantt_compare
        from workbench.engine.core import simulate
        from workbench.workload.trace import load_trace, sample_trace
        from workbench.schedule.validator import validate
    """),
    md("""
        ## The data: one row per request

        A trace is a tidy table: a request id, the prompt length $l_i$ and the output length $o_i$ in
        tokens (counted with the LLaMA tokenizer; `data/traces/PROVENANCE.md` says how), and an
        arrival time, 0 here.
    """),
    code("""
        trace = load_trace(TRACE)
        trace.head()
    """),
    code("""
        trace[["input_tokens", "output_tokens"]].describe().round(1).T
    """),
    md("""
        ## What an iteration costs

        The simulator, the bounds and the optimisation models all price an iteration with one linear
        cost model (derived for LLaMA-65B on 8 A100s in notebook 01):

        $$
        t_\\text{prefill}(P) = a_p + b_p \\sum_{i\\in P} l_i ,
        \\qquad
        t_\\text{decode}(\\mathcal B) = a_d + b_d\\,|\\mathcal B| + c_d \\sum_{i\\in\\mathcal B} \\text{ctx}_i .
        $$

        The fixed parts $a_p$, $a_d$ (streaming every weight once per iteration) dwarf the per-token
        parts, which is why batching pays and why an empty batch slot is waste.
    """),
    code("""
        cost_model = load_preset(COST_MODEL)
        pd.Series(cost_model.coefficients(), name="seconds").to_frame().assign(
            milliseconds=lambda t: t["seconds"] * 1e3)
    """),
    md("""
        ## Two schedules

        * **`paper-baseline`**: requests go round-robin to the clients in trace order; each client
          serves its queue first-in first-out with continuous batching (a free slot is refilled by a
          prefill at once). This is our stated stand-in for the paper's baseline.
        * **`hybrid`**: an *offline* stage first balances the clients' total work (a minimizing-makespan
          bin-packing problem, notebook 02); then each client sorts its queue longest-output-first, and
          an *online* Lagrangian rule decides at every iteration whether inserting a prefill is worth
          pausing the running decodes (notebook 04).

        Both produce the same schedule table, so one function draws and measures them all.
    """),
    code("""
        schedules = {name: simulate(trace, CLIENTS, BATCH_SIZE, name, cost_model) for name in POLICIES}
        schedules["hybrid"].timeline.head(8)
    """),
    md("""
        ## How good are they?

        * **makespan** $T$: when the last request finishes;
        * **lower bound** $T_{LB}$: no schedule can finish earlier (MODEL.md §3; notebook 02 derives it);
        * **gap** $T/T_{LB}-1$: how far from optimal a schedule *may* be;
        * **slot utilization**: the share of batch-slot time spent generating tokens, the paper's
          "hardware utilization";
        * **gap closed** $(T_\\text{base}-T)/(T_\\text{base}-T_{LB})$: the share of the baseline's gap a
          method removes (the paper reports 52.4 %).
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        table = comparison_table(schedules, base="paper-baseline")
        print(table.round(3).to_string())
    """),
    md("""
        ## Per-client timelines

        One row per client; <span style="color:#E4572E">prefill</span> bars in red,
        <span style="color:#2E86AB">decode</span> runs in blue, paler when the batch is less full. The
        dotted line is the makespan, the dashed green line the lower bound. Hover over a bar for its
        iterations, requests and tokens. The baseline's clients finish at visibly different times;
        the hybrid's finish together.
    """),
    code("""
        gantt_compare(schedules)
    """),
    md("""
        On a small instance the iterations themselves become visible: 24 requests sampled from the
        trace on 2 clients with room for 4 requests each.
    """),
    code("""
        small = sample_trace(trace, 24, seed=1)
        gantt(simulate(small, 2, 4, "hybrid", cost_model))
    """),
    md("""
        ## Every schedule can be checked

        A schedule is three files (`timeline.csv`, one row per iteration; `requests.csv`;
        `metrics.json`). `validate` re-derives everything from them: no overlapping iterations, each
        request prefilled once then decoded exactly $o_i-1$ times on one client, batch sizes within
        $B$, each duration equal to the cost model's, and the metrics recomputed.

        The same tables can be written as Parquet (`format="parquet"`, or `--format parquet` on the
        command line): smaller and faster for large runs; `validate`, `Schedule.read` and the Gantt
        chart read either.
    """),
    code("""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            folder = schedules["hybrid"].write(Path(tmp) / "hybrid")
            print(sorted(p.name for p in folder.iterdir()))
            print(validate(folder, trace=trace).ok)
            parquet = schedules["hybrid"].write(Path(tmp) / "hybrid-parquet", format="parquet")
            print(sorted(p.name for p in parquet.iterdir()), validate(parquet, trace=trace).ok)
    """),
    md("""
        ## Exercises

        1. Halve the batch size to `BATCH_SIZE = 8` in the parameters cell and re-run. Which metric
           moves most, and why does the gap between the two policies change?
        2. Replace `"paper-baseline"` by `"static"` (fill the batch, decode until it is empty, refill).
           How much worse is static batching, and where on the Gantt chart do you see the waste?
        3. The lower bound is the same for both schedules. Using `schedules[...].metrics`, find which
           term of the bound binds (`lower_bound_binding`) and explain in one sentence what it means.

        Solutions: [`solutions/00-tour-solutions.ipynb`](solutions/00-tour-solutions.ipynb).

        ## Explore

        The same instance behind controls: every control feeds `workbench.viz.widgets.run_schedule`, the
        function this notebook called as `simulate` above. The chart updates in place; press play
        to watch the schedule unfold. For a stand-alone web app run `workbench dashboard`.
    """),
    code("""
        from workbench.viz.widgets import ScheduleExplorer

        ScheduleExplorer(trace=TRACE, clients=CLIENTS, batch_size=BATCH_SIZE, policy="hybrid")
    """),
]

TOUR_SOLUTIONS = [
    md("""
        # Solutions to the exercises of 00 · A five-minute tour
    """),
    code("""
        import workbench.policies.lagrangian  # noqa: F401
        from workbench.viz.figures import comparison_table
        from workbench.engine.core import simulate
        from workbench.workload.trace import load_trace

        trace = load_trace("gsm8k-test")
    """),
    md("""
        **1.** With $B = 8$ every client has half the slots, so the makespan roughly doubles; the fixed
        decode cost $a_d$ is shared by fewer requests. Slot utilization of the baseline *rises*
        (fewer slots are easier to keep full), so the room the hybrid method has to improve shrinks.
    """),
    code("""
        for B in (16, 8):
            ss = {p: simulate(trace, 8, B, p, "llama-65b") for p in ("paper-baseline", "hybrid")}
            print(f"B = {B}")
            print(comparison_table(ss, base="paper-baseline").round(3).to_string(), end="\\n\\n")
    """),
    md("""
        **2.** Static batching waits for the *longest* request of a batch before refilling: the decode
        bars get paler and paler (emptier batches) before each red prefill.
    """),
    code("""
        ss = {p: simulate(trace, 8, 16, p, "llama-65b") for p in ("static", "paper-baseline", "hybrid")}
        print(comparison_table(ss, base="static").round(3).to_string())
    """),
    md("""
        **3.** On GSM8K with 8 clients the binding term is the total work spread evenly over the clients
        (`average_work`, or the bin-packing bound when the offline stage recorded it): the instance is
        large enough that no single request, only the sheer amount of work, limits the makespan.
    """),
    code("""
        m = ss["hybrid"].metrics
        print(m.get("lower_bound_binding"), round(m["lower_bound_s"], 3))
    """),
]

# -------------------------------------------------------------------------------------------------
COST_MODEL_NB = [
    md("""
        # 01 · The cost model: where iteration times come from

        Every scheduling decision trades one kind of iteration against another, so the workbench needs
        to know what an iteration costs. This notebook derives the five coefficients of the linear
        model for LLaMA-65B on one node of 8 × A100-80GB from datasheet numbers (a *roofline*
        derivation), shows what each coefficient means physically, and fits the same model by least
        squares to a measured profile. `docs/cost-model.md` has the full write-up.
    """),
    code("""
        # Parameters
        PROFILE_SEED = 0            # seed of the synthetic "measurement" noise
        PROFILE_NOISE = 0.03        # relative noise of each measured iteration (log-normal sigma)
        CONTEXT_TOKENS = 300        # context per request used in the batching plot
        TRACE = "gsm8k-test"
        CLIENTS, BATCH_SIZE = 8, 16
    """),
    code("""
        import numpy as np
        import pandas as pd
        import plotly.graph_objects as go

        import workbench.policies.lagrangian  # noqa: F401  (registers the "hybrid" policy)
        from workbench.costmodel.linear import COEFFICIENT_UNITS, fit, list_presets, load_preset
        from workbench.costmodel.roofline import A100_80GB_X8, LLAMA_65B, roofline_cost_model, roofline_table
        from workbench.engine.core import simulate
    """),
    md("""
        ## The model

        $$
        t_\\text{prefill}(P) = a_p + b_p \\sum_{i\\in P} l_i ,
        \\qquad
        t_\\text{decode}(\\mathcal B) = a_d + b_d\\,|\\mathcal B| + c_d \\sum_{i\\in\\mathcal B} \\text{ctx}_i
        $$

        | symbol | meaning | unit |
        |---|---|---|
        | $P$ | requests admitted by a prefill stage | set |
        | $\\mathcal B$ | requests running in a decode iteration, $|\\mathcal B| \\le B$ | set |
        | $l_i$ | prompt (input) length of request $i$ | tokens |
        | $\\text{ctx}_i$ | current context of $i$: $l_i$ + tokens generated so far | tokens |
        | $a_p$, $a_d$ | fixed time of a prefill stage, of a decode iteration | s |
        | $b_p$ | time per prompt token in a prefill | s / token |
        | $b_d$ | time per request in a decode batch | s / request |
        | $c_d$ | time per context token a decode reads | s / token |

        Linearity is a choice: it makes a whole schedule's cost decompose into a part no schedule can
        change plus $a_p N_\\text{prefill} + a_d N_\\text{decode}$ (MODEL.md §3), which the lower bound,
        the bin packing and the Lagrangian rule all rely on.

        ## Derivation from first principles

        A forward pass on $G$ tensor-parallel GPUs is limited by three resources. Summing their times
        (rather than taking the largest, the strict roofline) keeps the model linear:

        * **HBM bandwidth.** Every iteration streams all $N_{mm}$ weights that multiply a token once,
          whatever the batch: $t_\\text{weights} = \\dfrac{2 N_{mm}/G}{\\eta_{bw} B_{hbm}}$.
        * **Compute.** Each token costs $2N_{mm}$ FLOPs (a multiply and an add per weight):
          $t_\\text{flops/token} = \\dfrac{2N_{mm}}{G\\,\\eta_{mm} F}$.
        * **NVLink.** Tensor parallelism all-reduces the hidden state twice per layer: a latency
          $\\lambda$ each, $2L\\lambda$ per pass, plus the bytes of a ring all-reduce per token.
        * **KV cache.** A decode step reads every context token's keys and values,
          $2 L H_{kv} d_h \\times 2$ bytes, split over the GPUs: $t_{kv/\\text{token}}$.

        Then $a_p = a_d = t_\\text{weights} + 2L\\lambda + t_0$ (the fixed part), $b_d$ is one token's
        matmuls, all-reduce bytes and KV write, $b_p$ adds the prompt's attention FLOPs, and
        $c_d = t_{kv/\\text{token}}$. Every intermediate number, with its formula and source:
    """),
    code("""
        derivation = roofline_table(LLAMA_65B, A100_80GB_X8)
        derivation[["quantity", "value", "unit", "how"]]
    """),
    md("""
        The derived model is the shipped `llama-65b` preset (the preset file was written by
        `scripts/make_presets.py` from this function):
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        derived = roofline_cost_model(LLAMA_65B, A100_80GB_X8)
        preset = load_preset("llama-65b")
        coefficients = pd.DataFrame({"derived": derived.coefficients(), "preset": preset.coefficients()})
        coefficients["unit"] = pd.Series(COEFFICIENT_UNITS)
        print((coefficients[["derived", "preset"]] * 1e6).round(3).assign(unit="µs").to_string())
        print("KV-cache capacity:", derived.kv_capacity_tokens, "tokens")
    """),
    md("""
        ## What each coefficient means

        | coefficient | value | what it pays for | what it implies for scheduling |
        |---|---|---|---|
        | $a_p = a_d$ | ≈ 15 ms | streaming 16 GB of weights per GPU, 160 all-reduce latencies, CPU overhead | every iteration has a large fixed price: batch, and avoid needless prefill stages |
        | $b_p$ | ≈ 0.1 ms | one prompt token's matmuls, all-reduce bytes, KV write | a 100-token prompt costs about as much as the fixed part |
        | $b_d$ | ≈ 0.1 ms | the same for each request's new token | a decode of 16 requests costs barely more than one of 1 |
        | $c_d$ | ≈ 0.2 µs | reading one context token's KV cache | long contexts slow decoding down, linearly |

        The batching economics in one picture: the time of a decode iteration grows slowly with the
        batch, so the time *per request* falls like $a_d/|\\mathcal B|$. An empty slot wastes
        $a_d/B$ of a decode: the price the Lagrangian rule puts on it (notebook 04).
    """),
    code("""
        batch = np.arange(1, 129)
        iteration = preset.decode_time(batch, batch * CONTEXT_TOKENS)
        fig = go.Figure([
            go.Scatter(x=batch, y=iteration * 1e3, name="decode iteration (ms)"),
            go.Scatter(x=batch, y=iteration / batch * 1e3, name="per request (ms)", yaxis="y2"),
        ])
        fig.update_layout(title=f"Decode cost vs batch size ({CONTEXT_TOKENS} context tokens per request)",
                          xaxis_title="requests in the batch", yaxis=dict(title="iteration (ms)", rangemode="tozero"),
                          yaxis2=dict(title="per request (ms)", overlaying="y", side="right", rangemode="tozero",
                                      showgrid=False),
                          template="plotly_white", height=380, legend=dict(orientation="h", x=0, y=1.12))
        fig
    """),
    md("""
        ## Fitting a profile

        On real hardware one measures iteration times and fits the coefficients. Given a profile with
        one row per measured iteration (`kind`, `batch_size`, `tokens`, `time_s`), `fit` solves two
        least-squares problems with non-negative coefficients:

        $$
        \\min_{a_p,b_p\\ge 0} \\sum_{r\\in\\text{prefill}} \\big(t_r - a_p - b_p\\,\\text{tokens}_r\\big)^2 ,
        \\qquad
        \\min_{a_d,b_d,c_d\\ge 0} \\sum_{r\\in\\text{decode}} \\big(t_r - a_d - b_d\\,|\\mathcal B_r| - c_d\\,\\text{ctx}_r\\big)^2 ,
        $$

        and reports $R^2$ and errors. We have no GPU here, so we *simulate* a measurement: the derived
        model's times, each with 3 % log-normal noise, on a grid of prompt sizes, batch sizes and
        contexts. (The shipped `llama2-70b-*` presets were fitted the same way to Vidur's public GPU
        operator profiles, see `workbench.costmodel.calibrate`.)
    """),
    code("""
        rng = np.random.default_rng(PROFILE_SEED)
        prefill_tokens = np.repeat([64, 128, 256, 512, 1024, 2048, 4096], 3)
        batch_grid, context_grid = np.meshgrid([1, 2, 4, 8, 16, 32, 64, 128], [128, 256, 512, 1024, 2048])
        batch_sizes, contexts = batch_grid.ravel(), context_grid.ravel()
        profile = pd.concat([
            pd.DataFrame({"kind": "prefill", "batch_size": 1, "tokens": prefill_tokens,
                          "time_s": preset.prefill_time(prefill_tokens)}),
            pd.DataFrame({"kind": "decode", "batch_size": batch_sizes, "tokens": batch_sizes * contexts,
                          "time_s": preset.decode_time(batch_sizes, batch_sizes * contexts)}),
        ], ignore_index=True)
        profile["time_s"] *= rng.lognormal(0.0, PROFILE_NOISE, len(profile))
        profile.sample(6, random_state=0)
    """),
    code("""
        result = fit(profile, name="fitted")
        result.summary()
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        compare = pd.DataFrame({"true": preset.coefficients(), "fitted": result.model.coefficients()})
        compare["relative_error"] = compare["fitted"] / compare["true"] - 1
        print(compare.assign(true=compare["true"] * 1e6, fitted=compare["fitted"] * 1e6)
              .round({"true": 3, "fitted": 3, "relative_error": 2}).to_string())
    """),
    md("""
        Four coefficients come back within about 2 %, but $a_p$ is off by about 10 %: a prefill of
        4,096 tokens takes 30 times $a_p$, so 3 % noise on it is as large as $a_p$ itself, and the
        intercept is the least identified coefficient (more short prompts in the profile would help).
        $b_d$ and $c_d$ are told apart only because the grid varies the context at each batch size
        (exercise 3). Residuals show whether a linear model is adequate at all:
    """),
    code("""
        res = result.residuals
        fig = go.Figure([go.Scatter(x=part["time_s"] * 1e3, y=part["residual_s"] / part["time_s"] * 100,
                                    mode="markers", name=kind) for kind, part in res.groupby("kind")])
        fig.update_layout(title="Relative residuals of the fit", xaxis_title="measured time (ms)",
                          yaxis_title="residual (%)", template="plotly_white", height=340)
        fig
    """),
    md("""
        ## The shipped presets, and what they change

        Coefficients in milliseconds; `llama-65b` is derived, the others fitted to GPU profiles of
        Llama-2-70B at tensor-parallel degrees 2, 4, 8 on A100 and H100.
    """),
    code("""
        presets = pd.DataFrame({name: load_preset(name).coefficients() for name in list_presets()}).T * 1e3
        presets.round(4)
    """),
    md("""
        The same GSM8K instance under each preset: faster hardware shortens everything, but the
        *ratio* of fixed to per-token cost decides how much scheduling matters.
    """),
    code("""
        rows = []
        for name in list_presets():
            base = simulate(TRACE, CLIENTS, BATCH_SIZE, "paper-baseline", name)
            hybrid = simulate(TRACE, CLIENTS, BATCH_SIZE, "hybrid", name)
            rows.append({"preset": name, "baseline_makespan_s": base.makespan_s,
                         "hybrid_makespan_s": hybrid.makespan_s, "lower_bound_s": hybrid.metrics["lower_bound_s"],
                         "baseline_slot_utilization": base.metrics["slot_utilization"],
                         "hybrid_slot_utilization": hybrid.metrics["slot_utilization"]})
        pd.DataFrame(rows).set_index("preset").round(3)
    """),
    md("""
        ## Exercises

        1. **Faster memory.** Double the HBM bandwidth (`dataclasses.replace(A100_80GB_X8,
           hbm_bandwidth=...)`) and derive the model again. Which coefficients change, by how much,
           and why does $b_p$ barely move?
        2. **Where batching stops paying.** Using the preset, find the batch size at which a decode's
           per-request time is within 10 % of its limit $b_d + c_d\\,\\text{ctx}$ (take 300 context tokens).
        3. **Identifiability.** Refit using only decode rows with a single context length (say 512).
           What happens to $b_d$ and $c_d$, and why? What does it tell you about designing a profiling run?
        4. **Compute-bound prefill.** Using `roofline_table`, estimate the prompt length at which a
           prefill stage spends as long on per-token work as on its fixed part.

        Solutions: [`solutions/01-cost-model-solutions.ipynb`](solutions/01-cost-model-solutions.ipynb).

        ## Explore: the efficiencies behind the derivation

        The derivation's free parameters behind sliders; the table is `roofline_cost_model(**values)`
        converted to milliseconds, the function called above.
    """),
    code("""
        import ipywidgets as w

        from workbench.viz.widgets import FunctionPanel


        def coefficients_ms(**params):
            model = roofline_cost_model(LLAMA_65B, A100_80GB_X8, **params)
            return pd.DataFrame({"ms": model.coefficients()}).T.mul(1e3).assign(kv_capacity_tokens=model.kv_capacity_tokens)


        FunctionPanel(coefficients_ms, {
            "matmul_efficiency": w.FloatSlider(value=0.6, min=0.2, max=1.0, step=0.05, description="matmul η"),
            "bandwidth_efficiency": w.FloatSlider(value=0.8, min=0.3, max=1.0, step=0.05, description="HBM η"),
            "iteration_overhead_s": w.FloatSlider(value=1e-3, min=0.0, max=5e-3, step=5e-4, readout_format=".4f",
                                                  description="overhead (s)"),
        })
    """),
]

COST_MODEL_SOLUTIONS = [
    md("# Solutions to the exercises of 01 · The cost model"),
    code("""
        import dataclasses

        import numpy as np
        import pandas as pd

        from workbench.costmodel.linear import fit, load_preset
        from workbench.costmodel.roofline import A100_80GB_X8, LLAMA_65B, roofline_cost_model, roofline_table

        base = roofline_cost_model(LLAMA_65B, A100_80GB_X8)
    """),
    md("""
        **1.** Doubling the bandwidth halves everything that is a memory stream: the weight streaming in
        $a_p = a_d$ (9.95 of the 14.95 ms; the all-reduce latencies and overhead stay), the KV write in
        $b_p$, $b_d$ and all of $c_d$. $b_p$ and $b_d$ are dominated by matmul FLOPs, which do not change.
    """),
    code("""
        fast = roofline_cost_model(LLAMA_65B, dataclasses.replace(A100_80GB_X8, hbm_bandwidth=2 * A100_80GB_X8.hbm_bandwidth))
        pd.DataFrame({"A100": base.coefficients(), "2x bandwidth": fast.coefficients()}).assign(
            ratio=lambda t: t["2x bandwidth"] / t["A100"])
    """),
    md("""
        **2.** Per-request time is $a_d/|\\mathcal B| + b_d + c_d\\,\\text{ctx}$; it is within 10 % of the
        limit once $a_d/|\\mathcal B| \\le 0.1\\,(b_d + c_d\\,\\text{ctx})$.
    """),
    code("""
        cm = load_preset("llama-65b")
        limit = cm.b_d + cm.c_d * 300
        print(int(np.ceil(cm.a_d / (0.1 * limit))), "requests")
    """),
    md("""
        **3.** With one context length, $\\text{ctx}_r = 512\\,|\\mathcal B_r|$ exactly, so the batch-size
        column and the context column are proportional: only $b_d + 512\\,c_d$ is identified, and the
        non-negative least squares puts all of it on one of them. A profiling run must vary batch size
        and context independently (a full grid, as `workbench.costmodel.calibrate` does).
    """),
    code("""
        rng = np.random.default_rng(0)
        B = np.array([1, 2, 4, 8, 16, 32, 64, 128])
        prefill = pd.DataFrame({"kind": "prefill", "batch_size": 1, "tokens": [64, 256, 1024, 4096],
                                "time_s": cm.prefill_time(np.array([64, 256, 1024, 4096]))})
        decode = pd.DataFrame({"kind": "decode", "batch_size": B, "tokens": B * 512,
                               "time_s": cm.decode_time(B, B * 512) * rng.lognormal(0, 0.01, len(B))})
        bad = fit(pd.concat([prefill, decode], ignore_index=True)).model
        pd.DataFrame({"true": cm.coefficients(), "one context only": bad.coefficients()})
    """),
    md("""
        **4.** The fixed part is $a_p$; the per-token part is $b_p$ per prompt token, so the two are
        equal at $a_p / b_p$ tokens, about 140: prompts shorter than that are dominated by weight
        streaming, longer ones by compute.
    """),
    code("""
        print(round(cm.a_p / cm.b_p), "prompt tokens")
        roofline_table().loc[["t_weights", "t_flops_tok", "a_p", "b_p"], ["value", "unit"]]
    """),
]

# -------------------------------------------------------------------------------------------------
BIN_PACKING = [
    md("""
        # 02 · The offline stage: bin packing and the lower bound

        **The problem.** Before any request runs, decide which client serves it, so that the clients
        finish together. If a request's cost on a client did not depend on what else runs there, this
        would be the classic *minimizing-makespan bin packing* (or $P\\,||\\,C_{\\max}$) problem. It almost
        is: MODEL.md §3 shows that every schedule on a client costs a fixed work per request plus a
        price per prefill stage and per decode iteration. Spreading those prices over the batch gives
        each request an additive weight, and the bin packing over those weights is both the offline
        stage of the hybrid method and the source of a **proven lower bound** on any schedule's makespan.
    """),
    code("""
        # Parameters
        TRACE = "gsm8k-test"
        CLIENTS = 8
        BATCH_SIZE = 16
        COST_MODEL = "llama-65b"
        SMALL_REQUESTS, SMALL_CLIENTS, SMALL_SEED = 40, 6, 0     # the instance for the solver experiments
        TIME_LIMITS = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]             # seconds, for the gap-vs-time plot
    """),
    code("""
        import pandas as pd
        import plotly.graph_objects as go

        import workbench.policies.lagrangian  # noqa: F401  (registers the "hybrid" policy)
        from workbench.costmodel.linear import load_preset
        from workbench.viz.figures import comparison_table, gantt_compare
        from workbench.offline import (assign, bound_table, build_mmbp_model, lower_bound, mmbp_data, solve,
                                       solver_available)
        from workbench.engine.core import simulate
        from workbench.workload.trace import load_trace, sample_trace

        assert solver_available(), "HiGHS is needed: pip install highspy"
        trace = load_trace(TRACE)
        cost_model = load_preset(COST_MODEL)
    """),
    md("""
        ## From a schedule's cost to additive weights

        On one client with request set $S$ and batch capacity $B$, summing the cost model over every
        iteration of *any* schedule gives

        $$
        C(S) = \\sum_{i\\in S} v_i + a_p\\,N_\\text{prefill} + a_d\\,N_\\text{decode},
        \\qquad
        v_i = b_p l_i + b_d (o_i-1) + c_d\\Big[(o_i-1)\\,l_i + \\tfrac{(o_i-1)\\,o_i}{2}\\Big],
        $$

        because request $i$'s $d$-th decode reads $l_i + d$ context tokens whenever it happens. Only the
        counts of stages depend on the schedule, and they are bounded below:
        $N_\\text{prefill} \\ge \\lceil |S|/B \\rceil$ (at most $B$ admissions per prefill) and
        $N_\\text{decode} \\ge \\max\\big(\\lceil \\sum_{i\\in S}(o_i-1)/B \\rceil,\\ \\max_{i\\in S}(o_i-1)\\big)$.
        Dropping the ceilings spreads the per-stage prices over the requests:

        $$
        C(S) \\;\\ge\\; \\sum_{i\\in S} w_i,
        \\qquad
        w_i = v_i + \\frac{a_p}{B} + \\frac{a_d\\,(o_i-1)}{B}.
        $$

        ## Symbols

        | symbol | meaning | unit |
        |---|---|---|
        | $i \\in I$, $n = |I|$ | requests | |
        | $j \\in J$, $m = |J|$ | clients | |
        | $l_i$, $o_i$ | prompt and output length | tokens |
        | $B$ | batch capacity | requests |
        | $v_i$ | schedule-independent work of request $i$ | s |
        | $w_{ij}$ | additive weight of $i$ on client $j$ ($w_i$ for identical clients) | s |
        | $x_{ij} \\in \\{0,1\\}$ | request $i$ is served by client $j$ | |
        | $T$ | largest client load | s |

        ## The data: one weight per request
    """),
    code("""
        data = mmbp_data(trace, CLIENTS, BATCH_SIZE, cost_model)
        weights = trace.assign(v_s=cost_model.request_work_s(trace["input_tokens"], trace["output_tokens"]),
                               w_s=data.weights_s[:, 0])
        weights.sort_values("w_s", ascending=False).head()
    """),
    md("""
        ## The model

        $$
        \\begin{aligned}
        \\min\\; & T \\\\
        \\text{s.t.}\\; & \\textstyle\\sum_{j\\in J} x_{ij} = 1 && \\forall i \\in I \\quad\\text{(each request on one client)}\\\\
        & \\textstyle\\sum_{i\\in I} w_{ij}\\, x_{ij} \\le T && \\forall j \\in J \\quad\\text{(each client's load)}\\\\
        & \\textstyle\\sum_i w_{ij} x_{ij} \\ge \\sum_i w_{ij'} x_{ij'} && \\text{consecutive identical } j < j' \\quad\\text{(symmetry)}\\\\
        & x_{ij} \\in \\{0, 1\\}
        \\end{aligned}
        $$

        `build_mmbp_model(data)` builds it as a Pyomo `ConcreteModel` (it never solves);
        `solve(model, time_limit=..., rel_gap=...)` runs HiGHS and returns the status, the incumbent, the
        **proven** bound and the gap. On full GSM8K the model has $1{,}319 \\times 8$ binaries:
    """),
    code("""
        model = build_mmbp_model(data)
        print(f"{model.name}: {model.nvariables():,} variables, {model.nconstraints():,} constraints")
        result = solve(model, time_limit=2.0, rel_gap=1e-4)
        print(result.status, f"incumbent {result.incumbent:.4f} s, bound {result.bound:.4f} s, gap {result.gap:.2e}, "
              f"{result.time_s:.2f} s")
    """),
    md("""
        ## Heuristics against the MIP

        Bin packing is NP-hard, but it has excellent heuristics, and every result carries a proven bound
        (the average load $\\sum_i w_i/m$, the largest weight, and the *pair bound*: two of the $m+1$
        largest requests must share a client), so its gap is known without a solver:

        * **LPT** (longest processing time first): largest weights first, each to the least-loaded
          client; at most $4/3 - 1/(3m)$ times optimal (Graham, 1969).
        * **KK** (Karmarkar–Karp largest differencing, $m$-way): repeatedly merges the two partial
          partitions with the largest spread; much better than LPT with many small items.
        * **LS**: the better of the two, then moves and swaps out of the most loaded client.
        * **MIP**: the model above, warm-started from LS, under a time limit; **MIP-cold** is HiGHS alone.
    """),
    code("""
        methods = ["lpt", "kk", "ls", "mip", "mip-cold", "auto"]
        rows = []
        for method in methods:
            a = assign(trace, CLIENTS, BATCH_SIZE, cost_model, method=method, time_limit=2.0, rel_gap=1e-4)
            rows.append({"method": a.method, "status": a.status, "makespan_s": a.makespan_s,
                         "proven_bound_s": a.lower_bound_s, "gap": a.gap, "time_s": a.time_s})
        pd.DataFrame(rows).set_index("method")
    """),
    md("""
        On GSM8K the requests are many and small compared with a client's load, so KK and local search
        are within $10^{-6}$ of the bound in milliseconds and the MIP has nothing left to prove. A small
        instance shows the solver at work. Solver limits are two numbers a user sets: a **time limit**
        and a **relative gap** at which HiGHS stops. Here is the gap of the cold MIP against its time
        limit, beside the heuristics (times are wall-clock, so this plot varies a little from run to run):
    """),
    code("""
        small = sample_trace(trace, SMALL_REQUESTS, seed=SMALL_SEED)
        heuristics = {m: assign(small, SMALL_CLIENTS, BATCH_SIZE, cost_model, method=m) for m in ("lpt", "kk", "ls")}
        runs = []
        for limit in TIME_LIMITS:
            for method in ("mip-cold", "mip"):
                a = assign(small, SMALL_CLIENTS, BATCH_SIZE, cost_model, method=method, time_limit=limit, rel_gap=1e-6)
                runs.append({"method": method, "time_limit_s": limit, "gap": a.gap, "makespan_s": a.makespan_s,
                             "bound_s": a.lower_bound_s})
        runs = pd.DataFrame(runs)

        fig = go.Figure()
        for method, part in runs.groupby("method"):
            fig.add_trace(go.Scatter(x=part["time_limit_s"], y=part["gap"] * 100, mode="lines+markers",
                                     name=f"{method} (warm start)" if method == "mip" else method))
        span = [min(TIME_LIMITS), max(TIME_LIMITS)]
        for (name, a), dash in zip(heuristics.items(), ("dot", "dash", "dashdot")):
            fig.add_trace(go.Scatter(x=span, y=[a.gap * 100] * 2, mode="lines", name=f"{name} (heuristic)",
                                     line=dict(dash=dash, color="gray")))
        fig.update_layout(title=f"Proven gap vs time limit ({SMALL_REQUESTS} requests, {SMALL_CLIENTS} clients)",
                          xaxis=dict(title="time limit (s)", type="log"),
                          yaxis=dict(title="proven gap (%)", type="log", dtick=1),
                          template="plotly_white", height=380)
        fig
    """),
    md("""
        ## The lower bound, term by term

        Any schedule needs at least `LB_j(S_j)` on each client (the ceilings kept), so the makespan is at
        least the best assignment's largest `LB_j`, and at least any request served alone. Every
        term reported below is proven; the binding one is the bound.
    """),
    code("""
        bound = lower_bound(trace, CLIENTS, cost_model, batch_size=BATCH_SIZE)
        bound_table(bound)
    """),
    md("""
        ## From an assignment to a schedule

        The assignment fixes where each request runs; the simulator then runs each client's queue. With
        the baseline's FIFO continuous batching on top (policy `offline`) the clients finish closer
        together than with round-robin; the full hybrid method adds the online rule (notebook 04).
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        offline = assign(trace, CLIENTS, BATCH_SIZE, cost_model, method="kk")
        schedules = {
            "paper-baseline": simulate(trace, CLIENTS, BATCH_SIZE, "paper-baseline", cost_model),
            "offline": simulate(trace, CLIENTS, BATCH_SIZE, "offline", cost_model, assignment=offline.assignment),
            "hybrid": simulate(trace, CLIENTS, BATCH_SIZE, "hybrid", cost_model, assignment=offline.assignment),
        }
        print(comparison_table(schedules, base="paper-baseline").round(3).to_string())
    """),
    code("""
        gantt_compare(schedules)
    """),
    md("""
        ## Exercises

        1. **Graham's bound.** Build an instance where LPT is as bad as it can be on 2 clients: weights
           3, 3, 2, 2, 2 (use `workbench.offline.lpt` on a weight matrix). Compare with the optimum.
        2. **Why the pair bound?** On `SMALL_REQUESTS = 7`, `SMALL_CLIENTS = 6`, which bound term binds,
           and why is the average load useless there?
        3. **Warm starts.** In the gap-vs-time plot, the warm-started MIP starts at LS's gap. Why does its
           *bound* not improve either within 2 s? (Hint: compare the bound with the average load.)
        4. **Weights vs simulated time.** The offline assignment balances $\\sum w_i$ exactly, yet the
           simulated clients of `offline` do not finish together. Name the two effects the weights ignore.

        Solutions: [`solutions/02-offline-bin-packing-solutions.ipynb`](solutions/02-offline-bin-packing-solutions.ipynb).

        ## Explore: solver limits

        The cold MIP on the small instance, behind the two solver controls every interactive solve in
        the workbench uses. The table is `assign(...).summary()`, the call made above.
    """),
    code("""
        from workbench.viz.widgets import FunctionPanel, SolverControls

        limits = SolverControls(time_limit=0.5, rel_gap=1e-4, max_time_limit=10)
        FunctionPanel(lambda **kw: pd.DataFrame([assign(small, SMALL_CLIENTS, BATCH_SIZE, cost_model, method="mip-cold", **kw).summary()]),
                      {"time_limit": limits.time_limit, "rel_gap": limits.rel_gap})
    """),
]

BIN_PACKING_SOLUTIONS = [
    md("# Solutions to the exercises of 02 · The offline stage"),
    code("""
        import numpy as np
        import pandas as pd

        from workbench.offline import assign, heuristics
        from workbench.workload.trace import load_trace, sample_trace
    """),
    md("""
        **1.** LPT puts 3 and 3 on different clients, then 2, 2 and the last 2 on either: loads 7 and 5,
        makespan 7. The optimum is 6 (3+3 | 2+2+2): ratio 7/6 = 4/3 − 1/(3·2).
    """),
    code("""
        W = np.array([[3.0, 3.0], [3.0, 3.0], [2.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
        lpt = heuristics.lpt(W)
        print("LPT loads", heuristics.loads_s(W, lpt), "| optimum loads", heuristics.loads_s(W, np.array([0, 0, 1, 1, 1])))
    """),
    md("""
        **2.** With 7 requests on 6 clients, two requests must share a client: the pair bound (the two
        smallest of the 7 largest, together) binds, while the average load ($\\sum w/6$) is far below any
        client that holds two requests.
    """),
    code("""
        small = sample_trace(load_trace("gsm8k-test"), 7, seed=0)
        a = assign(small, 6, 16, "llama-65b", method="ls")
        print({k: round(v, 4) for k, v in a.bound_terms.items()}, "makespan", round(a.makespan_s, 4))
    """),
    md("""
        **3.** The LP relaxation of bin packing gives the average load $\\sum_i w_i/m$, and the best
        assignment is within a tiny fraction of it: HiGHS's branch and bound must *prove* that no
        assignment reaches the average exactly, which takes exponentially many nodes. The incumbent is
        near-optimal long before the bound can show it.

        **4.** (a) The ceilings: a client with 161 requests needs $\\lceil 161/16 \\rceil = 11$ prefills,
        not 10.06, and decode iterations come in whole numbers; (b) the drain: the last requests on a
        client decode in a half-empty batch, which the weights price at $a_d/B$ per slot but which costs
        a whole $a_d$ per iteration. The online rule and the queue order fight (b).
    """),
]

# -------------------------------------------------------------------------------------------------
EXACT = [
    md("""
        # 03 · The exact MIP: a teaching instance solved to optimality

        The hybrid method splits the problem in two (assign, then sequence) and solves each part well.
        How far from optimal is that? On a small instance we can find out: the **whole** problem,
        assignment and the iteration sequence of every client, is a mixed-integer program that HiGHS
        solves to proven optimality in seconds. Its optimal schedule is then the yardstick for every
        heuristic, drawn with the same Gantt function.
    """),
    code("""
        # Parameters
        CLIENTS = 2
        BATCH_SIZE = 2
        COST_MODEL = "llama-65b"
        TIME_LIMIT = 30.0        # seconds; HiGHS proves optimality in a few
    """),
    code("""
        import pandas as pd

        import workbench.policies.lagrangian  # noqa: F401  (registers the "online" and "hybrid" policies)
        from workbench.costmodel.linear import load_preset
        from workbench.errors import ConfigError
        from workbench.viz.figures import comparison_table, gantt, gantt_compare
        from workbench.offline import exact_size, replay_exact, solve_exact, solver_available
        from workbench.policies.registry import list_policies
        from workbench.engine.core import simulate

        assert solver_available(), "HiGHS is needed: pip install highspy"
        cost_model = load_preset(COST_MODEL)
    """),
    md("""
        ## The data

        Seven requests with short outputs, so that each client runs a dozen iterations we can see:
    """),
    code("""
        trace = pd.DataFrame({
            "request_id": ["r0", "r1", "r2", "r3", "r4", "r5", "r6"],
            "input_tokens": [120, 40, 300, 80, 60, 200, 30],
            "output_tokens": [6, 2, 3, 5, 2, 4, 3],
        })
        trace
    """),
    md("""
        ## Symbols

        | symbol | meaning |
        |---|---|
        | $i \\in I$, $j \\in J$ | requests, clients |
        | $k = 1..K$ | iteration positions on each client |
        | $l_i$, $o_i$ | prompt and output length (tokens) |
        | $B_j$ | batch capacity of client $j$ |
        | $v_i$ | schedule-independent work of $i$ (notebook 02), s |
        | $x_{ij}$ | request $i$ runs on client $j$ |
        | $p_{ijk}$ | $i$ is prefilled at position $k$ of client $j$ |
        | $d_{ijk}$ | $i$ decodes at position $k$ of client $j$ |
        | $f_{ijk}$ | $i$'s last token on $j$ came before position $k$ |
        | $\\pi_{jk}$, $\\delta_{jk}$ | position $k$ of client $j$ is a prefill, a decode |
        | $s_{ijk} = \\sum_{k'<k} p_{ijk'}$ | $i$ has started before $k$ |
        | $r_{ijk} = s_{ijk} - f_{ijk}$ | $i$ is running (holds a slot) at $k$ |

        ## The model

        $$
        \\begin{aligned}
        \\min\\; & T \\\\
        \\text{s.t.}\\; & \\textstyle\\sum_j x_{ij} = 1,\\quad \\sum_k p_{ijk} = x_{ij},\\quad \\sum_k d_{ijk} = (o_i-1)\\,x_{ij}
           && \\text{one client, one prefill, } o_i-1 \\text{ decodes}\\\\
        & p_{ijk} \\le \\pi_{jk},\\quad d_{ijk} \\le \\delta_{jk},\\quad \\pi_{jk} + \\delta_{jk} \\le 1
           && \\text{a position is one kind}\\\\
        & d_{ijk} \\le r_{ijk},\\quad d_{ijk} \\ge r_{ijk} + \\delta_{jk} - 1
           && \\text{a decode decodes every running request}\\\\
        & \\textstyle\\sum_i (p_{ijk} + r_{ijk}) \\le B_j
           && \\text{batch capacity}\\\\
        & f_{ijk} \\le s_{ijk},\\quad (o_i-1) f_{ijk} \\le \\textstyle\\sum_{k'<k} d_{ijk'} \\le o_i - 2 + f_{ijk}
           && \\text{finished exactly after its decodes}\\\\
        & \\pi_{jk} \\le \\textstyle\\sum_i (f_{ijk} - f_{ij,k-1})
           && \\text{prefill only after a completion}\\\\
        & T \\ge \\textstyle\\sum_i v_i x_{ij} + a_p \\sum_k \\pi_{jk} + a_d \\sum_k \\delta_{jk}
           && \\text{each client's time}
        \\end{aligned}
        $$

        The last line is exact, not an approximation: a request's $d$-th decode reads $l_i + d$ context
        tokens whichever iteration it falls in, so a client's time is its requests' fixed work plus
        $a_p$ per prefill and $a_d$ per decode (notebook 02). "Prefill only after a completion" loses no
        optimum (a prefill that follows an iteration in which nothing finished can be merged into, or
        moved before, that iteration at no cost) and makes the schedule replayable in the simulator.
        `docs/offline.md` lists every constraint as `build_exact_model` writes it.

        ## Solve
    """),
    code("""
        result = solve_exact(trace, CLIENTS, BATCH_SIZE, cost_model, time_limit=TIME_LIMIT)
        print(f"{result.status}: makespan {result.makespan_s * 1e3:.3f} ms, proven bound {result.bound_s * 1e3:.3f} ms, "
              f"gap {result.gap:.1e}; {result.size['binaries']} binaries, {result.size['constraints']} constraints")
    """),
    md("""
        ## The optimal schedule as a table

        The same schema as every simulated schedule: one row per iteration.
    """),
    code("""
        optimal = result.schedule
        optimal.timeline[["client", "iteration", "kind", "start_s", "end_s", "n_requests", "tokens", "request_ids"]]
    """),
    md("""
        Replayed in the simulator (each client's queue in the MIP's prefill order, admitting exactly
        when the MIP did), it gives the same makespan, a check that model and simulator agree:
    """),
    code("""
        replayed = replay_exact(result)
        print(f"MIP {optimal.makespan_s * 1e3:.6f} ms, simulator replay {replayed.makespan_s * 1e3:.6f} ms")
    """),
    code("""
        gantt(optimal, title=f"Optimal schedule: makespan {optimal.makespan_s * 1e3:.2f} ms")
    """),
    md("""
        ## Every heuristic beside the optimum

        Each registered policy on the same instance, then the table and the Gantt charts on one time axis.
        The `gap` column is against the MIP's proven bound, so it is each heuristic's true distance from
        optimal.
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        HEURISTICS = ["static", "continuous", "paper-baseline", "least-work", "offline", "online", "hybrid"]
        schedules = {"exact": optimal}
        for name in HEURISTICS:
            schedules[name] = simulate(trace, CLIENTS, BATCH_SIZE, name, cost_model)
        table = comparison_table(schedules, base="paper-baseline")
        table["makespan_ms"] = table["makespan_s"] * 1e3
        print((table[["makespan_ms", "gap", "slot_utilization", "gap_closed"]].round(4) + 0.0).to_string())
    """),
    md("""
        The table above is the policies of MODEL.md §7 and the paper's method (its output is checked in
        CI, so it lists them by name). Every policy registered in this session, including any you add,
        ranked by makespan:
    """),
    code("""
        everything = {"exact": optimal, **{name: simulate(trace, CLIENTS, BATCH_SIZE, name, cost_model)
                                           for name in list_policies()}}
        (comparison_table(everything)[["makespan_s", "gap", "slot_utilization"]]
         .assign(makespan_ms=lambda t: t["makespan_s"] * 1e3).sort_values("makespan_ms").round(4))
    """),
    code("""
        gantt_compare({name: schedules[name] for name in ("exact", "hybrid", "offline", "paper-baseline", "static")})
    """),
    md("""
        ## Where exact stops being practical

        The model has about $nm + mK(3n+2)$ binaries, and $K$ grows with the total output length. The
        workbench refuses instances beyond 12 requests or about 12,000 binaries before building
        anything, and says what to do instead:
    """),
    code("""
        sizes = pd.DataFrame([{"requests": n, "clients": m, "positions": K, **exact_size(n, m, K)}
                              for n, m, K in [(7, 2, 11), (12, 2, 20), (12, 4, 40), (50, 4, 400), (1319, 8, 4000)]])
        sizes
    """),
    code("""
        from workbench.workload.trace import load_trace

        try:
            solve_exact(load_trace("gsm8k-test").head(40), 4, 16, cost_model)
        except ConfigError as exc:
            print("error:", exc)
    """),
    md("""
        ## Exercises

        1. **Batch capacity.** Re-solve with `BATCH_SIZE = 3`. Does the optimal makespan fall? By how
           much does the hybrid method's gap change?
        2. **Read the optimal Gantt chart.** On which client does the optimum delay a prefill that
           continuous batching would have run at once, and why does that pay?
        3. **One client.** With `CLIENTS = 1` only the sequence matters. Which heuristic is optimal then?
        4. **Time limits.** Solve with `time_limit=0.5`. What does `result.status` say, and what does the
           reported gap guarantee?

        Solutions: [`solutions/03-exact-mip-solutions.ipynb`](solutions/03-exact-mip-solutions.ipynb).

        ## Explore: how many requests can exact handle?

        The first $n$ requests of the teaching instance, solved exactly under the solver limits, beside
        the hybrid method and the baseline. Each change re-solves (a few seconds at most).
    """),
    code("""
        import ipywidgets as w

        from workbench.viz.widgets import FunctionPanel, SolverControls


        def exact_vs_heuristics(n, time_limit, rel_gap):
            part = trace.head(n)
            r = solve_exact(part, CLIENTS, BATCH_SIZE, cost_model, time_limit=time_limit, rel_gap=rel_gap)
            ss = {f"exact ({r.status})": r.schedule,
                  **{p: simulate(part, CLIENTS, BATCH_SIZE, p, cost_model) for p in ("hybrid", "paper-baseline")}}
            return comparison_table(ss)


        limits = SolverControls(time_limit=10, rel_gap=1e-4)
        FunctionPanel(exact_vs_heuristics, {"n": w.IntSlider(value=5, min=2, max=len(trace), description="requests"),
                                            "time_limit": limits.time_limit, "rel_gap": limits.rel_gap})
    """),
]

EXACT_SOLUTIONS = [
    md("# Solutions to the exercises of 03 · The exact MIP"),
    code("""
        import pandas as pd

        import workbench.policies.lagrangian  # noqa: F401
        from workbench.offline import solve_exact
        from workbench.engine.core import simulate

        trace = pd.DataFrame({"request_id": ["r0", "r1", "r2", "r3", "r4", "r5", "r6"],
                              "input_tokens": [120, 40, 300, 80, 60, 200, 30],
                              "output_tokens": [6, 2, 3, 5, 2, 4, 3]})
    """),
    md("""
        **1.** More slots per client mean fewer prefill stages and decode iterations; the optimum falls,
        and with fewer decisions to get wrong the heuristics' gaps usually shrink too.
    """),
    code("""
        for B in (2, 3):
            r = solve_exact(trace, 2, B, "llama-65b", time_limit=30)
            h = simulate(trace, 2, B, "hybrid", "llama-65b")
            print(f"B = {B}: optimal {r.makespan_s * 1e3:.2f} ms ({r.status}), hybrid {h.makespan_s * 1e3:.2f} ms, "
                  f"hybrid gap {h.makespan_s / r.makespan_s - 1:.2%}")
    """),
    md("""
        **2.** Look for a client whose decode bar runs half-empty (paler) while a request still waits:
        the optimum keeps decoding until a second request finishes, then prefills both waiting requests
        in one stage, paying $a_p$ once instead of twice. That is exactly the trade-off the Lagrangian
        rule prices (notebook 04).

        **3.** With one client there is no assignment; what is left is the order and when to prefill.
        On the first five requests (one client needs twice the positions, so the full instance takes
        longer to solve):
    """),
    code("""
        five = trace.head(5)
        r = solve_exact(five, 1, 2, "llama-65b", time_limit=30)
        print(f"optimal {r.makespan_s * 1e3:.3f} ms ({r.status})")
        for p in ("static", "continuous", "online", "hybrid"):
            print(f"{p:12s} {simulate(five, 1, 2, p, 'llama-65b').makespan_s * 1e3:.3f} ms")
    """),
    md("""
        **4.** With a short limit HiGHS may stop with `status='time_limit'`: the schedule is feasible (an
        incumbent), and the reported `gap` is proven, so the optimum is at most that much better. With
        the warm start from the best simulated policy there is always an incumbent.
    """),
    code("""
        r = solve_exact(trace, 2, 2, "llama-65b", time_limit=0.5)
        print(r.status, f"{r.makespan_s * 1e3:.3f} ms, bound {r.bound_s * 1e3:.3f} ms, gap {r.gap:.2%}")
    """),
]

# -------------------------------------------------------------------------------------------------
REPRODUCE = [
    md("""
        # 05 · Reproducing the paper

        Pang, Li, She and Wang (2025) report, for GSM8K through LLaMA-65B: hardware utilization
        **80.2 % → 89.1 %**, total inference time **201.00 s → 190.58 s** against a lower bound of about
        **180 s**, i.e. **52.4 %** of the gap to the bound closed; and over **100 random cases** a mean
        utilization gain of **8.0 %**. This notebook runs the same experiments with
        `workbench.studies.experiments` (the code behind `workbench reproduce`) and puts the paper's numbers
        beside ours.

        **What is and is not comparable.** The paper's cost model, hardware measurements and exact
        baseline are not public. We use the first-principles LLaMA-65B cost model (notebook 01) and our
        stated baseline (`paper-baseline`: round-robin, FIFO, continuous batching). Absolute times
        therefore differ (our model is faster than their hardware); the comparison is on the same
        *kind* of measurement: utilization, gap to a proven bound, and gap closed. Every assumption is
        printed with the results.
    """),
    code("""
        # Parameters
        SCENARIO = "paper-gsm8k"
        N_CASES = 100
        CASE_SEED = 20250221
        WORKERS = 0          # 0 = in-process; `workbench reproduce` runs the cases on Dask
    """),
    code("""
        import pandas as pd
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from workbench.studies import experiments as ex
        from workbench.viz.figures import gantt_compare
    """),
    md("""
        ## The scenario, every assumption stated
    """),
    code("""
        scenario = ex.SCENARIOS[SCENARIO]
        pd.Series(scenario.describe(), name="value").to_frame()
    """),
    md("""
        ## The headline table

        Baseline, offline stage only, online stage only, the hybrid method and the lower bound, with the
        paper's figures in the `paper_*` columns.
    """),
    code("""
        head = ex.headline(scenario)
        table = head["table"]
        print("lower bound:", head["lower_bound"]["source"], "binding term:", head["lower_bound"]["binding"])
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        columns = ["makespan_s", "slot_utilization", "gap", "gap_closed", "paper_makespan_s", "paper_utilization",
                   "paper_gap_closed"]
        print(table[columns].round(3).to_string())
    """),
    md("""
        ## The paper's figures beside ours

        Absolute times are not comparable, so each panel puts a dimensionless quantity side by side:
        utilization, makespan relative to the lower bound, and the share of the baseline's gap closed.
    """),
    code("""
        paper = ex.PAPER
        ours_base, ours_hyb = table.loc["paper-baseline"], table.loc["hybrid"]
        ours_lb = table.loc["lower bound", "makespan_s"]
        panels = {
            "slot utilization": ([paper["baseline_utilization"], paper["hybrid_utilization"]],
                                 [ours_base["slot_utilization"], ours_hyb["slot_utilization"]]),
            "makespan / lower bound": ([paper["baseline_makespan_s"] / paper["lower_bound_s"],
                                        paper["hybrid_makespan_s"] / paper["lower_bound_s"]],
                                       [ours_base["makespan_s"] / ours_lb, ours_hyb["makespan_s"] / ours_lb]),
            "gap closed": ([0.0, paper["gap_closed"]], [0.0, ours_hyb["gap_closed"]]),
        }
        fig = make_subplots(rows=1, cols=3, subplot_titles=list(panels))
        for col, (title, (theirs, ours)) in enumerate(panels.items(), start=1):
            for name, values, color in (("paper", theirs, "#999999"), ("workbench", ours, "#2E86AB")):
                fig.add_trace(go.Bar(x=["baseline", "hybrid"], y=values, name=name, marker_color=color,
                                     text=[f"{v:.3f}" for v in values], textposition="outside",
                                     showlegend=col == 1, legendgroup=name), row=1, col=col)
        fig.update_layout(barmode="group", template="plotly_white", height=380,
                          title="GSM8K on LLaMA-65B: the paper's figures and ours")
        fig
    """),
    md("""
        Our hybrid method closes more of the gap than the paper's. Two reasons we can name: the paper's
        baseline is not public and ours may be weaker, and our lower bound (the bin-packing bound with
        ceilings kept) is tighter relative to the achievable makespan than the paper's "about 180 s".

        ## Per-client timelines: baseline vs hybrid
    """),
    code("""
        gantt_compare({name: head["schedules"][name] for name in ("paper-baseline", "hybrid")})
    """),
    md("""
        ## The 100-case study

        Each case draws a source trace, a client count, a batch size and a request subset from its own
        child of `SeedSequence(CASE_SEED)`, so a case is fully determined by its seed. The offline stage
        uses the deterministic KK heuristic, so results do not depend on machine load.
    """),
    code("""
        study = ex.case_study(N_CASES, seed=CASE_SEED, workers=WORKERS, progress=False)
        cases = study["cases"]
        cases.head()
    """),
    code("""
        # NBVAL_CHECK_OUTPUT
        summary = study["summary"]
        for key in ("cases", "share_won", "utilization_gain_mean", "utilization_gain_median", "utilization_gain_min",
                    "gap_closed_mean", "speedup_mean"):
            value = summary[key]
            print(f"{key:26s} {value:.4f}" if isinstance(value, float) else f"{key:26s} {value}")
        print(f"{'paper: mean gain':26s} {ex.PAPER['case_study_mean_improvement']:.4f}")
    """),
    code("""
        per_case, distribution = ex.case_figures(cases)
        per_case
    """),
    code("""
        distribution
    """),
    md("""
        The case that gains least, and why:
    """),
    code("""
        print(summary["worst_case_explanation"])
    """),
    md("""
        ## The $\\mu$ sweep

        The Lagrangian rule's price scale runs from static batching ($\\mu = 0$) to continuous batching
        ($\\mu = \\infty$); notebook 04 derives it. Here is the hybrid method's utilization and gap closed
        across $\\mu$ on the headline scenario, for each look-ahead:
    """),
    code("""
        sweep = ex.mu_sweep(scenario, assignment=head["assignment"], lower_bound_s=head["lower_bound"]["value_s"],
                            base_makespan_s=table.loc["paper-baseline", "makespan_s"])
        ex.mu_sweep_figure(sweep)
    """),
    md("""
        ## Exercises

        1. **A weaker baseline?** Replace the baseline by `static` batching in a copy of the scenario
           (`dataclasses.replace(scenario, base_policy="static", policies=("static", "hybrid"))`). How
           much of *that* gap does the hybrid method close?
        2. **Batch size.** Re-run the headline with `batch_size=32`. Does the hybrid method's advantage
           grow or shrink, and which part of the table tells you why?
        3. **Small cases.** In the case study, plot `utilization_gain` against `requests_per_slot`. Below
           which load does the method stop helping, and what does `explain_case` say about those cases?

        Solutions: [`solutions/05-reproduce-paper-solutions.ipynb`](solutions/05-reproduce-paper-solutions.ipynb).
    """),
]

REPRODUCE_SOLUTIONS = [
    md("# Solutions to the exercises of 05 · Reproducing the paper"),
    code("""
        import dataclasses

        import plotly.express as px

        from workbench.studies import experiments as ex

        scenario = ex.SCENARIOS["paper-gsm8k"]
    """),
    md("""
        **1.** Static batching wastes far more slot time, so the same hybrid schedule closes a larger
        share of a larger gap: how impressive a "gap closed" looks depends on the baseline.
    """),
    code("""
        weak = dataclasses.replace(scenario, base_policy="static", policies=("static", "hybrid"))
        print(ex.headline(weak)["table"][["makespan_s", "slot_utilization", "gap", "gap_closed"]].round(3).to_string())
    """),
    md("""
        **2.** With $B = 32$ each client holds twice the requests at once; the baseline's refill
        prefills are more frequent and its drain longer, and the `prefills` column shows how many
        prefill stages the online rule saves.
    """),
    code("""
        big = dataclasses.replace(scenario, batch_size=32)
        print(ex.headline(big)["table"][["makespan_s", "slot_utilization", "gap_closed", "prefills"]].round(3).to_string())
    """),
    md("""
        **3.** Below about one request per batch slot every request is admitted in the first prefill and
        there is nothing to schedule; the gain vanishes.
    """),
    code("""
        cases = ex.case_study(30, workers=0, progress=False)["cases"]
        fig = px.scatter(cases, x="requests_per_slot", y="utilization_gain", color="batch_size", log_x=True,
                         template="plotly_white", title="Gain vs load (30 cases)")
        print(ex.explain_case(cases.loc[cases["utilization_gain"].idxmin()]))
        fig
    """),
]

NOTEBOOKS: dict[str, tuple[str, list]] = {
    "src/workbench/viz/dashboard.ipynb": ("dashboard", DASHBOARD),
    "notebooks/00-tour.ipynb": ("tour", TOUR),
    "notebooks/solutions/00-tour-solutions.ipynb": ("tour-sol", TOUR_SOLUTIONS),
    "notebooks/01-cost-model.ipynb": ("cost", COST_MODEL_NB),
    "notebooks/solutions/01-cost-model-solutions.ipynb": ("cost-sol", COST_MODEL_SOLUTIONS),
    "notebooks/02-offline-bin-packing.ipynb": ("binpack", BIN_PACKING),
    "notebooks/solutions/02-offline-bin-packing-solutions.ipynb": ("binpack-sol", BIN_PACKING_SOLUTIONS),
    "notebooks/03-exact-mip.ipynb": ("exact", EXACT),
    "notebooks/solutions/03-exact-mip-solutions.ipynb": ("exact-sol", EXACT_SOLUTIONS),
    "notebooks/05-reproduce-paper.ipynb": ("reproduce", REPRODUCE),
    "notebooks/solutions/05-reproduce-paper-solutions.ipynb": ("reproduce-sol", REPRODUCE_SOLUTIONS),
}


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK)


def execute_checked_outputs(nb: nbformat.NotebookNode, path: Path, timeout_s: int = 120) -> None:
    """Run ``nb`` and keep the outputs of the ``# NBVAL_CHECK_OUTPUT`` cells only.

    nbval compares a cell only when the stored cell was run (has an execution
    count), so those cells store their text output and execution count 1;
    every other cell is stored without outputs.  Runs in a temporary folder.
    """
    import tempfile

    from nbclient import NotebookClient

    run = nbformat.from_dict(nbformat.v4.upgrade(nbformat.from_dict(dict(nb))))
    with tempfile.TemporaryDirectory(prefix="make-notebooks-") as tmp:
        NotebookClient(run, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
    for cell, ran in zip(nb.cells, run.cells):
        if checked(cell):
            outputs = [o for o in ran.outputs if o.output_type in ("stream", "execute_result")]
            for o in outputs:
                if o.output_type == "execute_result":
                    o.execution_count = 1
                    o.data = {k: v for k, v in o.data.items() if k == "text/plain"}
            cell.outputs = outputs
            cell.execution_count = 1


def strip_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    out = nbformat.from_dict(dict(nb))
    for cell in out.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return out


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed notebook's cells differ from this script's (outputs ignored)")
    parser.add_argument("only", nargs="*", help="write only these paths")
    args = parser.parse_args(argv)
    stale = []
    for rel, (slug, cells) in NOTEBOOKS.items():
        if args.only and rel not in args.only:
            continue
        path = ROOT / rel
        nb = notebook(slug, cells)
        if args.check:
            if not path.is_file() or render(strip_outputs(nbformat.read(path, as_version=4))) != render(nb):
                stale.append(rel)
            continue
        if any(checked(c) for c in nb.cells):
            execute_checked_outputs(nb, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(nb), encoding="utf-8")
        print(f"wrote {rel}")
    if stale:
        print("out of date (run python scripts/make_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
