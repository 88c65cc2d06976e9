"""Inference: raw predictions of one model on image rows, and the mean of an ensemble's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from omnifer import metrics as M


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


def ensemble(models: Sequence[Any], preds: Sequence[dict[str, np.ndarray]]
             ) -> dict[str, np.ndarray]:
    """Mean predictions of ensemble members, each with its own temperature and AU thresholds.

    Keys: ``expression_probs`` (temperature scaled), ``expression_probs_raw`` (T = 1), ``va``,
    ``au_probs``, ``au_thresholds`` (mean of the members'), ``embedding`` (first member's).
    """
    out: dict[str, np.ndarray] = {"embedding": preds[0]["embedding"]}
    if "expression" in preds[0]:
        out["expression_probs"] = np.mean(
            [M.softmax(p["expression"], temperature=m.config.temperature)
             for m, p in zip(models, preds)], axis=0)
        out["expression_probs_raw"] = np.mean([M.softmax(p["expression"]) for p in preds], axis=0)
    if "va" in preds[0]:
        out["va"] = np.mean([p["va"] for p in preds], axis=0)
    if "au" in preds[0]:
        out["au_probs"] = np.mean([1.0 / (1.0 + np.exp(-p["au"])) for p in preds], axis=0)
        n_aus = out["au_probs"].shape[1]
        out["au_thresholds"] = np.mean(
            [m.config.au_thresholds or (0.5,) * n_aus for m in models], axis=0)
    return out
