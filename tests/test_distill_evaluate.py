"""``omnifer distill evaluate``: networks of the model run's recipe trained with the project's
trainer on each arm for a step budget, soft labels used, resumable; on the tiny benchmark."""

import json

import numpy as np
import pandas as pd
import pytest

from omnifer.distill import DistillEvaluateConfig
from omnifer.errors import OmniferError
from omnifer.workspace import Workspace

pytest.importorskip("torch")


# ---------------------------------------------------------------- config (no torch needed)

def test_config_defaults_and_one_line_errors():
    c = DistillEvaluateConfig()
    assert (c.baselines, c.seeds, c.device) == (False, 5, "auto")
    assert c.steps >= 1 and c.full_steps >= c.steps
    assert DistillEvaluateConfig.section == "distill_evaluate"
    for kwargs, message in (({"seeds": 0}, "seeds is 0"), ({"steps": 0}, "steps is 0"),
                            ({"full_steps": -3}, "full_steps is -3"),
                            ({"steps": 2.5}, "steps is 2.5"), ({"seeds": True}, "seeds is True"),
                            ({"device": "gpu"}, "unknown device 'gpu'")):
        with pytest.raises(OmniferError, match=message) as info:
            DistillEvaluateConfig(**kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(OmniferError, match="epochs"):  # the old knobs are gone
        DistillEvaluateConfig().replace(epochs=3)


def test_arm_config_follows_the_recipe_and_the_step_budget():
    from omnifer.pipeline.distill_evaluate import arm_config
    from omnifer.train import TrainConfig

    recipe = TrainConfig(backbone="convnet", input_size=48, batch_size=64, lr=3e-3,
                         tasks=("expression", "va"), balance=("expression", "va"),
                         source_share={"distilled": 0.3}, val_fraction=0.2, patience=4,
                         ensemble=3, epochs=99)
    small, steps = arm_config(recipe, 70, 150, "cpu")  # 1 batch per epoch
    assert (small.epochs, steps) == (150, 150)
    full, steps = arm_config(recipe, 5132, 600, "cpu")  # 80 batches per epoch
    assert (full.epochs, steps) == (8, 640)
    assert arm_config(recipe, 5120, 640, "cpu")[1] == 640
    for arm in (small, full):
        assert (arm.backbone, arm.input_size, arm.batch_size, arm.lr) == ("convnet", 48, 64, 3e-3)
        assert (arm.tasks, arm.val_fraction, arm.patience, arm.ensemble) == (
            ("expression",), 0.0, 0, 1)
        assert arm.balance == ("expression",) and arm.source_share == ()


def test_stored_probabilities_at_the_trainers_temperature():
    from omnifer.pipeline.distill_evaluate import at_temperature

    p = np.array([[0.8, 0.2, 0.0], [0.5, 0.25, 0.25]])
    assert np.allclose(at_temperature(p, 1.0), p, atol=1e-6)
    t2 = at_temperature(p, 2.0)
    expected = np.sqrt(p) / np.sqrt(p).sum(1, keepdims=True)
    assert np.allclose(t2, expected, atol=1e-5) and np.isfinite(t2).all()
    assert t2[0, 2] < 1e-5  # a zero stays (near) zero


# ---------------------------------------------------------------- the loop's soft targets

def test_loop_takes_precomputed_soft_targets(tiny_synth, tmp_path):
    import torch

    from omnifer.data import read_labeled
    from omnifer.pipeline.distill_evaluate import expression_only
    from omnifer.train import TrainConfig, train

    data = read_labeled(tiny_synth.labeled_toml)
    data = expression_only(data.subset(np.flatnonzero(data.masks()["expression"])[:24]))
    assert data.aus == () and not data.masks()["va"].any()
    cfg = TrainConfig(backbone="convnet", input_size=32, batch_size=8, epochs=2, tasks=(
        "expression",), val_fraction=0.0, patience=0, device="cpu", augment=False)
    y = data.table["expression"].to_numpy(np.int64)
    n, c = len(data), len(data.expressions)
    opposite = torch.nn.functional.one_hot(torch.from_numpy((y + 1) % c), c).float()
    with pytest.raises(OmniferError, match="shape") as info:
        train(data, tmp_path / "bad", config=cfg, cache_dir=tmp_path / "cache",
              soft_targets={"expression": opposite[:, :3]})
    assert "\n" not in str(info.value)
    with pytest.raises(OmniferError, match="both teachers and soft_targets"):
        train(data, tmp_path / "both", config=cfg, cache_dir=tmp_path / "cache",
              teachers=[object()], soft_targets={"expression": opposite})
    runs = {}
    for name, targets in (("hard", None), ("soft", {"expression": opposite})):
        runs[name] = train(data, tmp_path / name, config=cfg, cache_dir=tmp_path / "cache",
                           soft_targets=targets)
    hard, soft = runs["hard"].history[0], runs["soft"].history[0]
    assert "kd_expression" in soft[0]["loss"] and "kd_expression" not in hard[0]["loss"]
    assert len(soft) == 2 and soft[0]["loss"]["total"] != hard[0]["loss"]["total"]


# ---------------------------------------------------------------- end to end


def distil(run_cli, ws, *args):
    return run_cli.json("-w", ws, "distill", "--method", "dm", "--images-per-class", "1",
                        "--iterations", "1", "--size", "16", "--device", "cpu", *args)


@pytest.fixture
def spy(monkeypatch):
    """Every call of the trainer's loop, with its keyword arguments."""
    import omnifer.train.loop as loop

    calls = []
    real = loop.train

    def train(labeled, out_dir, **kw):
        calls.append({"rows": len(labeled), "out": out_dir, **kw})
        return real(labeled, out_dir, **kw)

    monkeypatch.setattr(loop, "train", train)
    return calls


def history(run_dir, arm, seed):
    return json.loads((run_dir / "evaluate" / arm / str(seed) / "members/0/history.json")
                      .read_text())


@pytest.mark.slow
def test_evaluate_every_arm_with_the_models_recipe_and_budget(mined_ws, tiny_synth, run_cli,
                                                             spy):
    ws = mined_ws
    r = distil(run_cli, ws)
    e = run_cli.json("-w", ws, "distill", "evaluate", r["run"], "--baselines", "--seeds", "2",
                     "--steps", "3", "--full-steps", "5", "--test", tiny_synth.test_toml,
                     "--device", "cpu")
    assert e["arms"] == ["distilled (dm)", "random", "herding", "k-center", "full data"]
    assert set(e["results"]) == set(e["arms"])
    model = Workspace(ws).latest("train")
    assert e["model"] == model.ref and (e["backbone"], e["input_size"]) == ("convnet", 32)
    assert (e["steps"], e["full_steps"], e["seeds"]) == (3, 5, 2)
    for name, v in e["results"].items():
        assert len(v["accuracy"]) == len(v["macro_f1"]) == 2 and 0 <= v["model_agreement"] <= 1
        assert v["steps"] == (5 if name == "full data" else 3) and not v["soft_labels"]
    run_dir = ws / ".omnifer/runs" / r["run"]
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert (saved["steps"], saved["full_steps"]) == (3, 5)
    # every network: the trainer's, its steps exactly the budget (batch 64 > rows: 1 per epoch)
    assert len(spy) == 10 and all(c["config"].ensemble == 1 for c in spy)
    assert {c["config"].seed for c in spy} == {0, 1}
    for arm, steps in (("distilled", 3), ("random", 3), ("full", 5)):
        h = history(run_dir, arm, 1)
        assert sum(x["train_samples"] for x in h) == steps * 64 and len(h) == steps
        cfg = json.loads((run_dir / "evaluate" / arm / "1/members/0/model/model.json")
                         .read_text())["config"]
        assert (cfg["backbone"], cfg["input_size"], cfg["tasks"]) == ("convnet", 32,
                                                                      ["expression"])
    # a rerun skips every finished network; another budget retrains, never mixes
    spy.clear()
    again = run_cli.json("-w", ws, "distill", "evaluate", r["run"], "--baselines", "--seeds",
                         "2", "--steps", "3", "--full-steps", "5", "--test",
                         tiny_synth.test_toml, "--device", "cpu")
    assert spy == [] and again["results"] == e["results"]
    run_cli.json("-w", ws, "distill", "evaluate", r["run"], "--seeds", "1", "--steps", "2",
                 "--test", tiny_synth.test_toml, "--device", "cpu")
    assert len(spy) == 1 and len(history(run_dir, "distilled", 0)) == 2


@pytest.mark.slow
def test_evaluate_follows_another_model_run(mined_ws, tiny_synth, run_cli, omnifer_steps,
                                            spy):
    ws = mined_ws
    before = Workspace(ws).latest("train")
    t = run_cli.json("-w", ws, "train", "--data", tiny_synth.labeled_toml, "--backbone",
                     "convnet", "--size", "24", "--epochs", "1", "--batch-size", "8", "--lr",
                     "0.004", "--device", "cpu", "--fresh")
    r = distil(run_cli, ws)
    e = run_cli.json("-w", ws, "distill", "evaluate", r["run"], "--baselines", "--model",
                     t["run"], "--seeds", "1", "--steps", "2", "--full-steps", "10", "--test",
                     tiny_synth.test_toml, "--device", "cpu")
    assert e["model"] == t["run"] and (e["backbone"], e["input_size"]) == ("convnet", 24)
    assert all((c["config"].input_size, c["config"].batch_size, c["config"].lr) == (24, 8, 0.004)
               for c in spy)
    full = next(c for c in spy if c["rows"] == e["results"]["full data"]["images"])
    per_epoch = full["rows"] // 8
    assert full["config"].epochs == -(-10 // per_epoch)  # the budget, rounded up to epochs
    assert e["results"]["full data"]["steps"] == full["config"].epochs * per_epoch
    run_dir = ws / ".omnifer/runs" / r["run"]
    h = history(run_dir, "full", 0)
    assert sum(x["train_samples"] for x in h) // 8 == e["results"]["full data"]["steps"]
    cfg = json.loads((run_dir / "evaluate/full/0/members/0/model/model.json").read_text())[
        "config"]
    assert cfg["input_size"] == 24
    # by default the model that made the set (it mined the source), not the latest train
    # run: the first model's recipe again (the networks are retrained)
    e = run_cli.json("-w", ws, "distill", "evaluate", r["run"], "--seeds", "1", "--steps", "2",
                     "--test", tiny_synth.test_toml, "--device", "cpu")
    assert e["model"] == before.ref != Workspace(ws).latest("train").ref
    assert e["input_size"] == 32 and spy[-1]["config"].input_size == 32


@pytest.mark.slow
def test_evaluate_trains_with_stored_soft_labels(mined_ws, tiny_synth, run_cli, spy):
    from omnifer.data import LabeledSet
    from omnifer.pipeline.distill_evaluate import at_temperature

    ws = mined_ws
    r = distil(run_cli, ws, "--images-per-class", "2")
    run_dir = ws / ".omnifer/runs" / r["run"]
    args = ["-w", ws, "distill", "evaluate", r["run"], "--seeds", "1", "--steps", "4",
            "--test", tiny_synth.test_toml, "--device", "cpu"]
    hard = run_cli.json(*args)["results"]["distilled (dm)"]
    assert not hard["soft_labels"] and spy[-1]["soft_targets"] is None
    assert "kd_expression" not in history(run_dir, "distilled", 0)[0]["loss"]
    # soft labels that contradict the hard ones: each image's next distilled class
    data = LabeledSet.load(r["dataset"])
    y = data.table["expression"].to_numpy(np.int64)
    present = np.unique(y)
    opposite = present[(np.searchsorted(present, y) + 1) % len(present)]
    soft = np.eye(len(data.expressions), dtype=np.float32)[opposite]
    data.save(r["dataset"], extra=pd.DataFrame(
        {f"soft_{c}": soft[:, i] for i, c in enumerate(data.expressions)}))
    out = run_cli.json(*args)["results"]["distilled (dm)"]
    assert out["soft_labels"]
    targets = spy[-1]["soft_targets"]["expression"].numpy()
    temperature = spy[-1]["config"].temperature
    assert np.allclose(targets, at_temperature(soft, temperature), atol=1e-6)
    assert (targets.argmax(1) == opposite).all()
    losses = history(run_dir, "distilled", 0)[0]["loss"]
    assert losses["kd_expression"] > 0  # used in the loss, with the recipe's weights
    gt, kd = spy[-1]["config"].gt_weight, spy[-1]["config"].kd_weight
    assert losses["total"] == pytest.approx(gt * losses["expression"]
                                            + kd * losses["kd_expression"], rel=1e-4)


@pytest.mark.slow
def test_evaluate_tests_only_the_distilled_classes(mined_ws, tiny_synth, tmp_path, run_cli):
    from omnifer.data import LabeledSet, read_labeled

    mined = LabeledSet.load(Workspace(mined_ws).latest("mine").output("dataset"))
    y = mined.table["expression"].to_numpy(np.int64, na_value=-1)
    gone = int(np.bincount(y[y >= 0]).argmax())  # drop the largest class from the source
    mined.subset((y >= 0) & (y != gone)).save(tmp_path / "fewer.parquet")
    r = distil(run_cli, mined_ws, "--from", tmp_path / "fewer.parquet")
    e = run_cli.json("-w", mined_ws, "distill", "evaluate", r["run"], "--baselines", "--seeds",
                     "1", "--steps", "1", "--full-steps", "1", "--test", tiny_synth.test_toml,
                     "--device", "cpu")
    assert len(e["results"]) == 5  # the coresets too, from the classes the source has
    best = max(r["mean"] for r in e["results"].values())
    classes = len(np.unique(y[(y >= 0) & (y != gone)]))
    assert e["classes"] == classes and e["near_chance"] == (best < 1.5 / classes)
    test = read_labeled(tiny_synth.test_toml).table["expression"].to_numpy(np.int64, na_value=-1)
    assert e["test_faces"] == int(((test >= 0) & (test != gone)).sum()) < int((test >= 0).sum())


@pytest.mark.slow
def test_evaluate_bad_input_is_one_line(mined_ws, tiny_synth, run_cli, tmp_path):
    ws = mined_ws
    for args, words in ((["--steps", "0"], "steps is 0"), (["--full-steps", "0"],
                                                          "full_steps is 0"),
                        (["--seeds", "0"], "seeds is 0"),
                        (["--model", "train/nope"], "no train run 'train/nope'")):
        code, _, err = run_cli("-w", ws, "distill", "evaluate", *args, "--device", "cpu")
        assert code != 0 and words in err and len(err.strip().splitlines()) == 1, err
    # a checkpoint outside any train run has no recipe
    model = Workspace(ws).latest("train")
    import shutil

    ckpt = shutil.copytree(model.output("model"), tmp_path / "ckpt")
    code, _, err = run_cli("-w", ws, "distill", "evaluate", "--model", ckpt, "--seeds", "1",
                           "--steps", "1", "--test", tiny_synth.test_toml, "--device", "cpu")
    assert code != 0 and "outside any train run" in err, err
