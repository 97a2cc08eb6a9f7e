"""Distil the teacher into the smaller tiers: the same candidates and features, a small neural
ranker trained on the next-basket labels and on the teacher's scores of the same rows
(models.losses.distillation_loss)."""

from __future__ import annotations

import logging

import numpy as np

from models.ranker import CandidateRanker
from training.data import RankerData, RankerSpec, fit_ranker

log = logging.getLogger(__name__)

# Sizes (parameters, counted on the full Complete Journey catalog of 92k items):
#   balanced ≈ 2.3M: a 24-d embedding per item + a 256-wide MLP (a 512-wide one trained 4× slower
#   and scored below the edge student, distilled from the LightGBM teacher in a quick run);
#   edge ≈ 0.1M: 8-d embeddings of 8,192 hashed item buckets + a 256-wide MLP (int8 file ≈ 0.1 MB).
STUDENTS = {
    "balanced": dict(architecture=dict(hidden=256, item_dim=24, item_buckets=None, dropout=0.1)),
    "edge": dict(architecture=dict(hidden=256, item_dim=8, item_buckets=8192, dropout=0.0)),
}
DISTILL_WEIGHT = 0.5  # share of the loss on the teacher's scores; the rest is on the true next basket
TEMPERATURE = 1.0
LEARNING_RATE, WEIGHT_DECAY = 1e-3, 1e-5


def student_spec(name: str, epochs: int) -> RankerSpec:
    return RankerSpec(
        STUDENTS[name]["architecture"],
        lr=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        epochs=epochs,
        distill_weight=DISTILL_WEIGHT,
        temperature=TEMPERATURE,
    )


def distill(
    name: str, teacher_scores: np.ndarray, data: RankerData, epochs: int, seed: int = 0
) -> tuple[CandidateRanker, RankerSpec]:
    """Train student `name` on `data` against the labels and the teacher's scores of the same rows."""
    spec = student_spec(name, epochs)
    student, _ = fit_ranker(
        spec, data, seed=seed, teacher_scores=teacher_scores, label=f"distil {name} on {data.split.name}, seed {seed}"
    )
    log.info("distilled %s: %d parameters", name, student.param_count())
    return student, spec
