"""The per-task metrics of ``omnifer evaluate`` (predictions: ``omnifer.models.inference``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnifer import metrics as M
from omnifer.artifacts import atomic_write_json
from omnifer.data.batches import BatchMaker
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError
from omnifer.models.inference import ensemble, predict, predict_models, uncertainty


def task_metrics(pred: dict[str, np.ndarray], arrays: dict[str, np.ndarray], *,
                 expressions: Sequence[str], aus: Sequence[str]) -> dict[str, Any]:
    """Metrics of every task that has both a prediction and at least one label."""
    result: dict[str, Any] = {}
    unc = uncertainty(pred)
    m = arrays["expression_mask"]
    if "expression_probs" in pred and m.any():
        y, probs, raw = arrays["expression"][m], pred["expression_probs"][m], \
            pred["expression_probs_raw"][m]
        p = probs.argmax(1)
        c = len(expressions)
        acc, f1 = M.accuracy(y, p), M.macro_f1(y, p, c)
        majority = np.full_like(y, np.bincount(y, minlength=c).argmax())
        result["expression"] = {
            "n": int(m.sum()), "accuracy": acc, "macro_f1": f1, "abaw": M.abaw_expr_score(f1, acc),
            "f1_per_class": dict(zip(expressions, M.f1_per_class(y, p, c).tolist())),
            "ece_before": M.ece(raw, y), "ece_after": M.ece(probs, y),
            "nll_before": M.nll(raw, y), "nll_after": M.nll(probs, y),
            "brier_before": M.brier(raw, y), "brier_after": M.brier(probs, y),
            # how well the total uncertainty ranks the misclassified samples first
            "error_auroc": M.auroc(unc["expression_total"][m], p != y)
            if "expression_total" in unc else math.nan,
            "confusion": M.confusion_matrix(y, p, c).tolist(),
            # always answering the most frequent class: the floor a model must beat
            "majority": {"accuracy": M.accuracy(y, majority),
                         "macro_f1": M.macro_f1(y, majority, c)},
        }
    m = arrays["va_mask"]
    if "va" in pred and m.sum() >= 2:
        v = [M.ccc(pred["va"][m, j], arrays["va"][m, j]) for j in range(2)]
        result["va"] = {"n": int(m.sum()), "ccc_valence": v[0], "ccc_arousal": v[1],
                        "ccc_mean": (v[0] + v[1]) / 2, "chance": {"ccc_mean": 0.0}}
    m = arrays["au_mask"]
    if "au_probs" in pred and m.any():
        thr = pred["au_thresholds"]
        f1 = M.au_f1(arrays["au"], (pred["au_probs"] >= thr).astype(np.float32), m)
        rate = (arrays["au"] * m).sum(0) / np.maximum(m.sum(0), 1)
        chance = 2 * rate / (1 + rate)  # F1 of always answering "present"
        result["au"] = {
            "n": int(m.any(1).sum()), "f1_mean": float(np.nanmean(f1)),
            "f1_per_au": dict(zip(aus, f1.tolist())), "thresholds": dict(zip(aus, thr.tolist())),
            "chance": {"f1_mean": float(np.nanmean(np.where(m.any(0), chance, np.nan)))},
        }
    if result and unc:
        result["uncertainty"] = {k: float(v.mean()) for k, v in unc.items()}
    return result


def score(result: dict[str, Any]) -> float:
    """One number to select checkpoints by: the mean of macro-F1, mean CCC and mean AU F1."""
    parts = [result["expression"]["macro_f1"]] if "expression" in result else []
    parts += [result["va"]["ccc_mean"]] if "va" in result else []
    parts += [result["au"]["f1_mean"]] if "au" in result else []
    return float(np.mean(parts)) if parts else -math.inf


def align_aus(arrays: dict[str, np.ndarray], have: Sequence[str], want: Sequence[str]
              ) -> dict[str, np.ndarray]:
    """AU columns of ``arrays`` (named ``have``) reordered to ``want``; absent ones masked out."""
    check_aus(have, want)
    out = dict(arrays)
    n = len(arrays["weight"])
    au = np.zeros((n, len(want)), np.float32)
    mask = np.zeros((n, len(want)), bool)
    for j, name in enumerate(want):
        if name in have:
            au[:, j] = arrays["au"][:, list(have).index(name)]
            mask[:, j] = arrays["au_mask"][:, list(have).index(name)]
    out["au"], out["au_mask"] = au, mask
    return out


def check_aus(have: Sequence[str], want: Sequence[str]) -> None:
    extra = sorted(set(have) - set(want))
    if extra:
        raise OmniferError(
            f"the data labels {', '.join(extra)} but the model predicts only "
            f"{', '.join(want) or 'no AU'}; train a model on data with these AUs"
        )


def check_expressions(labeled: LabeledSet, expressions: Sequence[str], what: str) -> None:
    if tuple(labeled.expressions) != tuple(expressions) and labeled.masks()["expression"].any():
        raise OmniferError(
            f"the data's expression classes ({len(labeled.expressions)}: "
            f"{', '.join(labeled.expressions)}) differ from the {what}'s "
            f"({len(expressions)}: {', '.join(expressions)}); use data and {what} with the same "
            "label space"
        )


def evaluate_models(models: Sequence[Any], labeled: LabeledSet, images: np.ndarray,
                    out_dir: str | Path, *, device: torch.device, batch_size: int = 256,
                    mc_dropout: int = 0, mc_rate: float | None = None,
                    reference: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of ``models`` (their mean; with ``mc_dropout``, of their dropout passes) on
    ``labeled``; writes metrics.json, the plots and the per-sample predictions with their
    out-of-distribution scores (the distance one with ``reference`` embeddings)."""
    from omnifer.train.plots import confusion_plot, reliability_diagram

    cfg = models[0].config
    check_expressions(labeled, cfg.expressions, "model")
    arrays = align_aus(labeled.arrays(), labeled.aus, cfg.aus)
    maker = BatchMaker(images, mean=cfg.mean, std=cfg.std, device=device)
    rows = np.arange(len(labeled))
    pred = predict_models([m.to(device) for m in models], maker, rows, batch_size=batch_size,
                          mc_passes=mc_dropout, mc_rate=mc_rate)
    result = task_metrics(pred, arrays, expressions=cfg.expressions, aus=cfg.aus)
    if not result:
        raise OmniferError(
            "the evaluation data has no label for any task the model predicts "
            f"({', '.join(cfg.tasks)}); evaluate on a labeled test set such as test.toml"
        )
    out_dir = Path(out_dir)
    files = {"metrics": out_dir / "metrics.json",
             "predictions": write_predictions(out_dir / "predictions.parquet", labeled, pred,
                                              cfg, reference)}
    if "expression" in result:
        m = arrays["expression_mask"]
        files["reliability"] = reliability_diagram(
            out_dir / "reliability.png", pred["expression_probs_raw"][m], arrays["expression"][m],
            probs_after=pred["expression_probs"][m])
        files["confusion"] = confusion_plot(
            out_dir / "confusion.png", np.asarray(result["expression"]["confusion"]),
            list(cfg.expressions))
    result["members"] = len(models)
    result["mc_dropout"] = mc_dropout
    result["samples"] = len(labeled)
    atomic_write_json(files["metrics"], result)
    result["files"] = {k: str(v) for k, v in files.items()}
    return result


