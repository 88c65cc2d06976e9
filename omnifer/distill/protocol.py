"""The evaluation protocol: train fresh networks on a set only, score them on real test data.

Every arm (a distilled set, a coreset, the full training data ...) gets the same recipe:
for each seed ``s`` in ``range(seeds)``, a ConvNet initialised from ``s`` is trained from
scratch with SGD (momentum 0.9, weight decay 5e-4, learning rate x0.1 at half the epochs),
per-image DSA augmentation and the arm's labels (learned soft labels when the arm has them),
then its accuracy and macro-F1 on the test set are recorded. The same seeds serve every arm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from omnifer.distill.strategy import DEFAULT_STRATEGY, parse_strategy
from omnifer.errors import OmniferError


def _arm(name: str, value: Any) -> tuple[Any, Any, Any]:
    if hasattr(value, "images") and hasattr(value, "labels"):  # a Distilled
        return value.images, value.labels, getattr(value, "soft_labels", None)
    if not isinstance(value, Sequence) or len(value) not in (2, 3):
        raise OmniferError(
            f"train set {name!r} is a {type(value).__name__}; pass (images, labels) or "
            "(images, labels, soft_labels_or_None)"
        )
    return (*value, None)[:3]


def evaluate_sets(train_sets: Mapping[str, Any], test: tuple[Any, Any], *, n_classes: int,
                  seeds: int = 5, epochs: int = 300, lr: float = 0.01, batch_size: int = 256,
                  augment: str | Iterable[str] | None = DEFAULT_STRATEGY, width: int = 128,
                  depth: int | None = None,
                  mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
                  device: str = "auto",
                  progress: Callable[[int, int, dict], None] | None = None,
                  ) -> dict[str, dict[str, Any]]:
    """Scores of networks trained only on each set of ``train_sets``.

    ``train_sets`` maps a name to ``(images, labels)``, ``(images, labels, soft_labels)`` or a
    :class:`~omnifer.distill.methods.Distilled`. ``mean_std`` is the per-channel input
    normalisation (that of the real training data, e.g. ``(distilled.mean, distilled.std)``);
    by default the test images' statistics. Returns, per name, ``accuracy`` and ``macro_f1``
    (one value per seed), ``mean`` and ``std`` (of the accuracy, population std) and
    ``seconds`` (training and testing time of all seeds).
    """
    import torch

    from omnifer.distill.networks import (build_convnet, channel_stats, check_data, predict,
                                          train_network)
    from omnifer.metrics import accuracy, macro_f1
    from omnifer.device import resolve_device

    if int(seeds) < 1:
        raise OmniferError(f"seeds is {seeds}; pass 1 or more")
    dev = resolve_device(device)
    strategy = parse_strategy(augment)
    test_x, test_y = check_data(test[0], test[1], n_classes)
    mean, std = mean_std if mean_std is not None else channel_stats(test_x)
    arms = {}
    for name, value in train_sets.items():
        images, labels, soft = _arm(name, value)
        x, y = check_data(images, labels, n_classes)
        if x.shape[1:] != test_x.shape[1:]:
            raise OmniferError(
                f"train set {name!r} has images of shape {tuple(x.shape[1:])} but the test set "
                f"{tuple(test_x.shape[1:])}; resize both to one size"
            )
        targets = y
        if soft is not None:
            targets = torch.as_tensor(np.asarray(soft), dtype=torch.float32)
            if targets.shape != (x.shape[0], n_classes):
                raise OmniferError(
                    f"soft labels of {name!r} have shape {tuple(targets.shape)}; pass "
                    f"[{x.shape[0]}, {n_classes}] probabilities or None"
                )
        arms[name] = (x.to(dev), targets.to(dev))

    total, done, results = len(arms) * int(seeds), 0, {}
    for name, (x, targets) in arms.items():
        t0 = time.perf_counter()
        accs, f1s = [], []
        for s in range(int(seeds)):
            net = build_convnet(x.shape[1], x.shape[2], n_classes, s, width=width, depth=depth,
                                mean=mean, std=std, device=dev)
            train_network(net, x, targets, epochs=epochs, lr=lr, batch_size=batch_size,
                          momentum=0.9, weight_decay=5e-4, decay_epochs=(epochs // 2,),
                          augment=strategy, gen=torch.Generator().manual_seed(s))
            pred = predict(net, test_x)
            accs.append(accuracy(test_y.numpy(), pred))
            f1s.append(macro_f1(test_y.numpy(), pred, n_classes))
            done += 1
            if progress is not None:
                progress(done, total, {"set": name, "seed": s, "accuracy": accs[-1]})
        results[name] = {"accuracy": accs, "macro_f1": f1s, "mean": float(np.mean(accs)),
                         "std": float(np.std(accs)), "seconds": time.perf_counter() - t0}
    return results
