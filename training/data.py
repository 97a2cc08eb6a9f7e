"""Training data of every ranker, and training of the neural (student) rankers.

Every fit uses only the history of its split. On the temporal protocol, training lists are each
user's first basket in the week after weekly cutoffs before the split's cutoff, with candidates
and features computed from the baskets before that weekly cutoff, at the time that basket starts
(as a node asked then computes them). On the holdout protocol they are nested holdouts of the
split's history (`splits.holdout.nested_holdouts`), one per "week". The tuning fit also scores the
validation lists, likewise at their baskets' times.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from models.baskets import BasketHistory
from models.candidates import FEATURE_NAMES, CandidateGenerator, LabelledCandidates, labelled_candidates
from models.ranker import CandidateRanker
from models.training import train_ranker
from splits.holdout import nested_holdouts
from splits.temporal import Split

log = logging.getLogger(__name__)

WEEK_DAYS = 7.0


@dataclass
class RankerData:
    """What one fit of a ranker needs: training lists, optional validation lists, and the
    candidate generator fitted at the split's cutoff (serves the split's users)."""

    split: Split
    train: LabelledCandidates
    generator: CandidateGenerator
    validation: LabelledCandidates | None = None
    seconds: float = 0.0


@dataclass
class RankerSpec:
    """A neural ranker's architecture (CandidateRanker kwargs without sizes) and training settings."""

    architecture: dict
    lr: float
    weight_decay: float
    epochs: int
    distill_weight: float = 0.0
    temperature: float = 1.0

    def params(self) -> dict:
        return {
            **self.architecture,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "epochs": self.epochs,
            "distill_weight": self.distill_weight,
            "temperature": self.temperature,
        }


DISCOVERY_CANDIDATES = 100  # EASE candidates per shopper on data where nobody buys an item twice


def generator_settings(
    tifu_params: dict, discovery: bool = False, ease_l2: float | None = None, grocery_discovery: int = 0
) -> dict:
    """The candidate generator's parameters (defaults of models.candidates) around tuned TIFU-KNN,
    with EASE's best new items (l2 `ease_l2`, tuned on validation) as candidates: on data where
    nobody repeats (`discovery`, as `exclude_seen`) DISCOVERY_CANDIDATES of them and no repeat
    candidates (a node never shows them); on grocery `grocery_discovery` of them beside the
    repeat and neighbours' ones, for a node's discovery slots."""
    ease = {} if ease_l2 is None else {"ease_l2": ease_l2}
    if not discovery:
        return CandidateGenerator(tifu_params, n_discovery=grocery_discovery, **ease).params
    return CandidateGenerator(tifu_params, n_repeat=0, n_discovery=DISCOVERY_CANDIDATES, **ease).params


def ranker_data(
    split: Split,
    weeks: int,
    generator_settings: dict,
    with_validation: bool = False,
    generator: CandidateGenerator | None = None,
) -> RankerData:
    """Training lists of `weeks` rounds (`training_rounds`: all from the split's history),
    the generator fitted at the cutoff (`generator`, when already fitted so), and with_validation:
    the split's own target lists."""
    start = time.perf_counter()
    history, groups = split.history, split.catalog.item_groups
    options = {k: v for k, v in generator_settings.items() if k != "tifu_params"}

    def lists(round: TrainingRound) -> LabelledCandidates:
        return labelled_candidates(
            round.history,
            round.cutoff_day,
            round.targets,
            generator_settings["tifu_params"],
            groups,
            round.at,
            round.withheld,
            **options,
        )

    parts = [lists(round) for round in training_rounds(split, weeks)]
    if not parts:
        raise ValueError(
            f"{split.name} split: no user has a basket in the {weeks} weeks before {split.cutoff}; "
            "the rankers need at least one week of baskets after some history"
            if split.protocol == "temporal"
            else f"{split.name} split: no user has enough history to hold out from; the rankers need "
            "shoppers with several purchases"
        )
    if generator is None:
        generator = CandidateGenerator(**generator_settings).fit(history, split.cutoff_day, groups)
    validation = None
    if with_validation:
        validation = lists(TrainingRound(history, split.cutoff_day, split.targets, split.target_days()))
    data = RankerData(split, LabelledCandidates.concat(parts), generator, validation, time.perf_counter() - start)
    log.info(
        "%s: %d training lists (%d rows) from %d %s in %.1fs",
        split.name,
        len(data.train.basket_sizes),
        len(data.train.items),
        len(parts),
        "nested holdouts" if split.protocol == "holdout" else "weekly cutoffs",
        data.seconds,
    )
    return data


@dataclass
class TrainingRound:
    """One round of training lists: the history their candidates and features come from, its
    cutoff (days), the targets (user → items), each user's request day (None: the cutoff), and
    the items never offered to a user (user → items: their own lines outside the round)."""

    history: BasketHistory
    cutoff_day: float
    targets: dict[int, set[int]]
    at: dict[int, float] | None = None
    withheld: dict[int, set[int]] | None = None


def training_rounds(split: Split, weeks: int) -> list[TrainingRound]:
    """The first basket after each of `weeks` weekly cutoffs before the split's (temporal
    protocol), or `weeks` nested holdouts of its history in the split's order (holdout protocol)."""
    if split.protocol == "holdout":
        return [
            TrainingRound(held.history, split.cutoff_day, held.targets, withheld=held.skipped)
            for held in nested_holdouts(split.history, weeks, order=split.holdout_order)
        ]
    rounds = []
    for j in range(1, weeks + 1):
        cutoff = split.cutoff_day - j * WEEK_DAYS
        first = split.history.first_baskets_with_days(cutoff, cutoff + WEEK_DAYS)
        if first:
            targets = {user: items for user, (_, items) in first.items()}
            rounds.append(
                TrainingRound(split.history, cutoff, targets, {user: day for user, (day, _) in first.items()})
            )
    return rounds


def build_ranker(architecture: dict, n_items: int) -> CandidateRanker:
    return CandidateRanker(n_features=len(FEATURE_NAMES), n_items=n_items, **architecture)


def fit_ranker(
    spec: RankerSpec,
    data: RankerData,
    seed: int = 0,
    teacher_scores: np.ndarray | None = None,
    on_epoch=None,
    label: str | None = None,
) -> tuple[CandidateRanker, list[float]]:
    """Train a fresh neural ranker of `spec` on `data.train`, distilling a teacher's
    `teacher_scores` ((rows of data.train,)) when given.

    Returns the model and its per-epoch validation NDCG@10 (empty without validation lists).
    """
    torch.manual_seed(seed)
    model = build_ranker(spec.architecture, data.split.history.n_items)
    history = train_ranker(
        model,
        data.train,
        data.validation,
        spec.epochs,
        spec.lr,
        spec.weight_decay,
        seed=seed,
        on_epoch=on_epoch,
        teacher_scores=teacher_scores,
        distill_weight=spec.distill_weight,
        temperature=spec.temperature,
        label=label,
    )
    return model.eval(), history