def prediction_columns(pred: dict[str, np.ndarray], cfg: Any,
                       reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-sample columns of an :func:`ensemble` prediction by models of config ``cfg``: the
    predicted expression and its probability, the class probabilities, VA, AU probabilities
    and decisions, every uncertainty part and the out-of-distribution scores (the distance
    one with ``reference`` embeddings)."""
    from omnifer.train.ood import scores

    out: dict[str, np.ndarray] = {}
    if "expression_probs" in pred:
        probs = pred["expression_probs"]
        top = probs.argmax(1)
        out["predicted"] = np.asarray(cfg.expressions, dtype=object)[top]
        out["confidence"] = probs[np.arange(len(top)), top]
        out.update({f"p_{c}": probs[:, j] for j, c in enumerate(cfg.expressions)})
    if "va" in pred:
        out["valence"], out["arousal"] = pred["va"][:, 0], pred["va"][:, 1]
    if "au_probs" in pred:
        au, thr = pred["au_probs"], pred["au_thresholds"]
        out.update({f"{a}_prob": au[:, j] for j, a in enumerate(cfg.aus)})
        out.update({a: au[:, j] >= thr[j] for j, a in enumerate(cfg.aus)})
    unc = uncertainty(pred)
    out.update({f"uncertainty_{k}": v for k, v in unc.items()})
    out.update({f"ood_{k}": v for k, v in scores(pred, unc, reference).items()})
    return out


def write_predictions(path: Path, labeled: LabeledSet, pred: dict[str, np.ndarray],
                      cfg: Any, reference: np.ndarray | None = None) -> Path:
    """One row per sample, its id and then :func:`prediction_columns`, as Parquet."""
    import pandas as pd

    from omnifer.artifacts import atomic_path

    table = {"sample_id": labeled.table["sample_id"].to_numpy(),
             **prediction_columns(pred, cfg, reference)}
    with atomic_path(path) as tmp:
        pd.DataFrame(table).to_parquet(tmp, index=False)
    return path
