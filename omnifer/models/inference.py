"""Inference: raw predictions of one model on image rows (or of its dropout passes), the
mean of an ensemble's, and their uncertainty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from omnifer import metrics as M
from omnifer import uncertainty as U


@torch.inference_mode()
def predict(model: torch.nn.Module, maker: Any, rows: np.ndarray, *,
            batch_size: int = 256) -> dict[str, np.ndarray]:
    """Raw outputs of ``model`` on image rows: embedding, logits, VA values, as float32."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(rows), batch_size):
        out = model(maker(rows[start:start + batch_size]))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.inference_mode()
def mc_dropout(model: Any, maker: Any, rows: np.ndarray, *, passes: int,
               rate: float | None = None, batch_size: int = 256, seed: int = 0
               ) -> list[dict[str, np.ndarray]]:
    """Monte-Carlo dropout: ``passes`` predictions of ``model`` with dropout of ``rate``
    (default: the model's own) kept on the heads' input. The backbone runs once per batch."""
    from omnifer.errors import OmniferError

    rate = model.config.dropout if rate is None else float(rate)
    if passes < 1 or not 0.0 < rate < 1.0:
        raise OmniferError(f"MC dropout needs passes >= 1 and a rate in (0, 1), got {passes} "
                           f"passes at rate {rate}; pass e.g. --mc-dropout 20 --mc-rate 0.2")
    was_training = model.training
    model.eval()
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in range(passes)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(rows), batch_size):
            features = model.features(maker(rows[start:start + batch_size]))
            embedding = model.embedding_norm(features).float().cpu().numpy()
            for part in parts:
                h = torch.nn.functional.dropout(features, p=rate, training=True)
                out = {k: v.float().cpu().numpy() for k, v in model.head_outputs(h).items()}
                for key, value in {"embedding": embedding, **out}.items():
                    part.setdefault(key, []).append(value)
    model.train(was_training)
    return [{k: np.concatenate(v) for k, v in part.items()} for part in parts]


def predict_models(models: Sequence[Any], maker: Any, rows: np.ndarray, *,
                   batch_size: int = 256, mc_passes: int = 0, mc_rate: float | None = None
                   ) -> dict[str, np.ndarray]:
    """The :func:`ensemble` prediction of ``models`` on image rows; with ``mc_passes``
    dropout passes, every member contributes that many instead of one prediction."""
    if not mc_passes:
        return ensemble(models, [predict(m, maker, rows, batch_size=batch_size) for m in models])
    preds = [p for k, m in enumerate(models)
             for p in mc_dropout(m, maker, rows, passes=mc_passes, rate=mc_rate,
                                 batch_size=batch_size, seed=k)]
    return ensemble([m for m in models for _ in range(mc_passes)], preds)


def ensemble(models: Sequence[Any], preds: Sequence[dict[str, np.ndarray]]
             ) -> dict[str, np.ndarray]:
    """Mean predictions of ensemble members, each with its own temperature and AU thresholds.

    Keys: ``expression_probs`` (temperature scaled), ``expression_probs_raw`` (T = 1), ``va``,
    ``au_probs``, ``au_thresholds`` (mean of the members'), ``embedding`` (first member's), and
    the members' own probabilities for :func:`uncertainty`: ``expression_members`` [M, N, C]
    (temperature scaled), ``va_bins_members`` [M, N, 2, bins] (binned heads), ``au_members``
    [M, N, A].
    """
    out: dict[str, np.ndarray] = {"embedding": preds[0]["embedding"]}
    if "expression" in preds[0]:
        out["expression_members"] = np.stack(
            [M.softmax(p["expression"], temperature=m.config.temperature)
             for m, p in zip(models, preds)])
        out["expression_probs"] = out["expression_members"].mean(axis=0)
        out["expression_probs_raw"] = np.mean([M.softmax(p["expression"]) for p in preds], axis=0)
    if "va" in preds[0]:
        out["va"] = np.mean([p["va"] for p in preds], axis=0)
    if "va_logits" in preds[0]:
        out["va_bins_members"] = np.stack([M.softmax(p["va_logits"]) for p in preds])
    if "au" in preds[0]:
        out["au_members"] = np.stack([1.0 / (1.0 + np.exp(-p["au"])) for p in preds])
        out["au_probs"] = out["au_members"].mean(axis=0)
        n_aus = out["au_probs"].shape[1]
        out["au_thresholds"] = np.mean(
            [m.config.au_thresholds or (0.5,) * n_aus for m in models], axis=0)
    return out


def uncertainty(pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample uncertainty of an :func:`ensemble` prediction: ``{task}_{part}`` for the
    tasks it has (expression, va from bins, au) and the parts total, aleatoric, epistemic."""
    out: dict[str, np.ndarray] = {}
    for task, key, split in (("expression", "expression_members", U.decompose),
                             ("va", "va_bins_members", U.decompose),
                             ("au", "au_members", U.decompose_binary)):
        if key in pred and pred[key].shape[-1] > 0:
            out.update({f"{task}_{k}": v.astype(np.float32) for k, v in split(pred[key]).items()})
    return out
