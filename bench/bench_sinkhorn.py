"""Forward + backward time of the structural distillation loss: omnifer's torch Sinkhorn
divergence against the same divergence from POT's torch backend and from geomloss.

Every method does the same work around the divergence: anchors picked on a 2-member teacher
batch (rule ``--rule``), B x k cosine-similarity rows for the teacher (mean of the members')
and for the student, then the divergence of the student rows to the teacher rows, and the
backward pass to the student embeddings. Settings are the training defaults: epsilon 0.05,
50 iterations, k = 16.

- ``omnifer``: :func:`omnifer.train.structural.structural_loss` (log-domain, fixed iterations).
- ``pot``: ``ot.sinkhorn2(..., method="sinkhorn_log", numItermax=iterations, stopThr=0)`` on
  torch tensors (autograd through the iterations), debiased the same way.
- ``geomloss``: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(epsilon / 2))`` (tensorized). Its cost
  is |x - y|^2 / 2 and its value the *regularised* debiased OT (with the entropy term, reached
  by epsilon-scaling, here with scaling 0.5 and 0.9), so it is reported x 2 and checked against
  that quantity, not against ``<P, C>``.

``error`` is the relative difference to a converged float64 reference of the quantity each
method computes (POT on numpy, marginal error 1e-10 or 20000 iterations; at B = 256 and
epsilon 0.05 that reference is itself good to about 1e-5). Only installed methods run; they
take turns in every timing round, so a busy machine slows them alike.

    python bench/bench_sinkhorn.py
    python bench/bench_sinkhorn.py --batches 64,256 --repeats 30 --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from omnifer import host
from omnifer.train.structural import select_anchors, similarity_rows, structural_loss


def reference(x: np.ndarray, y: np.ndarray, eps: float, regularised: bool) -> float:
    """Converged debiased divergence in float64: sharp ``<P, C>`` or with ``+ eps KL(P|ab)``."""
    import ot

    def cost(p: np.ndarray, q: np.ndarray) -> float:
        a, b, m = np.full(len(p), 1 / len(p)), np.full(len(q), 1 / len(q)), ot.dist(p, q)
        plan = ot.sinkhorn(a, b, m, reg=eps, method="sinkhorn_log", numItermax=20_000,
                           stopThr=1e-10)
        value = float((plan * m).sum())
        if regularised:
            mass = plan > 0
            value += eps * float((plan[mass] * np.log(plan[mass] / np.outer(a, b)[mass])).sum())
        return value

    return cost(x, y) - 0.5 * cost(x, x) - 0.5 * cost(y, y)


def methods(teacher: torch.Tensor, k: int, rule: str, eps: float, iters: int
            ) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool]]:
    """name -> (student embeddings -> loss, whether the loss is the regularised OT)."""
    def rows(student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = select_anchors(teacher, k, rule)
        t = torch.stack([similarity_rows(teacher[:, j], idx) for j in range(teacher.shape[1])])
        return similarity_rows(student, idx), t.mean(0)

    out = {"omnifer": (lambda s: structural_loss(s, teacher, anchors=k, rule=rule, epsilon=eps,
                                                 iterations=iters), False)}
    try:
        import ot

        def pot(s: torch.Tensor) -> torch.Tensor:
            x, y = rows(s)
            w = torch.full((len(x),), 1 / len(x), dtype=x.dtype, device=x.device)

            def cost(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
                return ot.sinkhorn2(w, w, ot.dist(p, q), reg=eps, method="sinkhorn_log",
                                    numItermax=iters, stopThr=0.0)
            return cost(x, y) - 0.5 * cost(x, x) - 0.5 * cost(y, y)
        out["pot"] = (pot, False)
    except ImportError:
        pass
    try:
        from geomloss import SamplesLoss

        for scaling in (0.5, 0.9):  # geomloss's default annealing, and a finer one
            loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=scaling,
                               backend="tensorized")
            out[f"geomloss(scaling={scaling})"] = (lambda s, f=loss: 2.0 * f(*rows(s)), True)
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--anchors", type=int, default=16)
    ap.add_argument("--rule", default="random", choices=("random", "farthest"))
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Sinkhorn did not converge")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {host.describe()}, torch {torch.__version__}, {args.threads} thread(s), {device}; "
          f"k={args.anchors} rule={args.rule} epsilon={args.epsilon} "
          f"iterations={args.iterations}, median of {args.repeats}")
    print(f"{'B':>5} {'method':<22} {'ms fwd+bwd':>11} {'value':>12} {'error':>9}")
    for b in (int(v) for v in args.batches.split(",")):
        g = torch.Generator().manual_seed(b)
        student0 = torch.randn(b, 128, generator=g).to(device)
        teacher = torch.randn(b, 2, 256, generator=g).to(device)
        idx = select_anchors(teacher, args.anchors, args.rule)
        t_rows = torch.stack([similarity_rows(teacher[:, j], idx) for j in range(2)]).mean(0)
        x, y = similarity_rows(student0, idx).double().cpu().numpy(), t_rows.double().cpu().numpy()
        todo = methods(teacher, args.anchors, args.rule, args.epsilon, args.iterations)
        refs = {reg: reference(x, y, args.epsilon, reg) for reg in {r for _, r in todo.values()}}
        times: dict[str, list[float]] = {name: [] for name in todo}
        values: dict[str, float] = {}
        for i in range(args.repeats + 2):  # two warm-up rounds; methods take turns each round
            for name, (fn, _) in todo.items():
                student = student0.clone().requires_grad_()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                value = fn(student)
                value.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
                assert torch.isfinite(student.grad).all(), name
                values[name] = value.item()
        for name, (_, regularised) in todo.items():
            error = abs(values[name] - refs[regularised]) / abs(refs[regularised])
            print(f"{b:>5} {name:<22} {1000 * statistics.median(times[name]):>11.2f} "
                  f"{values[name]:>12.6f} {error:>9.1e}")

if __name__ == "__main__":
    main()
