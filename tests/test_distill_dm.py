"""dm's step against a hand-computed loss and update, and a resumed run that grows."""

import numpy as np
import pytest
import torch

from omnifer.distill import build_convnet, distill, dsa
from omnifer.distill.augment import draw_seed
from omnifer.distill.methods import DistributionMatching, DMOptions
from omnifer.distill.methods.state import Run
from omnifer.distill.strategy import DEFAULT_STRATEGY

K, IPC, PER_CLASS, SIZE, WIDTH, BATCH = 3, 2, 12, 16, 8, 5
LR = 0.03  # plain SGD on the images: the update is linear in the gradient


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    """3 classes x 12 images of 3x16x16: noise plus a bright square whose place gives the class."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(K), PER_CLASS)
    x = (rng.random((K * PER_CLASS, 3, SIZE, SIZE)) * 0.4).astype(np.float32)
    for i, c in enumerate(y):
        x[i, :, 2 + 4 * c:8 + 4 * c, 4:10] += 0.5
    return x, y


def matching_loss(net_seed, seeds, real, syn, net_args):
    """The sum over classes of the squared distance of mean embeddings, computed by hand."""
    net = build_convnet(seed=net_seed, **net_args)
    total = 0.0
    for c, seed in enumerate(seeds):
        r = net(dsa(real[c], seed, DEFAULT_STRATEGY), embed=True).mean(0)
        s = net(dsa(syn[c * IPC:(c + 1) * IPC], seed, DEFAULT_STRATEGY), embed=True).mean(0)
        total = total + (r - s).pow(2).sum()
    return total


def test_step_is_the_class_mean_matching_loss_and_lowers_it(data):
    x, y = map(torch.from_numpy, data)
    real = [x[y == c] for c in range(K)]
    syn0 = torch.cat([r[:IPC] for r in real]).clone()
    net_args = {"channels": 3, "size": SIZE, "n_classes": K, "width": WIDTH, "depth": None,
                "mean": [0.3] * 3, "std": [0.2] * 3}
    gen = torch.Generator().manual_seed(5)
    run = Run(real, syn0.clone().requires_grad_(True), None, ipc=IPC, strategy=DEFAULT_STRATEGY,
              gen=gen, net_args=net_args, device=torch.device("cpu"))
    run.optimizer = torch.optim.SGD([run.syn], lr=LR)
    start = gen.get_state()
    loss = DistributionMatching(run, DMOptions(batch_real=BATCH)).step(run)

    # the same draws, in the step's order: network, one DSA seed per class, the real batches
    replay = torch.Generator().manual_seed(5)
    replay.set_state(start)
    net_seed = draw_seed(replay)
    seeds = [draw_seed(replay) for _ in range(K)]
    batches = [r[torch.randperm(len(r), generator=replay)[:BATCH]] for r in real]
    assert torch.equal(replay.get_state(), gen.get_state())  # nothing else was drawn

    expected_syn = syn0.clone().requires_grad_(True)
    expected = matching_loss(net_seed, seeds, batches, expected_syn, net_args)
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
    sgd = torch.optim.SGD([expected_syn], lr=LR)
    expected.backward()
    sgd.step()
    with torch.no_grad():
        expected_syn.clamp_(0.0, 1.0)
    torch.testing.assert_close(run.syn.detach(), expected_syn.detach())
    assert not torch.equal(run.syn.detach()[-IPC:], syn0[-IPC:])  # every class moved

    with torch.no_grad():
        after = matching_loss(net_seed, seeds, batches, run.syn, net_args)
    assert float(after) < loss


def test_resume_with_more_iterations_equals_one_long_run(data, tmp_path):
    x, y = data
    args = {"n_classes": K, "method": "dm", "images_per_class": IPC, "width": WIDTH,
            "batch_real": BATCH, "device": "cpu", "seed": 3}
    whole = distill(x, y, iterations=6, **args)
    path = tmp_path / "dm.pt"
    first = distill(x, y, iterations=3, checkpoint=path, **args)
    grown = distill(x, y, iterations=6, checkpoint=path, **args)
    assert grown.history[:3] == first.history and grown.history == whole.history
    np.testing.assert_array_equal(grown.images, whole.images)
    assert not np.array_equal(first.images, whole.images)
