"""The training loop, student/teacher, resume, evaluation and the train/evaluate commands."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.data import read_labeled  # noqa: E402
from omnifer.data.batches import augment, augmentation  # noqa: E402
from omnifer.data.cache import decoded_images  # noqa: E402
from omnifer.errors import OmniferError  # noqa: E402
from omnifer.train import TrainConfig, load_models, split_validation, train  # noqa: E402
from omnifer.train.evaluate import evaluate_models  # noqa: E402

FAST = dict(backbone="convnet", input_size=32, epochs=2, batch_size=16, val_fraction=0.3,
            patience=0, device="cpu")


@pytest.fixture(scope="module")
def labeled(tiny_synth):
    return read_labeled(tiny_synth.labeled_toml)


@pytest.fixture(scope="module")
def teacher(labeled, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    result = train(labeled, out, config=TrainConfig(**FAST), cache_dir=out / "cache")
    return out, result


def test_config_validation_and_replace(tmp_path):
    cfg = TrainConfig().replace(epochs=3, lr=None, balance="expression,va")
    assert cfg.epochs == 3 and cfg.lr == TrainConfig().lr and cfg.balance == ("expression", "va")
    assert TrainConfig(balance="none").balance == ()
    for bad in (dict(backbone_x=1), dict(tasks="expression,smile"), dict(va_head="grid"),
                dict(epochs=0), dict(kd_weight=-1), dict(optimizer="sgd")):
        with pytest.raises(OmniferError) as err:
            TrainConfig().replace(**bad)
        assert "\n" not in str(err.value)
    (tmp_path / "t.toml").write_text("[train]\nepochs = 4\nbackbone = 'convnet'\n")
    assert TrainConfig.from_toml(tmp_path / "t.toml").epochs == 4
    (tmp_path / "u.toml").write_text("epoch = 4\n")
    with pytest.raises(OmniferError, match="unknown training option"):
        TrainConfig.from_toml(tmp_path / "u.toml")


def test_split_is_per_source_disjoint_and_seeded(labeled):
    tr, va = split_validation(labeled, 0.25, seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labeled)
    src = labeled.table["source"].to_numpy()
    for name in labeled.sources:
        n = (src == name).sum()
        assert (src[va] == name).sum() == round(0.25 * n)
    assert np.array_equal(va, split_validation(labeled, 0.25, seed=1)[1])
    assert not np.array_equal(va, split_validation(labeled, 0.25, seed=2)[1])


def test_split_from_named_sources_keeps_the_others_training(labeled):
    src = labeled.table["source"].to_numpy()
    named = labeled.sources[:2]
    tr, va = split_validation(labeled, 0.25, seed=1, sources=named)
    assert set(src[va]) == set(named) and len(tr) + len(va) == len(labeled)
    assert all((src[tr] == s).sum() == (src == s).sum() for s in labeled.sources[2:])
    every = split_validation(labeled, 0.25, seed=1, sources=labeled.sources)
    assert all(np.array_equal(a, b) for a, b in zip(every, split_validation(labeled, 0.25, 1)))
    # a validation image's rows in another source do not train either
    twin = labeled.table.copy()
    other = np.flatnonzero(src == labeled.sources[2])[0]
    twin.loc[other, "sample_id"] = twin["sample_id"].iloc[va[0]]
    tr2, va2 = split_validation(dataclasses.replace(labeled, table=twin), 0.25, 1, named)
    assert other not in tr2 and other not in va2 and np.array_equal(va2, va)


def test_image_cache_is_reused(labeled, tmp_path):
    a = decoded_images(labeled, 24, tmp_path)
    assert a.shape == (len(labeled), 24, 24, 3) and a.dtype == np.uint8
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = decoded_images(labeled, 24, tmp_path)
    assert np.array_equal(a, b) and files[0].stat().st_mtime_ns == mtime


def test_augment_is_seeded_and_keeps_range():
    x = torch.rand(8, 3, 32, 32)
    a = augment(x.clone(), augmentation(8, 32, torch.Generator().manual_seed(3)))
    b = augment(x.clone(), augmentation(8, 32, torch.Generator().manual_seed(3)))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, x)


def test_a_part_of_a_batch_is_augmented_as_in_the_whole_batch():
    from omnifer.data.batches import BatchMaker

    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    maker = BatchMaker(images, mean=(0.5,) * 3, std=(0.25,) * 3, device=torch.device("cpu"))
    rows = np.array([7, 3, 19, 0, 12, 5, 8, 1])
    whole = maker(rows, generator=torch.Generator().manual_seed(1))
    for part in (slice(0, 4), slice(4, 8)):
        g = torch.Generator().manual_seed(1)
        assert torch.equal(maker(rows, generator=g, part=part), whole[part])
    # the generator moves on as far as for the whole batch
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    maker(rows, generator=g1, part=slice(0, 4))
    maker(rows, generator=g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_teacher_learns_all_tasks_and_is_calibrated(teacher, labeled):
    out, result = teacher
    (model,) = load_models(out)
    cfg = model.config
    assert cfg.tasks == ("expression", "va", "au") and cfg.aus == labeled.aus
    assert cfg.au_thresholds is not None and len(cfg.au_thresholds) == len(labeled.aus)
    hist = json.loads((out / "members/0/history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["loss"]["total"]) for h in hist)
    assert {"expression", "va", "au", "joint"} <= set(hist[0]["loss"])
    assert set(result.validation[0]) == {"expression", "va", "au", "uncertainty"}
    assert result.counts["train"] + result.counts["val"] == len(labeled)
    assert result.balance["expression"]["after"]


def test_interrupted_run_resumes_to_the_same_weights(labeled, teacher, tmp_path):
    out, _ = teacher

    def stop(entry):
        if entry["epoch"] == 1:
            raise KeyboardInterrupt

    cfg = TrainConfig(**FAST)
    with pytest.raises(KeyboardInterrupt):
        train(labeled, tmp_path, config=cfg, cache_dir=out / "cache", on_epoch=stop)
    assert len(json.loads((tmp_path / "members/0/history.json").read_text())) == 1
    train(labeled, tmp_path, config=cfg, cache_dir=out / "cache")
    hist = json.loads((tmp_path / "members/0/history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    (a,), (b,) = load_models(out), load_models(tmp_path)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_student_and_ensemble(labeled, teacher, tmp_path):
    out, _ = teacher
    teachers = load_models(out)
    cfg = TrainConfig(**FAST).replace(epochs=1, ensemble=2)
    result = train(labeled, tmp_path, config=cfg, cache_dir=out / "cache", teachers=teachers)
    assert len(result.members) == 2 and (tmp_path / "teacher_targets.pt").is_file()
    hist = result.history[0][0]["loss"]
    assert {"kd_expression", "kd_va", "kd_au"} <= set(hist)
    members = load_models(tmp_path)
    assert len(members) == 2
    assert not torch.equal(next(members[0].parameters()), next(members[1].parameters()))
    with pytest.raises(OmniferError, match="va-head") as err:
        train(labeled, tmp_path / "x", config=cfg.replace(va_head="regress"),
              cache_dir=out / "cache", teachers=teachers)
    assert "\n" not in str(err.value)


def test_student_of_another_input_size_gets_the_teachers_soft_labels(labeled, teacher,
                                                                      tmp_path):
    """A 24 px student of a 32 px teacher: the soft labels are the teacher's on 32 px images."""
    from omnifer.data.batches import BatchMaker
    from omnifer.train.loop import teacher_soft_targets

    out, _ = teacher
    teachers = load_models(out)
    cfg = TrainConfig(**FAST).replace(epochs=1, input_size=24)
    train(labeled, tmp_path, config=cfg, cache_dir=out / "cache", teachers=teachers)
    got = torch.load(tmp_path / "teacher_targets.pt", weights_only=True)
    tcfg = teachers[0].config
    for size, same in ((tcfg.input_size, True), (24, False)):
        maker = BatchMaker(decoded_images(labeled, size, out / "cache"), mean=tcfg.mean,
                           std=tcfg.std, device=torch.device("cpu"))
        want = teacher_soft_targets(teachers, maker, len(labeled), temperature=cfg.temperature)
        assert torch.allclose(got["expression"], want["expression"], atol=1e-5) == same


