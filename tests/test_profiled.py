"""Calibration from operator profiles (costmodel.calibrate.fit_profile) and the ProfiledCostModel it makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.cli import main
from workbench.costmodel.calibrate import DECODER_LAYER_OPERATORS, PCIE5_X16, fit_profile
from workbench.costmodel.linear import LinearCostModel, list_presets, load_preset, presets_dir
from workbench.costmodel.profiled import LinearOnlyError, ProfiledCostModel
from workbench.costmodel.shapes import known_models, model_shape
from workbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHARED_PROFILE = REPO.parent / "shared" / "data" / "llmservingsim" / "profiles" / "RTXPRO6000" / "Llama-3.1-8B"
needs_profile = pytest.mark.skipif(not SHARED_PROFILE.is_dir(), reason="../shared/data/llmservingsim is absent")

TOKENS = [1, 2, 4, 8, 16, 32, 64, 128]
SEQUENCES = [1, 2, 4, 8, 16]
#: per-operator time_us = base + slope * tokens
DENSE_OPS = {"layernorm": (1.0, 0.01), "qkv_proj": (10.0, 0.2), "rotary_emb": (1.0, 0.01), "o_proj": (5.0, 0.1),
             "gate_up_proj": (20.0, 0.4), "act_fn": (1.0, 0.02), "down_proj": (10.0, 0.2),
             "embedding": (2.0, 0.001), "final_layernorm": (1.0, 0.01)}
SEQ_OPS = {"lm_head": (100.0, 1.0), "sampler": (10.0, 0.5)}


def attention_us(pc, kp, nd, kd):
    """Multilinear on every axis, so interpolation on the grid is exact."""
    return 5.0 + 0.1 * pc + 0.01 * kp + 0.001 * pc * kp + nd * (0.5 + 0.02 * kd) + 0.0001 * pc * nd * kd


def write_profile(root: Path, *, model: str = "acme/tiny", tps=(1,), skip: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.yaml").write_text(
        f"model: {model}\nvllm_version: 0.19.0\ngpu: Test GPU\nhardware: TESTGPU\ntp_degrees: {list(tps)}\n"
        "engine_effective:\n  block_size: 16\n  hf_overrides:\n    num_hidden_layers: 1\n"
        "skew_fit:\n  per_tp:\n    1:\n      alpha_default: 0.05\n", encoding="utf-8")
    for tp in tps:
        d = root / f"tp{tp}"
        d.mkdir(exist_ok=True)
        rows = [(op, t, b + k * t) for op, (b, k) in DENSE_OPS.items() for t in TOKENS]
        pd.DataFrame(rows, columns=["layer", "tokens", "time_us"]).to_csv(d / "dense.csv", index=False)
        rows = [(op, s, b + k * s) for op, (b, k) in SEQ_OPS.items() for s in SEQUENCES]
        pd.DataFrame(rows, columns=["layer", "sequences", "time_us"]).to_csv(d / "per_sequence.csv", index=False)
        rows = []
        for pc in (0, 16, 32):
            for kp in ((0,) if pc == 0 else (0, 16, 64)):
                for nd in (0, 1, 2, 4):
                    if pc == 0 and nd == 0:
                        continue
                    for kd in ((0,) if nd == 0 else (16, 32, 64)):
                        rows.append((pc, kp, nd, kd, attention_us(pc, kp, nd, kd)))
        pd.DataFrame(rows, columns=["prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"]).to_csv(
            d / "attention.csv", index=False)
    if skip:
        (root / "tp1" / skip).unlink()
    return root


def dense_us(T, layers):
    per_layer = sum(n * (DENSE_OPS[op][0] + DENSE_OPS[op][1] * T) for op, n in DECODER_LAYER_OPERATORS.items())
    once = sum(DENSE_OPS[op][0] + DENSE_OPS[op][1] * T for op in ("embedding", "final_layernorm"))
    return layers * per_layer + once


def seq_us(S):
    return sum(b + k * S for b, k in SEQ_OPS.values())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_profile(tmp_path_factory.mktemp("profile") / "TESTGPU" / "tiny")
    model, report = fit_profile(root, "acme/tiny", layers=4)
    return root, model, report


def test_whole_model_time_is_the_sum_of_its_measured_parts(tiny):
    _, m, _ = tiny
    L = 4
    # decode of 2 requests at 24 tokens each: dense(2) + head(2) + L x attention(0, 0, 2, 24)
    want = (dense_us(2, L) + seq_us(2) + L * attention_us(0, 0, 2, 24)) * 1e-6
    assert m.iteration_time(2, 48) == pytest.approx(want, rel=1e-12)
    # one chunk of 24 tokens over 16 cached tokens beside 4 decodes of 40 tokens
    want = (dense_us(28, L) + seq_us(5) + L * attention_us(24, 16, 4, 40)) * 1e-6
    assert m.iteration_time(4, 160, [24], [16]) == pytest.approx(want, rel=1e-12)
    # an exclusive prefill of one prompt is prefill_time
    assert m.prefill_time(20) == pytest.approx((dense_us(20, L) + seq_us(1) + L * attention_us(20, 0, 0, 0)) * 1e-6)


def test_further_chunks_add_their_attention_above_the_kernel_floor(tiny):
    _, m, _ = tiny
    L = 4
    floor = L * attention_us(16, 0, 0, 0)  # the cheapest measured prefill-only attention
    assert m.attention_floor_s == pytest.approx(floor * 1e-6)
    one = m.iteration_time(1, 16, [32], [0])
    two = m.iteration_time(1, 16, [32, 16], [0, 64])
    extra = dense_us(49, L) - dense_us(33, L) + seq_us(3) - seq_us(2) + L * attention_us(16, 64, 0, 0) - floor
    assert two - one == pytest.approx(extra * 1e-6, rel=1e-9)
    assert m.iteration_time(0, 0) == 0.0


def test_skew_correction_needs_the_longest_context(tiny):
    _, m, _ = tiny
    mean = m.iteration_time(2, 48)
    skewed = m.iteration_time(2, 48, decode_max_context_tokens=40)
    assert skewed - mean == pytest.approx(0.05 * 4 * (attention_us(0, 0, 2, 40) - attention_us(0, 0, 2, 24)) * 1e-6)


def test_beyond_the_grid_the_tables_extrapolate_upwards(tiny):
    _, m, _ = tiny
    assert m.iteration_time(8, 8 * 64) < m.iteration_time(16, 16 * 64) < m.iteration_time(32, 32 * 64)
    assert m.prefill_time(128) < m.prefill_time(256)


def test_bound_is_below_the_model_on_random_iterations(tiny):
    _, m, _ = tiny
    b = m.bound_model()
    assert isinstance(b, LinearCostModel) and b.a_p > 0 and b.a_d > 0
    rng = np.random.default_rng(7)
    for _ in range(2000):
        n = int(rng.integers(0, 5))
        kv = int(rng.integers(16, 65))
        chunks = [int(x) for x in rng.integers(1, 33, int(rng.integers(0 if n else 1, 3)))]
        priors = [int(x) for x in rng.integers(0, 65, len(chunks))]
        t = m.iteration_time(n, n * kv, chunks, priors)
        P, Q = sum(chunks), sum(priors)
        if n and chunks:
            g = max(b.a_p, b.a_d) + b.b_d * n + b.c_d * (n * kv + Q) + b.b_p * P
        elif chunks:
            g = b.a_p + b.b_p * P + b.c_d * Q
        else:
            g = b.a_d + b.b_d * n + b.c_d * n * kv
        assert g <= t * (1 + 1e-9), (n, kv, chunks, priors)


def test_report_has_quality_per_term_and_the_linear_fit(tiny):
    _, m, report = tiny
    assert set(report["terms"]) == {"dense", "per_sequence", "attention"}
    # the tiny tables are exactly linear, so leave-one-out interpolation is exact
    for term in report["terms"].values():
        assert term["heldout_max_rel_error"] < 1e-9 and term["points_heldout"] > 0
    lin = report["linear"]
    assert lin["r2_prefill"] > 0.9 and lin["r2_decode"] > 0.9
    assert isinstance(report["linear_model"], LinearCostModel)


def test_round_trip_through_load_preset(tiny, tmp_path):
    _, m, _ = tiny
    path = tmp_path / "p.json"
    path.write_text(json.dumps(m.to_dict()), encoding="utf-8")
    back = load_preset(path)
    assert isinstance(back, ProfiledCostModel)
    for args in ((2, 48), (4, 160, [24], [16]), (0, 0, [100], [0])):
        assert back.iteration_time(*args) == pytest.approx(m.iteration_time(*args), rel=1e-6)
    assert back.bound_model().coefficients() == pytest.approx(m.bound_model().coefficients())
    assert load_preset(back) is back
    with_overhead = back.with_overheads(iteration_overhead_s=0.001, frontend_overhead_s=0.02)
    assert with_overhead.iteration_time(2, 48) == pytest.approx(back.iteration_time(2, 48) + 0.001)
    assert with_overhead.frontend_overhead_s == 0.02


def test_linear_only_attributes_are_refused_clearly(tiny):
    _, m, _ = tiny
    assert not hasattr(m, "a_p")
    with pytest.raises(LinearOnlyError) as info:
        m.request_weight_s([1], [1], 1)
    assert isinstance(info.value, ConfigError) and "-linear" in str(info.value)


def test_tp2_adds_the_all_reduces_of_the_stated_link(tmp_path):
    model = "meta-llama/Llama-3.1-8B"
    root = write_profile(tmp_path / "p", model=model, tps=(1, 2))
    one, _ = fit_profile(root, model, tp=1)
    two, _ = fit_profile(root, model, tp=2)
    shape = model_shape(model)
    T = 64  # a decode of 64 requests: dense and head at 64 tokens / sequences
    ar = (2 * shape.num_hidden_layers + 1) * PCIE5_X16.all_reduce_s(T * shape.hidden_size * 2, 2)
    gather = PCIE5_X16.all_reduce_s(SEQUENCES[-1] * shape.vocab_size * 2 / 2, 2)
    assert two.dense(T) - one.dense(T) == pytest.approx(ar, rel=1e-9)
    assert two.per_sequence(SEQUENCES[-1]) - one.per_sequence(SEQUENCES[-1]) == pytest.approx(gather, rel=1e-9)
    assert "PCIe" in two.provenance["link"]
    assert one.provenance["layers"]["value"] == 32


@pytest.mark.parametrize("case", ["missing file", "missing column", "missing operator", "unknown model",
                                  "wrong model", "no such degree", "no meta"])
def test_bad_profiles_fail_with_one_line_and_write_nothing(tmp_path, capsys, case):
    root = write_profile(tmp_path / "p", skip="per_sequence.csv" if case == "missing file" else None)
    args = ["calibrate", "--profile", str(root), "--model", "acme/tiny", "--layers", "4"]
    field = {"missing file": "per_sequence.csv", "missing column": "time_us", "missing operator": "layer",
             "unknown model": "model", "wrong model": "model", "no such degree": "tp", "no meta": "meta.yaml"}[case]
    if case == "missing column":
        frame = pd.read_csv(root / "tp1" / "attention.csv").drop(columns=["time_us"])
        frame.to_csv(root / "tp1" / "attention.csv", index=False)
    elif case == "missing operator":
        frame = pd.read_csv(root / "tp1" / "dense.csv")
        frame[frame["layer"] != "o_proj"].to_csv(root / "tp1" / "dense.csv", index=False)
    elif case == "unknown model":
        args = args[:-2]
    elif case == "wrong model":
        args[args.index("acme/tiny")] = "acme/other"
    elif case == "no such degree":
        args += ["--tp", "2"]
    elif case == "no meta":
        (root / "meta.yaml").unlink()
    out = tmp_path / "out" / "preset.json"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"field '{field}'" in err and "Fix:" in err
    assert not out.exists() and not out.parent.exists()


def test_cli_writes_the_preset_and_its_linear_fit(tiny, tmp_path, capsys):
    root, m, _ = tiny
    out, lin = tmp_path / "p.json", tmp_path / "l.json"
    assert main(["calibrate", "--profile", str(root), "--model", "acme/tiny", "--layers", "4", "--out", str(out),
                 "--linear-out", str(lin)]) == 0
    text = capsys.readouterr().out
    assert "attention" in text and "R^2" in text
    assert load_preset(out).iteration_time(2, 48) == pytest.approx(m.iteration_time(2, 48), rel=1e-6)
    assert isinstance(load_preset(lin), LinearCostModel)


def test_model_shapes_table():
    shape = model_shape("meta-llama/Llama-3.1-8B")
    assert (shape.num_hidden_layers, shape.hidden_size, shape.num_key_value_heads) == (32, 4096, 8)
    assert model_shape("meta-llama/llama-3.1-8b-instruct").name == "meta-llama/Llama-3.1-8B"
    assert model_shape("Qwen3-32B").num_hidden_layers == 64
    assert shape.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2
    for name in known_models():
        s = model_shape(name)
        assert s.num_attention_heads % s.num_key_value_heads == 0 and s.source.startswith("https://huggingface.co/")
    with pytest.raises(ConfigError) as info:
        model_shape("acme/unknown")
    assert info.value.field == "model" and "--layers" in str(info.value)


# -- the shared profile of Llama-3.1-8B on an RTX PRO 6000 (vLLM 0.19) ---------------------------------------
@needs_profile
def test_shared_profile_maps_to_the_whole_model_by_hand():
    m, report = fit_profile(SHARED_PROFILE, "meta-llama/Llama-3.1-8B")
    dense = pd.read_csv(SHARED_PROFILE / "tp1" / "dense.csv").pivot(index="tokens", columns="layer",
                                                                     values="time_us")
    seq = pd.read_csv(SHARED_PROFILE / "tp1" / "per_sequence.csv").pivot(index="sequences", columns="layer",
                                                                          values="time_us")
    att = pd.read_csv(SHARED_PROFILE / "tp1" / "attention.csv").set_index(
        ["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"])["time_us"]
    row = dense.loc[128]
    per_layer = 2 * row["layernorm"] + row[["qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn",
                                            "down_proj"]].sum() + att.loc[(0, 0, 128, 1024)]
    want = 32 * per_layer + row["embedding"] + row["final_layernorm"] + seq.loc[128].sum()
    assert m.iteration_time(128, 128 * 1024) == pytest.approx(want * 1e-6, rel=1e-9)
    # the tables' tile steps: interpolation holds out far better than the straight line
    assert report["terms"]["dense"]["r2_heldout"] > 0.99 and report["terms"]["attention"]["r2_heldout"] > 0.99
    assert report["linear"]["r2_decode"] > 0.99
    assert m.provenance["source"]["vllm_version"] == "0.19.0"


@needs_profile
@pytest.mark.parametrize("tp", [1, 2])
def test_shipped_profiled_presets_are_reproducible(tmp_path, tp):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_presets", REPO / "scripts" / "make_presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.profiled_presets(SHARED_PROFILE, tmp_path, tps=(tp,))
    for path in written:
        got, want = json.loads(path.read_text()), json.loads((presets_dir() / path.name).read_text())
        assert got.keys() == want.keys()
        for key in ("dense", "per_sequence", "attention", "kv_capacity_tokens", "skew_alpha"):
            if key in want:
                assert got[key] == want[key], (path.name, key)
        if "bound" in want:
            # a linear program is reproducible to rounding, not bit for bit, across BLAS kernels
            for key in ("a_p", "b_p", "a_d", "b_d", "c_d"):
                assert got["bound"][key] == pytest.approx(want["bound"][key], rel=1e-6), (path.name, key)


def test_shipped_profiled_presets_load():
    names = list_presets(kind="profiled")
    assert {"llama31-8b-rtxpro6000-tp1", "llama31-8b-rtxpro6000-tp2"} <= set(names)
    for name in names:
        m = load_preset(name)
        assert isinstance(m, ProfiledCostModel) and m.name == name and m.kv_capacity_tokens > 0
        assert m.provenance["script"] == "scripts/make_presets.py" and "era" in m.provenance
        assert m.bound_model() is not None and f"{name}-linear" in list_presets(kind="linear")
        # a decode of 100 requests at 1,000 tokens: tens of milliseconds on this GPU, not seconds or microseconds
        assert 0.005 < m.iteration_time(100, 100_000) < 0.05


def _envelope_s(b: LinearCostModel, n: int, context_tokens: int, chunks, priors) -> float:
    """The linear lower envelope's seconds for one iteration (the rows calibrate checks it on)."""
    fixed = (max(b.a_p, b.a_d) if n else b.a_p) if chunks else b.a_d
    return fixed + b.b_p * sum(chunks) + b.b_d * n + b.c_d * (context_tokens + sum(priors))


