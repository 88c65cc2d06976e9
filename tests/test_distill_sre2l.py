"""``sre2l``: images recovered from a trained model's batch-norm statistics, then relabeled."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.distill import distill  # noqa: E402
from omnifer.errors import OmniferError  # noqa: E402
from omnifer.models import ModelConfig, build_model  # noqa: E402
from omnifer.pipeline.teacher import Judge  # noqa: E402


@pytest.fixture(scope="module")
def judge():
    """A 32 px convnet whose batch-norm layers saw bright images (mean pixel 0.75) as
    statistics, and whose class 0 is bright and class 1 dark."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="convnet", expressions=("bright", "dark"), aus=(),
                                    tasks=("expression",), input_size=32), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        bright = (torch.rand(16, 3, 32, 32) * 0.3 + 0.6)
        dark = torch.rand(16, 3, 32, 32) * 0.3 + 0.1
        x = torch.cat([bright, bright, bright, dark])  # the statistics lean bright
        y = torch.tensor([0] * 48 + [1] * 16)
        loss = torch.nn.functional.cross_entropy(model((x - 0.5) / 0.5)["expression"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Judge([model], [0, 1])


def statistics_distance(judge, images):
    """Sum over the batch-norm layers of |batch mean - running mean| + |batch var - running var|."""
    seen = {}
    layers = judge.batchnorms()[0]
    hooks = [bn.register_forward_hook(lambda m, i, o: seen.__setitem__(m, i[0])) for bn in layers]
    with torch.no_grad():
        judge.log_probs(torch.as_tensor(images))
    for h in hooks:
        h.remove()
    return sum(float((seen[bn].mean((0, 2, 3)) - bn.running_mean).norm()
                   + (seen[bn].var((0, 2, 3), unbiased=False) - bn.running_var).norm())
               for bn in layers)


def grey_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return (0.45 + 0.1 * rng.random((n, 3, size, size))).astype(np.float32)


def test_judge_log_probs_are_the_differentiable_probabilities(judge):
    x = torch.rand(5, 3, 32, 32, requires_grad=True)
    logp = judge.log_probs(x)
    assert np.allclose(logp.exp().detach().numpy(), judge(x.detach()), atol=1e-5)
    logp[:, 0].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert [type(bn).__name__ for bn in judge.batchnorms()[0]] == ["BatchNorm2d"] * 4


def test_recovery_moves_images_toward_the_statistics_and_their_class(judge):
    x = grey_images(12)
    y = np.repeat([0, 1], 6)
    start = distill(x, y, n_classes=2, method="sre2l", images_per_class=3, teacher=judge,
                    iterations=1, lr_images=1e-6)
    out = distill(x, y, n_classes=2, method="sre2l", images_per_class=3, teacher=judge,
                  iterations=40, lr_images=0.02)
    assert out.images.shape == (6, 3, 32, 32) and out.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.method == "sre2l" and out.iterations == 40
    assert len(out.history) == 40 and out.history[-1] < 0.5 * out.history[0]
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert statistics_distance(judge, out.images) < 0.5 * statistics_distance(judge, start.images)
    # the stored soft labels are the model's on the final images, and it now agrees with them
    assert np.allclose(out.soft_labels, judge(torch.from_numpy(out.images)), atol=1e-5)
    assert (out.soft_labels.argmax(1) == out.labels).all()


def test_real_init_starts_from_the_views_rded_picks(judge):
    x = np.random.default_rng(1).random((12, 3, 32, 32)).astype(np.float32)
    y = np.repeat([0, 1], 6)
    start = distill(x, y, n_classes=2, method="sre2l", images_per_class=3, teacher=judge,
                    iterations=1, lr_images=1e-6, seed=2, options={"jitter": 0})
    rded = distill(x, y, n_classes=2, method="rded", images_per_class=3, teacher=judge, seed=2)
    assert np.allclose(start.images, rded.images, atol=1e-4)


def test_noise_init_is_seeded_and_differs_from_real_init(judge):
    x = grey_images(8)
    y = np.repeat([0, 1], 4)
    a = distill(x, y, n_classes=2, method="sre2l", images_per_class=2, teacher=judge,
                iterations=2, init="noise", seed=3)
    b = distill(x, y, n_classes=2, method="sre2l", images_per_class=2, teacher=judge,
                iterations=2, init="noise", seed=3)
    c = distill(x, y, n_classes=2, method="sre2l", images_per_class=2, teacher=judge,
                iterations=2, seed=3)
    assert np.array_equal(a.images, b.images)  # seeded
    assert abs(float(a.images.mean()) - 0.5) < 0.05 and abs(float(c.images.mean()) - 0.5) < 0.06
    assert not np.allclose(a.images, c.images, atol=0.1)


def test_recovery_resumes_batch_by_batch(judge, tmp_path, monkeypatch):
    import omnifer.distill.methods.sre2l as sre2l

    x = grey_images(10)
    y = np.repeat([0, 1], 5)
    args = dict(n_classes=2, method="sre2l", images_per_class=3, teacher=judge, iterations=3,
                options={"batch_size": 4}, checkpoint=tmp_path / "c.pt")
    first = distill(x, y, **args)
    recovered, started = [], []
    real, start = sre2l.recover, sre2l.starting_images
    monkeypatch.setattr(sre2l, "recover", lambda *a, **k: recovered.append(1) or real(*a, **k))
    monkeypatch.setattr(sre2l, "starting_images",
                        lambda *a, **k: started.append(1) or start(*a, **k))
    again = distill(x, y, **args)
    assert recovered == [] and started == [] and np.array_equal(first.images, again.images)
    assert again.history == first.history
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    del state["batches"][1]  # as if killed after the first of its two batches
    torch.save(state, tmp_path / "c.pt")
    resumed = distill(x, y, **args)
    assert recovered == [1] and np.array_equal(first.images, resumed.images)
    distill(x, y, **{**args, "seed": 1})
    assert len(recovered) == 3  # another seed: both batches again


def test_bad_teachers_and_options_are_one_line_errors(judge):
    x, y = grey_images(4), np.repeat([0, 1], 2)

    def probs_only(images):
        return np.full((len(images), 2), 0.5)

    no_bn = build_model(ModelConfig(backbone="convnet", expressions=("a", "b"), aus=(),
                                    tasks=("expression",), input_size=32), seed=0)
    for m in no_bn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.__class__ = torch.nn.Identity
    cases = [({"teacher": probs_only}, "needs the model's layers"),
             ({"teacher": Judge([no_bn], [0, 1])}, "no batch-norm layer"),
             ({"teacher": judge, "init": "zeros"}, "unknown init"),
             ({"teacher": judge, "options": {"jitter": -1}}, "at least 0"),
             ({"teacher": judge, "options": {"momentum": 1}}, "unknown option"),
             ({}, "needs a trained model")]
    for kwargs, match in cases:
        with pytest.raises(OmniferError, match=match) as err:
            distill(x, y, n_classes=2, method="sre2l", images_per_class=1, iterations=1,
                    **kwargs)
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_sre2l_recovers_and_labels_with_the_primitive_model(mined_ws, run_cli):
    import pandas as pd

    r = run_cli.json("-w", mined_ws, "distill", "--method", "sre2l", "--images-per-class", 2,
                     "--iterations", 3, "--device", "cpu")
    assert r["method"] == "sre2l" and r["iterations"] == 3 and 0 <= r["agreement"] <= 1
    table = pd.read_parquet(r["dataset"])
    soft = table[[c for c in table.columns if c.startswith("soft_")]].to_numpy()
    assert len(table) == 2 * soft.shape[1] and np.allclose(soft.sum(1), 1, atol=1e-4)
    code, _, err = run_cli("-w", mined_ws, "distill", "--method", "sre2l", "--lr-images", "-1",
                           "--device", "cpu")
    assert code != 0 and "lr_images" in err and len(err.strip().splitlines()) == 1
