"""Generations of ensembles, their references, uncertainty and MC dropout in evaluate."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from omnifer import pipeline  # noqa: E402
from omnifer.errors import OmniferError  # noqa: E402
from omnifer.train import TrainConfig  # noqa: E402
from omnifer.train.config import EvaluateConfig  # noqa: E402

FAST = dict(backbone="convnet", input_size=32, epochs=2, batch_size=32, device="cpu",
            patience=0)


@pytest.fixture(scope="module")
def gens(tiny_synth, tmp_path_factory):
    """Two generations of two members on the tiny benchmark."""
    ws = tmp_path_factory.mktemp("gens")
    seen = []
    rec = pipeline.train(ws, TrainConfig(**FAST, ensemble=2, generations=2),
                         data=tiny_synth.labeled_toml, on_generation=seen.append)
    return ws, rec, seen


def test_each_generation_learns_from_the_previous_ones_soft_labels(gens):
    ws, rec, seen = gens
    assert [g.name for g in rec.generations] == ["0", "1"]
    assert not (rec.generations[0] / "teacher_targets.pt").exists()  # ground truth only
    assert (rec.generations[1] / "teacher_targets.pt").is_file()
    # the run's members are the last generation's; metrics were written as each finished
    assert all(str(m).startswith(str(rec.generations[1])) for m in rec.members)
    assert [e["generation"] for e in seen] == [0, 1]
    for g in (0, 1):
        written = json.loads((rec.generations[g] / "metrics.json").read_text())
        e = written["ensemble"]["expression"]
        assert {"ece_after", "nll_after", "brier_after", "macro_f1"} <= set(e)
        assert 0 <= e["ece_after"] <= 1 and e["nll_after"] > 0
    assert len(rec.ensemble_validation) == 2
    # generation 1's members are new models, not copies of generation 0's
    a, b = ((rec.generations[g] / "members" / "0" / "model" / "model.safetensors").read_bytes()
            for g in (0, 1))
    assert a != b


def test_generation_and_member_references(gens):
    from omnifer.models import load_models
    from omnifer.pipeline import resolve
    from omnifer.workspace import Workspace

    ws, rec, _ = gens
    w = Workspace(ws)
    assert len(load_models(resolve.train_run(w, rec.ref))) == 2
    assert resolve.train_run(w, f"{rec.ref}@g0") == rec.generations[0]
    assert resolve.model_dir(w, f"{rec.ref}@g0.1") == \
        (rec.generations[0] / "members" / "1" / "model").resolve()
    assert resolve.model_dir(w, f"{rec.ref}@best") == rec.model.resolve()
    assert rec.model in rec.members
    with pytest.raises(OmniferError, match=r"@g0 is an ensemble .*@g0\.0"):
        resolve.model_dir(w, f"{rec.ref}@g0")
    with pytest.raises(OmniferError, match="generations 0 .. 1, not 5"):
        resolve.train_run(w, f"{rec.ref}@g5")
    with pytest.raises(OmniferError, match="generation 0 has no member 7"):
        resolve.train_run(w, f"{rec.ref}@g0.7")


def test_evaluate_a_generation_with_uncertainty(gens, tiny_synth):
    import pandas as pd

    ws, rec, _ = gens
    ev = pipeline.evaluate(ws, EvaluateConfig(device="cpu"), model=f"{rec.ref}@g0",
                           data=tiny_synth.test_toml)
    assert ev.members == 2
    u = ev.results["uncertainty"]
    assert u["expression_epistemic"] > 0  # two members disagree somewhere
    assert 0 < u["expression_total"] <= 1
    assert np.isclose(u["expression_total"], u["expression_aleatoric"]
                      + u["expression_epistemic"], atol=1e-5)
    table = pd.read_parquet(ev.run.path / "predictions.parquet")
    assert len(table) == ev.counts["samples"]
    probs = table.filter(like="p_").to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (table["uncertainty_expression_epistemic"] >= 0).all()


def test_single_model_has_no_epistemic_part_unless_mc_dropout(gens, tiny_synth):
    ws, rec, _ = gens
    one = pipeline.evaluate(ws, EvaluateConfig(device="cpu"), model=f"{rec.ref}@0",
                            data=tiny_synth.test_toml)
    assert one.results["uncertainty"]["expression_epistemic"] == 0
    mc = pipeline.evaluate(ws, EvaluateConfig(device="cpu", mc_dropout=8, mc_rate=0.3),
                           model=f"{rec.ref}@0", data=tiny_synth.test_toml)
    assert mc.results["uncertainty"]["expression_epistemic"] > 0
    assert mc.results["mc_dropout"] == 8
    # dropout passes are seeded: the same evaluation twice gives the same numbers
    again = pipeline.evaluate(ws, EvaluateConfig(device="cpu", mc_dropout=8, mc_rate=0.3),
                              model=f"{rec.ref}@0", data=tiny_synth.test_toml)
    assert again.results["expression"]["nll_after"] == mc.results["expression"]["nll_after"]


def test_an_interrupted_generation_run_resumes_per_member(tiny_synth, tmp_path):
    ws = tmp_path / "ws"
    config = TrainConfig(**{**FAST, "epochs": 1}, ensemble=2, generations=2)

    class Stop(Exception):
        pass

    def stop_in_generation_1(entry):
        if entry["generation"] == 1 and entry["member"] == 1:
            raise Stop

    with pytest.raises(Stop):
        pipeline.train(ws, config, data=tiny_synth.labeled_toml, on_epoch=stop_in_generation_1)
    epochs = []
    rec = pipeline.train(ws, config, data=tiny_synth.labeled_toml, on_epoch=epochs.append)
    # generation 0 and generation 1's member 0 were not trained again; member 1 resumed
    # after its saved epoch (the interruption came after the state was written)
    assert epochs == []
    assert len(rec.members) == 2 and len(list((ws / ".omnifer" / "runs" / "train").iterdir())) == 1


@pytest.mark.parametrize("flags, message", [
    (["--generations", "0"], "generations is 0; it must be at least 1"),
    (["--ensemble", "0"], "ensemble is 0; it must be at least 1"),
    (["--kd", "structural"], "kd=structural needs a teacher; add --student"),
    (["--kd", "words"], "unknown kd 'words'; choose one of: output, structural"),
])
def test_bad_generation_options_are_one_line(run_cli, tiny_synth, tmp_path, flags, message):
    code, out, err = run_cli("-w", tmp_path, "train", "--data", tiny_synth.labeled_toml, *flags)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_scores_out_of_distribution_images(gens, tiny_synth, tmp_path, run_cli):
    from PIL import Image

    ws, rec, _ = gens
    rng = np.random.default_rng(0)
    folder = tmp_path / "nonfaces"
    folder.mkdir()
    for i in range(12):  # noise and flat colours: nothing like a face
        pixels = rng.integers(0, 256, (48, 48, 3), np.uint8) if i % 2 else \
            np.full((48, 48, 3), 40 * (i % 6), np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    ev = pipeline.evaluate(ws, EvaluateConfig(device="cpu"), model=rec.ref,
                           data=tiny_synth.test_toml, ood=[folder])
    found = ev.results["ood"][str(folder)]
    assert set(found) == {"max_softmax", "entropy", "epistemic", "distance"}
    for s in found.values():
        assert 0 <= s["auroc"] <= 1 and 0 <= s["fpr95"] <= 1
        assert s["n_out"] == 12 and s["n_in"] == ev.counts["samples"]
    written = json.loads((ev.run.path / "metrics.json").read_text())
    assert written["ood"] == json.loads(json.dumps(ev.results["ood"]))
    code, out, err = run_cli("-w", ws, "evaluate", f"{rec.ref}@g1", "--data",
                             tiny_synth.test_toml, "--ood", folder, "--device", "cpu")
    assert code == 0 and f"out of distribution: {folder}: max_softmax AUROC" in out
