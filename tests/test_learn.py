"""Learning a scheduler: the Gymnasium environment over the engine, and the learned rule.

* the environment passes Gymnasium's ``check_env``, its episodes are seeded, and its return is the
  objective: ``-makespan / lower_bound`` (batch) or the goodput share (online);
* answered as the Lagrangian rule would, an episode is the Lagrangian rule's run;
* the learned rule runs wherever a rule does (``simulate(..., rule="learned")``, the command line),
  numpy only, bit-reproducibly, and its schedule passes the validator with the instance's bound;
* what the environment's greedy network decides is what the rule decides;
* ``workbench learn`` (needs stable-baselines3: skipped without it) writes a model that loads.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

import workbench  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402
from workbench.cli import main  # noqa: E402
from workbench.errors import ConfigError  # noqa: E402
from workbench.learn import ENV_ID, SchedulingEnv, episode_metrics, make_vector_env  # noqa: E402
from workbench.learn.train import evaluate  # noqa: E402
from workbench.policies.learned import (  # noqa: E402
    N_FEATURES,
    default_model_path,
    load_model,
    save_model,
)
from workbench.policies.registry import RULES  # noqa: E402
from workbench.schedule.bounds import closed_form_lower_bound  # noqa: E402
from workbench.schedule.validator import validate  # noqa: E402

SMALL = {"trace": "gsm8k-train", "requests": 48, "clients": 1, "batch_size": 8}
try:
    import stable_baselines3  # noqa: F401
    HAVE_SB3 = True
except ImportError:
    HAVE_SB3 = False
needs_sb3 = pytest.mark.skipif(not HAVE_SB3, reason="training needs stable-baselines3 (the `learn` extra)")


def _play(env: SchedulingEnv, seed: int, choose) -> tuple[float, dict, int]:
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        assert env.observation_space.contains(obs)
        obs, reward, done, truncated, info = env.step(choose(env))
        assert not truncated
        total += reward
        steps += 1
    return total, info, steps


@pytest.mark.parametrize("objective", ["makespan", "goodput"])
def test_the_environment_passes_gymnasiums_checker(objective):
    env = SchedulingEnv(**SMALL, objective=objective)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (N_FEATURES,) and env.action_space.n == 2
    assert gym.spec(ENV_ID).entry_point == "workbench.learn.env:SchedulingEnv"


def test_the_makespan_return_is_minus_the_makespan_over_the_bound():
    env = SchedulingEnv(**SMALL)
    total, info, steps = _play(env, 3, lambda e: e.action_space.n - 1)
    assert steps > 1
    assert total == pytest.approx(-info["makespan_s"] / info["lower_bound_s"], rel=1e-12)
    assert total == pytest.approx(-1.0 - info["gap"], rel=1e-12)
    bound = closed_form_lower_bound(env.episode, 1, 8, env.cost_model).value_s
    assert info["lower_bound_s"] == bound


def test_answered_as_the_lagrangian_rule_an_episode_is_the_rules_run():
    env = SchedulingEnv(**SMALL)
    rule = RULES["lagrangian"]()
    _, info, _ = _play(env, 5, lambda e: 1 if rule.admit(e.decision.view) > 0 else 0)
    want = workbench.simulate(env.episode, 1, 8, "hybrid", "llama-65b")
    assert info["makespan_s"] == want.metrics["makespan_s"]


def test_the_goodput_return_is_the_share_meeting_both_targets():
    env = SchedulingEnv(**{**SMALL, "clients": 2}, objective="goodput", load=1.0)
    assert env.load == 1.0 and SchedulingEnv(**SMALL, objective="goodput").load == 0.9
    total, info, _ = _play(env, 1, lambda e: 1)
    assert total == pytest.approx(info["goodput"], abs=1e-12)
    assert info["goodput"] == episode_metrics(info["schedule"])["goodput"]
    assert env.episode["arrival_s"].iloc[0] == 0.0 and env.episode["arrival_s"].is_monotonic_increasing


def test_episodes_are_seeded_subsets():
    env = SchedulingEnv(**SMALL, objective="goodput")
    env.reset(seed=7)
    first = env.episode.copy()
    env.reset(seed=7)
    assert env.episode.equals(first)
    env.reset(seed=8)
    assert not env.episode["request_id"].equals(first["request_id"])
    assert len(first) == 48 and first["request_id"].is_unique


def test_a_vector_env_steps_several_episodes_at_once():
    venv = make_vector_env(3, **SMALL)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, N_FEATURES)
    for _ in range(20):
        obs, reward, terminated, truncated, _ = venv.step(np.ones(3, dtype=np.int64))
        assert reward.shape == (3,) and np.all(reward <= 0)
    venv.close()


def test_bad_settings_are_refused_with_the_field():
    for kwargs, field in (({"objective": "latency"}, "objective"), ({"requests": 10**6}, "requests"),
                          ({"levels": 0}, "levels"), ({"load": -1.0}, "load")):
        with pytest.raises(ConfigError) as err:
            SchedulingEnv(**{**SMALL, **kwargs})
        assert err.value.field == field


# -- the learned rule ------------------------------------------------------------------------------------
def test_the_shipped_model_is_small_and_says_how_it_was_made():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 1_000_000
    model = load_model()
    for key in ("command", "settings", "date_utc", "training_seconds", "versions"):
        assert key in model.provenance
    assert model.provenance["settings"]["trace"] == "gsm8k-train"


def test_the_learned_rule_schedules_anywhere_a_rule_does_and_validates(tmp_path):
    a = workbench.simulate("gsm8k-test", 8, 16, "hybrid", "llama-65b", rule="learned")
    b = workbench.simulate("gsm8k-test", 8, 16, "hybrid", "llama-65b", rule="learned", model=default_model_path())
    lagrangian = workbench.simulate("gsm8k-test", 8, 16, "hybrid", "llama-65b")
    assert validate(a).ok
    assert a.metrics["lower_bound_s"] == lagrangian.metrics["lower_bound_s"]
    assert a.timeline.equals(b.timeline)  # numpy-only inference: the same schedule every time
    assert a.metrics["makespan_s"] >= a.metrics["lower_bound_s"]


def test_what_the_environment_greedy_network_decides_is_what_the_rule_decides():
    model = load_model()
    env_kwargs = {**SMALL, "requests": 80, "batch_size": 16}
    table = evaluate(model, env_kwargs, [11])
    env = SchedulingEnv(**env_kwargs)
    env.reset(seed=11)
    want = workbench.simulate(env.episode, 1, 16, "hybrid", "llama-65b", rule="learned")
    assert table["makespan_s"].iloc[0] == want.metrics["makespan_s"]


def test_a_bad_model_is_refused_with_the_field(tmp_path):
    with pytest.raises(ConfigError) as err:
        workbench.simulate("gsm8k-test", 2, 16, "hybrid", rule="learned", model=tmp_path / "none.npz")
    assert err.value.field == "model"
    wrong = save_model(tmp_path / "wrong.npz", [np.zeros((4, 3)), np.zeros((2, 4))], [np.zeros(4), np.zeros(2)],
                       activation="tanh", levels=1, provenance={})
    with pytest.raises(ConfigError, match="features"):
        workbench.simulate("gsm8k-test", 2, 16, "hybrid", rule="learned", model=wrong)
    with pytest.raises(ConfigError) as err:
        workbench.simulate("gsm8k-test", 2, 16, "hybrid", model=default_model_path())
    assert err.value.field == "model"  # the Lagrangian rule takes no model


def test_levels_choose_how_many_to_prefill(tmp_path):
    # A network whose logits are constant picks its last action: prefill every admissible request,
    # which is continuous batching, so the schedule is continuous batching's.
    w = [np.zeros((3, N_FEATURES)), np.zeros((3, 3))]
    b = [np.zeros(3), np.array([0.0, 0.0, 1.0])]
    path = save_model(tmp_path / "eager.npz", w, b, activation="tanh", levels=2, provenance={})
    got = workbench.simulate("gsm8k-test", 2, 16, "hybrid", rule="learned", model=path)
    want = workbench.simulate("gsm8k-test", 2, 16, "hybrid", rule="continuous")
    assert got.metrics["makespan_s"] == want.metrics["makespan_s"]


def test_the_command_line_simulates_with_the_learned_rule(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "gsm8k-test", "--policy", "hybrid", "--rule", "learned", "--model",
                 str(default_model_path()), "--out", str(out)]) == 0
    assert "makespan" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["makespan_s"] > 0
    assert main(["simulate", "--rule", "learned", "--model", str(tmp_path / "missing.npz"),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "model" in capsys.readouterr().err and not (tmp_path / "bad").exists()


# -- training -----------------------------------------------------------------------------------------------
@needs_sb3
def test_workbench_learn_writes_a_model_the_rule_reads(tmp_path, capsys):
    out = tmp_path / "learned"
    args = ["learn", "--steps", "256", "--requests", "40", "--batch-size", "8", "--envs", "2", "--eval-every",
            "128", "--eval-episodes", "2", "--seed", "3", "--out", str(out)]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"model.npz", "curve.csv", "report.html", "provenance.json"}
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["settings"]["seed"] == 3 and provenance["settings"]["steps"] == 256
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("steps,seconds") and len(curve) >= 3
    s = workbench.simulate("gsm8k-test", 2, 16, "hybrid", rule="learned", model=out / "model.npz")
    assert validate(s).ok and math.isfinite(s.metrics["makespan_s"])
    capsys.readouterr()
    first = load_model(out / "model.npz").net.weights[0].copy()
    assert main(args[:-3] + ["4", "--out", str(out)]) == 2  # other settings: refused without --force
    assert "--force" in capsys.readouterr().err
    assert np.array_equal(load_model(out / "model.npz").net.weights[0], first)


@needs_sb3
def test_training_is_seeded():
    from workbench.learn.train import train

    kw = {"steps": 128, "requests": 40, "batch_size": 8, "n_envs": 2, "eval_every": 10**6, "eval_episodes": 1,
          "progress": False}
    a, b = train(seed=5, **kw), train(seed=5, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights))


def test_workbench_learn_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["learn", "--load", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--load" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    if HAVE_SB3:
        assert main(["learn", "--requests", "100000", "--out", str(out)]) == 2
        assert "--requests" in capsys.readouterr().err and not out.exists()
