"""Similarity mining: class evidence for unlabeled pool faces from their labeled neighbours.

``omnifer.mining.engine`` holds the spec and the blocked exact/candidate engine;
``omnifer.mining.mine`` the whole mining (leak guard, held-out calibration, caps, recall of an
approximate index); ``output`` and ``report`` the mined dataset and the report. Importing this
package loads numpy only; faiss and torch load inside the functions that use them.
"""

from __future__ import annotations

from omnifer.mining.engine import (
    SCORES,
    Evidence,
    candidates_from_index,
    class_prototypes,
    evidence,
    near_duplicates,
    select,
)
from omnifer.mining.calibration import Calibration
from omnifer.mining.mine import MineConfig, MineResult, check_classes, mine

__all__ = [
    "SCORES",
    "Calibration",
    "MineConfig",
    "MineResult",
    "check_classes",
    "mine",
    "Evidence",
    "candidates_from_index",
    "class_prototypes",
    "evidence",
    "near_duplicates",
    "select",
]
