"""Write the cost-model presets shipped in data/presets/.

    python scripts/make_presets.py                       # all presets
    python scripts/make_presets.py --only roofline       # llama-65b.json only
    python scripts/make_presets.py --profiling-dir DIR   # where the Vidur profiles are

* ``llama-65b.json``: LLaMA-65B on 8 x A100-SXM4-80GB, derived from first
  principles (workbench.costmodel.roofline); needs no data.
* ``llama31-8b-rtxpro6000-tp{1,2}.json`` (kind "profiled") and ``...-linear.json``:
  Llama-3.1-8B on RTX PRO 6000 from the vLLM 0.19 kernel profile of
  LLMServingSim (workbench.costmodel.calibrate.fit_profile); needs
  ``../shared/data/llmservingsim/profiles/RTXPRO6000/Llama-3.1-8B``.
* ``llama2-70b-{a100,h100}-tp{2,4,8}.json``: Llama-2-70B fitted to the Vidur
  operator profiles (workbench.costmodel.calibrate); needs the vidur-profiling folder,
  by default ``../shared/data/vidur-profiling`` beside the repository.  The
  profiles themselves are never copied into the repository.

Re-runnable: the same inputs give byte-identical files (no timestamps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    import workbench  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(REPO_ROOT / "src"))

from workbench.costmodel.calibrate import PRESET_SLUGS, available_tp, fit_vidur_preset  # noqa: E402
from workbench.costmodel.linear import save_preset  # noqa: E402
from workbench.costmodel.roofline import A100_80GB_X8, LLAMA_65B, roofline_cost_model, roofline_table  # noqa: E402

DEFAULT_PROFILING_DIR = REPO_ROOT.parent / "shared" / "data" / "vidur-profiling"
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "presets"
DEFAULT_OPERATOR_PROFILE = REPO_ROOT.parent / "shared" / "data" / "llmservingsim" / "profiles" / "RTXPRO6000" / \
    "Llama-3.1-8B"
#: The link between the RTX PRO 6000 GPUs as LLMServingSim's cluster configuration of that server declares it
#: (link_bw GB/s, link_latency ns): what the TP > 1 presets price their all-reduces over.
DEFAULT_CLUSTER_CONFIG = REPO_ROOT.parent / "shared" / "data" / "llmservingsim" / "runs" / "RTXPRO6000" / \
    "Llama-3.1-8B" / "config.json"
OPERATOR_PROFILE_MODEL = "meta-llama/Llama-3.1-8B"
OPERATOR_PROFILE_TP = (1, 2)
SCRIPT = "scripts/make_presets.py"

VIDUR_MODEL = "meta-llama/Llama-2-70b-hf"
VIDUR_DEVICES = ("a100", "h100")
VIDUR_TP = (2, 4, 8)


def roofline_preset(out_dir: Path = DEFAULT_OUT_DIR) -> Path:
    """Write ``llama-65b.json``: LLaMA-65B on 8 x A100 80GB from first principles."""
    table = roofline_table(LLAMA_65B, A100_80GB_X8)
    model = roofline_cost_model(LLAMA_65B, A100_80GB_X8, name="llama-65b")
    provenance = dict(model.provenance)
    provenance["function"] = "workbench.costmodel.roofline.roofline_cost_model"
    provenance["script"] = SCRIPT
    provenance["derivation"] = [
        {"symbol": symbol, "quantity": row.quantity, "value": row.value, "unit": row.unit, "how": row.how}
        for symbol, row in table.iterrows()]
    model = type(model)(**model.coefficients(), name="llama-65b",
                        description=("LLaMA-65B on 8 x A100-SXM4-80GB with tensor parallelism (the paper's setting), "
                                     "derived from first principles: datasheet peaks times stated efficiencies. "
                                     "See docs/cost-model.md."),
                        kv_capacity_tokens=model.kv_capacity_tokens, provenance=provenance)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_preset(model, out_dir / "llama-65b.json")


def vidur_presets(profiling_dir: Path = DEFAULT_PROFILING_DIR, out_dir: Path = DEFAULT_OUT_DIR,
                  devices: tuple[str, ...] = VIDUR_DEVICES, tps: tuple[int, ...] = VIDUR_TP,
                  ) -> tuple[list[Path], list[str]]:
    """Fit and write ``llama2-70b-<device>-tp<N>.json`` for every combination the profiles hold.

    Returns the files written and the names of the combinations the data lacks.
    """
    written, missing = [], []
    out_dir.mkdir(parents=True, exist_ok=True)
    for device in devices:
        have = set(available_tp(profiling_dir, device, VIDUR_MODEL))
        for tp in tps:
            name = f"{PRESET_SLUGS[VIDUR_MODEL]}-{device}-tp{tp}"
            if tp not in have:
                missing.append(name)
                continue
            result = fit_vidur_preset(profiling_dir, device, tp, VIDUR_MODEL, name=name)
            written.append(save_preset(result.model, out_dir / f"{name}.json", fit=result.fit_info()))
            written.append(write_fit_profile(result, out_dir / "profiles" / f"{name}.csv"))
    return written, missing


def profiled_presets(profile_dir: Path = DEFAULT_OPERATOR_PROFILE, out_dir: Path = DEFAULT_OUT_DIR,
                     model: str = OPERATOR_PROFILE_MODEL, tps: tuple[int, ...] = OPERATOR_PROFILE_TP) -> list[Path]:
    """Write the profiled preset and its linear fit for every degree, from an operator-profile folder."""
    from workbench.costmodel.calibrate import PCIE5_X16, ProfileSettings, cluster_link, fit_profile, read_cluster_config

    from workbench.costmodel.profiled import preset_json

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    link = PCIE5_X16
    if DEFAULT_CLUSTER_CONFIG.is_file():
        link = cluster_link(read_cluster_config(DEFAULT_CLUSTER_CONFIG))
        link = type(link)(**{**link.__dict__, "source": "LLMServingSim's cluster configuration of the server "
                                                       "(bench/examples/RTXPRO6000/Llama-3.1-8B/config.json)"})
    else:
        print(f"WARNING: {DEFAULT_CLUSTER_CONFIG} is absent: the TP > 1 presets price their all-reduces over an "
              "assumed PCIe 5.0 x16 link.", file=sys.stderr)
    for tp in tps:
        cost_model, report = fit_profile(profile_dir, model, tp=tp, settings=ProfileSettings(link=link))
        data = cost_model.to_dict()
        data["provenance"] = {**data["provenance"], "source": {
            **data["provenance"]["source"], "commit": "5daddb21a545658d5150b535712d0494584b5278",
            "path": "profiler/perf/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16/"}}
        data["fit"] = {"terms": report["terms"], "linear": report["linear"], "bound": report["bound"],
                       "iteration_times_ms": report["sanity_ms"]}
        path = out_dir / f"{cost_model.name}.json"
        path.write_text(preset_json(data), encoding="utf-8")
        written.append(path)
        linear = report["linear_model"]
        written.append(save_preset(linear, out_dir / f"{linear.name}.json"))
    return written


def write_fit_profile(result, path: Path) -> Path:
    """The derived per-iteration profile a preset was fitted to, with the fit's prediction.

    Derived figures only (per-layer measurements times layers, plus collectives and the
    first-principles attention term), rounded to 0.1 microsecond so re-runs are byte-identical;
    the notebooks plot fit against data from these files without the raw profiles.
    """
    columns = ["kind", "batch_size", "tokens", "num_tokens", "context_per_request", "fits_kv_cache", "heldout",
               "layers_s", "all_reduce_s", "attention_s", "time_s", "predicted_s"]
    path.parent.mkdir(parents=True, exist_ok=True)
    result.rows[columns].to_csv(path, index=False, float_format="%.7f", lineterminator="\n")
    return path


def _report(path: Path) -> str:
    from workbench.costmodel.linear import load_preset

    m = load_preset(path)
    if not m.coefficients():
        t = m.iteration_time(100, 100_000) * 1e3
        return f"{path.name}: profiled tables (decode of 100 x 1,000 tokens: {t:.2f} ms), " \
               f"kv_capacity_tokens={m.kv_capacity_tokens}"
    coef = ", ".join(f"{k}={v * 1e3:.4g} ms" for k, v in m.coefficients().items())
    return f"{path.name}: {coef}, kv_capacity_tokens={m.kv_capacity_tokens}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiling-dir", type=Path, default=DEFAULT_PROFILING_DIR,
                        help="the vidur-profiling folder (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write (default: %(default)s)")
    parser.add_argument("--operator-profile", type=Path, default=DEFAULT_OPERATOR_PROFILE,
                        help="the LLMServingSim profile folder of Llama-3.1-8B (default: %(default)s)")
    parser.add_argument("--only", choices=("all", "roofline", "vidur", "profiled"), default="all")
    args = parser.parse_args(argv)

    if args.only in ("all", "roofline"):
        print(_report(roofline_preset(args.out_dir)))
    if args.only in ("all", "profiled"):
        if not args.operator_profile.is_dir():
            print(f"profiled presets skipped: '{args.operator_profile}' does not exist (give --operator-profile).",
                  file=sys.stderr)
            return 2
        for path in profiled_presets(args.operator_profile, args.out_dir):
            print(_report(path))
    if args.only in ("all", "vidur"):
        if not args.profiling_dir.is_dir():
            print(f"vidur presets skipped: '{args.profiling_dir}' does not exist (give --profiling-dir).",
                  file=sys.stderr)
            return 2
        written, missing = vidur_presets(args.profiling_dir, args.out_dir)
        for path in written:
            print(_report(path) if path.suffix == ".json" else f"{path}: derived profile for the notebooks")
        if missing:
            print("not in the profiles, so not written: " + ", ".join(missing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
