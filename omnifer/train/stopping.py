"""Early stopping: when a run ends before its last epoch, and what it tells the user."""

from __future__ import annotations

import logging
from typing import Any

from omnifer.train.config import TrainConfig

log = logging.getLogger(__name__)

#: a cosine schedule above this share of its peak learning rate has not yet decayed
HIGH_RATE = 0.25


def should_stop(member: int, st: dict[str, Any], config: TrainConfig, rate: float) -> bool:
    """True when ``config.patience`` epochs in a row have not raised the validation score.

    ``st``: the member's state (``epoch``, ``bad_epochs``); ``rate``: the learning rate now, as
    a share of its peak. A stop while a cosine schedule is still above ``HIGH_RATE`` of its peak
    is a warning: the kept checkpoint never trained at a low rate, and on a noisy validation
    score such a stop comes by chance (docs/training.md).
    """
    if not config.patience or st["bad_epochs"] < config.patience:
        return False
    where = (f"member {member}: early stop after epoch {st['epoch']} of {config.epochs} "
             f"(best epoch {st['epoch'] - st['bad_epochs']}, --patience {config.patience})")
    if config.schedule == "cosine" and rate > HIGH_RATE:
        log.warning("%s with the learning rate still at %.0f%% of its peak; the kept checkpoint "
                    "never trained at a low rate: --patience 0 trains every epoch",
                    where, 100 * rate)
    else:
        log.info(where)
    return True
