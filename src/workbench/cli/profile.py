"""``workbench profile``: measure one model shape's operator times on this machine's GPU (or CPU).

Needs the optional extra ``profile`` (PyTorch and transformers).  Everything
is checked before the run -- the model shape, the device, that the model fits
the device's memory, the output folder -- and nothing is written on a refusal
or an interruption.
"""

from __future__ import annotations

import time


def cmd_profile(args) -> int:
    from workbench.costmodel import profile as prof

    shape = prof.resolve_shape(args.model, args.config)
    info = prof.device_info(args.device)
    plan = prof.make_plan(shape, args.tp, args.dtype or prof.default_dtype(info.kind), info, args.grid, args.seed,
                          args.threads, args.kernels, args.timing)
    out = prof.check_output(args.out, plan, force=args.force)
    for line in prof.describe_plan(plan):
        print(line)
    profiler = prof.Profiler(plan)
    estimate = profiler.estimate_seconds()
    print(f"estimated run time: ~{_duration(estimate)} (a pilot timed {min(prof.Profiler.PILOT_POINTS, plan.measurements)}"
          f" grid points once; setting up the model took {_duration(profiler.setup_s)})")
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    t0 = time.perf_counter()
    tables = profiler.run(progress=not args.no_progress)
    wall = time.perf_counter() - t0
    prof.write_profile(out, plan, tables, prof.profile_meta(plan, wall, estimate, profiler.timer.eager))
    if profiler.timer.eager:
        print(f"timed without a CUDA graph (capture failed): {', '.join(sorted(profiler.timer.eager))}")
    print(f"measured {plan.measurements} points in {_duration(wall)}; wrote {out / f'tp{plan.tp}'} and "
          f"{out / 'meta.yaml'}")
    print(f"next: workbench calibrate on {out} (one decoder layer profiled; the model has "
          f"{shape.num_hidden_layers} layers)")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def register(subparsers) -> None:
    from workbench.costmodel.profile import DEVICES, DTYPE_BYTES, GRIDS, KERNELS

    p = subparsers.add_parser("profile", help="measure a model shape's operator times on this GPU (extra: profile)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True,
                   help="a model of data/models/shapes.json (e.g. meta-llama/Llama-3.1-8B), or a config.json path")
    p.add_argument("--config", default=None, help="the model's config.json (or its folder); --model names it")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree: one rank's shard shapes are profiled")
    p.add_argument("--out", required=True, help="the profile folder (gets tp<N>/ and meta.yaml)")
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="cuda (the default; refused when there is no GPU) or cpu")
    p.add_argument("--grid", choices=tuple(GRIDS), default="default", help="small: a quick look; default: the full grid")
    p.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default=None,
                   help="weights and activations (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--kernels", choices=KERNELS, default=None,
                   help="compiled: norm, rotary and activation fused by torch.compile, one kernel each as in vLLM "
                        "(default on cuda); eager: unfused (default on cpu)")
    p.add_argument("--timing", choices=("graphs", "events", "wall"), default=None,
                   help="cuda: graphs (each operator replayed as a CUDA graph: kernel time without launch gaps; "
                        "the default) or events (called between CUDA events); cpu: wall")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (--device cpu only; 1 gives steady times on a shared machine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--force", action="store_true", help="replace an existing tp<N>/ in --out")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimated run time only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_profile)
