"""The teacher labelling every drawn view of chosen sources again (``--relabel``)."""

import pytest

torch = pytest.importorskip("torch")

from omnifer.errors import OmniferError  # noqa: E402
from omnifer.models import ModelConfig  # noqa: E402
from omnifer.train import TrainConfig, load_models, train  # noqa: E402
from omnifer.train.losses import soft_targets  # noqa: E402
from omnifer.train.relabel import Relabeler, crop, crop_params  # noqa: E402
from test_train import labeled, teacher  # noqa: E402,F401 - the tiny set and its teacher

FAST = dict(backbone="convnet", input_size=32, epochs=1, batch_size=16, val_fraction=0.3,
            patience=0, device="cpu")


class Teacher(torch.nn.Module):
    """Expression logits from the mean of each channel; records what it was shown."""

    def __init__(self, size: int = 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.config = ModelConfig(backbone="convnet", expressions=("a", "b", "c"),
                                  tasks=("expression",), input_size=size, mean=mean, std=std)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return {"expression": x.mean(dim=(2, 3)) * 3}


def student_config(size: int = 32) -> ModelConfig:
    return ModelConfig(backbone="convnet", expressions=("a", "b", "c"), tasks=("expression",),
                       input_size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_crops_stay_inside_the_image_and_the_full_crop_is_the_image():
    p = crop_params(2000, torch.Generator().manual_seed(0))
    w, h, cx, cy = p.T
    assert (w > 0).all() and (w <= 1).all() and (h > 0).all() and (h <= 1).all()
    assert (cx.abs() <= 1 - w + 1e-6).all() and (cy.abs() <= 1 - h + 1e-6).all()
    area = w * h
    assert 0.3 < float(area.min()) and float(area.max()) <= 1.0
    x = torch.rand(3, 3, 16, 16)
    whole = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 3)
    assert torch.allclose(crop(x, whole, 16), x, atol=1e-5)
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 3, 16, 16).contiguous()
    right_half = crop(ramp, torch.tensor([[0.5, 1.0, 0.5, 0.0]]), 8)  # columns 8..15
    assert torch.allclose(right_half[0, 0, 0], torch.arange(8.0, 16.0), atol=1e-4)


def test_only_relabeled_rows_change_and_get_the_teachers_labels_of_their_view():
    teacher = Teacher()
    rows = torch.tensor([False, True, False, True, True, False])
    r = Relabeler([teacher], rows, student=student_config(), temperature=2.0, embeddings=False)
    idx = torch.tensor([0, 1, 2, 3, 5, 1])
    x = torch.randn(6, 3, 32, 32)
    targets = {"expression": torch.full((6, 3), 1 / 3)}
    new_x, new_t = r(idx, x, targets, torch.Generator().manual_seed(1))
    hit = rows[idx]
    assert torch.equal(new_x[~hit], x[~hit]) and torch.equal(new_t["expression"][~hit],
                                                              targets["expression"][~hit])
    assert not torch.allclose(new_x[hit], x[hit])
    want = soft_targets([teacher(new_x[hit])], 2.0)["expression"]
    assert torch.allclose(new_t["expression"][hit], want, atol=1e-6)
    assert torch.equal(targets["expression"], torch.full((6, 3), 1 / 3))  # input untouched
    same_x, _ = r(idx, x, targets, torch.Generator().manual_seed(1))
    assert torch.equal(same_x, new_x)


def test_a_part_of_the_batch_is_relabeled_as_in_the_whole_batch():
    rows = torch.tensor([True, False, True, True])
    r = Relabeler([Teacher()], rows, student=student_config(), temperature=1.0,
                  embeddings=False)
    idx = torch.tensor([0, 1, 2, 3, 2, 0])
    x = torch.randn(6, 3, 32, 32)
    t = {"expression": torch.zeros(6, 3)}
    whole_x, whole_t = r(idx, x, t, torch.Generator().manual_seed(5))
    part = slice(3, 6)
    part_x, part_t = r(idx, x[part], {"expression": t["expression"][part]},
                       torch.Generator().manual_seed(5), part)
    assert torch.allclose(part_x, whole_x[part]) and torch.allclose(part_t["expression"],
                                                                    whole_t["expression"][part])


def test_the_teacher_sees_views_at_its_own_size_and_normalisation():
    teacher = Teacher(size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    r = Relabeler([teacher], torch.tensor([True]), student=student_config(32),
                  temperature=1.0, embeddings=False)
    raw = torch.full((1, 3, 32, 32), 0.75)  # a flat image: every view of it is flat too
    x = (raw - 0.5) / 0.25
    r(torch.tensor([0]), x, {"expression": torch.zeros(1, 3)}, torch.Generator().manual_seed(0))
    (seen,) = teacher.seen
    assert seen.shape == (1, 3, 16, 16) and torch.allclose(seen, torch.full_like(seen, 0.75))


def test_a_student_with_relabel_asks_the_teacher_for_every_drawn_view(labeled, teacher,
                                                                      tmp_path, monkeypatch):
    teacher_dir, _ = teacher
    source = labeled.sources[0]
    teachers = load_models(teacher_dir)
    calls: list[int] = []
    forward = teachers[0].forward
    monkeypatch.setattr(teachers[0], "forward", lambda x: calls.append(len(x)) or forward(x))
    cfg = TrainConfig(**FAST, relabel=source)
    train(labeled, tmp_path / "on", config=cfg, cache_dir=teacher_dir / "cache",
          teachers=teachers)
    once = len(labeled)  # the soft labels of every row, computed before training
    src = labeled.table["source"].to_numpy(object)
    assert (src == source).any() and sum(calls) > once  # plus the relabeled views drawn
    calls.clear()
    train(labeled, tmp_path / "off", config=TrainConfig(**FAST), cache_dir=teacher_dir / "cache",
          teachers=teachers)
    assert sum(calls) == once


def test_relabel_errors_are_one_line(labeled, teacher, tmp_path):
    teacher_dir, _ = teacher
    teachers = load_models(teacher_dir)
    cases = [(dict(relabel="nosuch"), teachers, "relabel names 'nosuch'"),
             (dict(relabel=labeled.sources[0]), (), "needs a teacher")]
    for options, given, message in cases:
        with pytest.raises(OmniferError, match=message) as err:
            train(labeled, tmp_path, config=TrainConfig(**FAST, **options),
                  cache_dir=teacher_dir / "cache", teachers=given)
        assert "\n" not in str(err.value)
    assert TrainConfig(relabel="distilled, mined").relabel == ("distilled", "mined")
    assert TrainConfig(relabel="none").relabel == ()


def test_cli_relabel_without_a_teacher_is_one_line_and_writes_nothing(tiny_synth, tmp_path,
                                                                      run_cli):
    code, _, err = run_cli("-w", tmp_path / "ws", "train", "--data", tiny_synth.labeled_toml,
                           "--relabel", "expr", "--backbone", "convnet", "--epochs", "1")
    assert code != 0 and "needs a teacher" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws" / ".omnifer" / "runs" / "train").exists()
