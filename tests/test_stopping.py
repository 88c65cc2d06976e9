"""Early stopping: it ends a run after --patience epochs without a new best, and warns when it
stops a cosine schedule that has not yet decayed."""

import itertools
import logging

import pytest

torch = pytest.importorskip("torch")

from omnifer.data import read_labeled  # noqa: E402
from omnifer.train import TrainConfig, train  # noqa: E402
from omnifer.train import evaluate as E  # noqa: E402
from omnifer.train.stopping import should_stop  # noqa: E402


@pytest.mark.parametrize("patience, bad, schedule, rate, stops, warns", [
    (0, 9, "cosine", 0.9, False, False),  # 0: never stop
    (3, 2, "cosine", 0.9, False, False),  # not yet
    (3, 3, "cosine", 0.9, True, True),  # the rate is still high
    (3, 3, "cosine", 0.2, True, False),  # the schedule has decayed
    (3, 3, "constant", 1.0, True, False),  # a constant rate never decays
])
def test_the_rule_and_its_warning(caplog, patience, bad, schedule, rate, stops, warns):
    config = TrainConfig(epochs=31, patience=patience, schedule=schedule)
    with caplog.at_level(logging.INFO, logger="omnifer.train.stopping"):
        assert should_stop(0, {"epoch": 16, "bad_epochs": bad}, config, rate) is stops
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) is warns
    if warns:
        assert warnings == ["member 0: early stop after epoch 16 of 31 (best epoch 13, "
                            "--patience 3) with the learning rate still at 90% of its peak; the "
                            "kept checkpoint never trained at a low rate: --patience 0 trains "
                            "every epoch"]


def test_a_run_stops_after_patience_epochs_without_a_new_best(tiny_synth, tmp_path, monkeypatch,
                                                             caplog):
    scores = itertools.chain([0.5, 0.7, 0.6, 0.65], itertools.repeat(0.1))
    monkeypatch.setattr(E, "score", lambda result: next(scores))
    config = TrainConfig(backbone="convnet", input_size=32, epochs=8, batch_size=16,
                         val_fraction=0.3, patience=2, device="cpu")
    with caplog.at_level(logging.WARNING, logger="omnifer.train.stopping"):
        result = train(read_labeled(tiny_synth.labeled_toml), tmp_path, config=config,
                       cache_dir=tmp_path / "cache")
    history = result.history[0]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4]
    assert [e["best"] for e in history] == [True, True, False, False]
    assert "early stop after epoch 4 of 8 (best epoch 2" in caplog.text