@pytest.mark.parametrize("name", ["llama31-8b-rtxpro6000-tp1", "llama31-8b-rtxpro6000-tp2"])
def test_bound_stays_below_the_model_past_the_profiled_grid(name):
    # Contexts of a million tokens (the grid stops at tens of thousands): the tables extrapolate, and a
    # decode of 64 x 1M tokens came out below its linear lower envelope, so lower_bound_s > makespan.
    m = load_preset(name)
    b = m.bound_model()
    rng = np.random.default_rng(27)
    cases = [(64, 64 * 10**6, [], []), (256, 256 * 10**5, [], []), (64, 64 * 10**6, [2048], [10**6]),
             (0, 0, [2048], [10**6])]
    for _ in range(300):
        n = int(rng.integers(0, 513))
        chunks = [int(x) for x in rng.integers(1, 8193, int(rng.integers(0 if n else 1, 3)))]
        cases.append((n, n * int(rng.integers(1, 4 * 10**6)), chunks,
                      [int(x) for x in rng.integers(0, 2 * 10**6, len(chunks))]))
    for n, context, chunks, priors in cases:
        t = m.iteration_time(n, context, chunks, priors)
        assert _envelope_s(b, n, context, chunks, priors) <= t * (1 + 1e-12), (n, context, chunks, priors)