def test_student_rejects_a_teacher_with_other_label_spaces(labeled, teacher, tmp_path):
    out, _ = teacher
    (t,) = load_models(out)
    t.config = type(t.config)(**{**t.config.to_dict(), "aus": t.config.aus[:-1],
                                 "au_thresholds": None})
    with pytest.raises(OmniferError, match="predicts only"):
        train(labeled, tmp_path, config=TrainConfig(**FAST), cache_dir=tmp_path, teachers=[t])


def test_data_without_labels_is_an_error(labeled, tmp_path):
    m = labeled.masks()
    expression_only = labeled.subset(m["expression"] & ~m["va"])
    with pytest.raises(OmniferError, match="no label for any of the tasks va") as err:
        train(expression_only, tmp_path, config=TrainConfig(**FAST).replace(tasks="va"),
              cache_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_evaluate_writes_metrics_and_plots(teacher, tiny_synth, tmp_path):
    out, _ = teacher
    models = load_models(out)
    test = read_labeled(tiny_synth.test_toml)
    images = decoded_images(test, 32, tmp_path / "cache")
    r = evaluate_models(models, test, images, tmp_path, device=torch.device("cpu"))
    assert r["expression"]["n"] == len(test) and 0 <= r["expression"]["accuracy"] <= 1
    assert r["expression"]["abaw"] == pytest.approx(
        0.67 * r["expression"]["macro_f1"] + 0.33 * r["expression"]["accuracy"])
    assert set(r["au"]["f1_per_au"]) == set(models[0].config.aus)
    for name in ("metrics.json", "reliability.png", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["va"]["n"] == len(test)


@pytest.mark.slow
def test_cli_train_student_evaluate(tiny_synth, tmp_path, run_cli):
    ws = tmp_path / "ws"
    common = ["--backbone", "convnet", "--size", "32", "--epochs", "1", "--batch-size", "16",
              "--device", "cpu", "--val-fraction", "0.3"]
    code, out, err = run_cli("-q", "-w", ws, "train", "--data", tiny_synth.labeled_toml, *common)
    assert code == 0, err
    assert "trained teacher train/" in out and f"next: omnifer -w {ws} evaluate" in out
    code, out, err = run_cli("-q", "-w", ws, "train", "--student", "--data",
                             tiny_synth.labeled_toml, *common)
    assert code == 0, err
    assert "trained student" in out
    r = run_cli.json("-q", "-w", ws, "evaluate", "--data", tiny_synth.test_toml)
    assert {"expression", "va", "au", "files"} <= set(r)
    assert r["model"].endswith(json.loads(
        (ws / ".omnifer/runs").joinpath(r["run"], "manifest.json").read_text()
    )["config"]["model"].split("/")[-1])


def test_cli_val_from_data_validates_on_the_data_sources_only(tiny_synth, tmp_path, run_cli):
    ws = tmp_path / "ws"
    common = ["--data", tiny_synth.labeled_toml, "--with", tiny_synth.test_toml, "--backbone",
              "convnet", "--size", "32", "--epochs", "1", "--batch-size", "16", "--device",
              "cpu", "--val-fraction", "0.3", "--fresh"]
    code, out, _ = run_cli("-w", ws, "train", *common)
    assert code == 0 and "6 synth-test)" in out, out  # 30% of the 21 extra faces validate
    r = run_cli.json("-w", ws, "train", *common, "--val-from", "data")
    assert "synth-test" not in r["counts"]["val_by_source"]
    assert r["counts"]["train"] == r["counts"]["samples"] - r["counts"]["val"]
    assert sum(r["counts"]["val_by_source"].values()) == r["counts"]["val"] > 0
    code, _, err = run_cli("-w", ws, "train", *common, "--val-from", "extra")
    assert code != 0 and "'extra' is not one of 'all', 'data'" in err
    with pytest.raises(OmniferError, match="unknown val_from 'x'; choose one of: all, data"):
        TrainConfig(val_from="x")


def test_loop_asks_for_the_data_sources_with_val_from_data(labeled, tmp_path):
    with pytest.raises(OmniferError, match="val_from='data' needs the names"):
        train(labeled, tmp_path, config=TrainConfig(**FAST, val_from="data"), cache_dir=tmp_path)


def test_cli_errors_are_one_line(tiny_synth, tmp_path, run_cli):
    ws = tmp_path / "ws"
    code, _, err = run_cli("-w", ws, "train", "--data", tiny_synth.labeled_toml,
                           "--backbone", "resnet19")
    assert code == 1 and "unknown backbone 'resnet19'" in err and err.count("\n") == 1
    code, _, err = run_cli("-w", ws, "train", "--student", "--data", tiny_synth.labeled_toml)
    assert code == 1 and "no complete train run" in err and err.count("\n") == 1
    bad = tmp_path / "ckpt"
    bad.mkdir()
    (bad / "model.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)
    code, _, err = run_cli("-w", ws, "evaluate", bad, "--data", tiny_synth.test_toml)
    assert code == 1 and "checkpoint" in err and err.count("\n") == 1
    code, _, err = run_cli("-w", ws, "train")
    assert code == 1 and "no --data given" in err


@pytest.mark.slow
def test_cli_interrupted_train_resumes_the_same_run(tiny_synth, tmp_path, run_cli, monkeypatch):
    import omnifer.cli.train as cli_train

    ws = tmp_path / "ws"
    args = ["-w", ws, "train", "--data", tiny_synth.labeled_toml, "--backbone", "convnet",
            "--size", "32", "--epochs", "2", "--batch-size", "16", "--device", "cpu"]

    def interrupt(entry):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "epoch_line", interrupt)
    code, _, err = run_cli(*args)
    assert code == 130 and "run the same command again to resume" in err
    monkeypatch.undo()
    code, out, err = run_cli("-q", *args)
    assert code == 0, err
    (run,) = (ws / ".omnifer/runs/train").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] == 1
    assert [h["epoch"] for h in json.loads((run / "members/0/history.json").read_text())] == [1, 2]
    code, out, err = run_cli("-q", *args, "--fresh")
    assert code == 0 and len(list((ws / ".omnifer/runs/train").iterdir())) == 2