def test_messages_name_the_cause_huge_times_and_a_file_for_a_folder(tmp_path, capsys):
    """Issue 27 item 18: times of 1e300 us were refused as "a_p and b_p are both 0" (the fit overflowed into
    zeros), and a profile path that is a file as "does not exist"."""
    root = write_profile(tmp_path / "p")
    frame = pd.read_csv(root / "tp1" / "dense.csv")
    frame["time_us"] = 1e300
    frame.to_csv(root / "tp1" / "dense.csv", index=False)
    out = tmp_path / "out.json"
    args = ["calibrate", "--model", "acme/tiny", "--layers", "4", "--out", str(out)]
    assert main([*args, "--profile", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field 'time_us', row 0" in err and "above 1e+10 us" in err, err
    assert "both 0" not in err and not out.exists()
    a_file = tmp_path / "profile.txt"
    a_file.write_text("not a folder")
    assert main([*args, "--profile", str(a_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and "does not exist" not in err, err
    assert main([*args, "--profile", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["conflicting duplicate", "reversed dense", "reversed attention",
                                  "all-zero attention"])
def test_inconsistent_profile_tables_are_refused(tmp_path, capsys, case):
    """Issue 27 item 16: conflicting duplicate grid rows were averaged, reversed tables and all-zero attention
    times fitted without a word."""
    root = write_profile(tmp_path / "p")
    name = "dense.csv" if case in ("conflicting duplicate", "reversed dense") else "attention.csv"
    frame = pd.read_csv(root / "tp1" / name)
    if case == "conflicting duplicate":
        extra = frame.iloc[[3]].assign(time_us=frame["time_us"].iloc[3] * 2)
        frame = pd.concat([frame, extra], ignore_index=True)
    elif case == "reversed dense":
        frame["time_us"] = frame.groupby("layer")["time_us"].transform(lambda t: t.to_numpy()[::-1])
    elif case == "reversed attention":
        chunks = sorted(frame["prefill_chunk"].unique())
        frame["prefill_chunk"] = frame["prefill_chunk"].map(dict(zip(chunks, chunks[:1] + chunks[1:][::-1])))
    else:
        frame["time_us"] = 0.0
    frame.to_csv(root / "tp1" / name, index=False)
    out = tmp_path / "out.json"
    assert main(["calibrate", "--profile", str(root), "--model", "acme/tiny", "--layers", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    field = {"conflicting duplicate": "time_us", "reversed dense": "tokens", "reversed attention": "prefill_chunk",
             "all-zero attention": "time_us"}[case]
    assert len(err.splitlines()) == 1 and f"field '{field}'" in err and "Fix:" in err and name in err, err
    assert not out.exists()
