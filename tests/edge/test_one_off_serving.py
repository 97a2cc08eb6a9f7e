"""A one-off shop's EASE bundle served by the engine: MovieLens-100k on a per-user holdout."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import load_public_key
from edge.engine import Engine
from evaluation.served import serve_and_score, signed_bundle, signing_keys
from models.candidates import CandidateGenerator
from models.scorers import FEATURES, scorer_spec
from models.tier_bundle import ServingData, TierScorer
from splits.holdout import holdout_splits


@pytest.fixture(scope="module")
def ease_bundle(movielens, tmp_path_factory):
    split = holdout_splits(movielens, order="random", seed=0)["test"]
    generator = CandidateGenerator({}, n_discovery=50, ease_l2=300.0)
    generator.fit(split.history, split.cutoff_day, split.catalog.item_groups)
    data = ServingData.of(
        generator, split.catalog, split.history, movielens.items, split.origin, split.cutoff, True, "movielens"
    )
    ease = TierScorer("ease", scorer_spec(FEATURES, ["ease_score"]))
    return signed_bundle(data, ease, tmp_path_factory.mktemp("ease") / "bundle", {}), split, generator


def test_the_engine_answers_eases_best_unseen_films_saying_which_film_led_to_each(ease_bundle):
    folder, split, generator = ease_bundle
    engine = Engine.load(folder, load_public_key(signing_keys()[1]))
    user = sorted(split.targets)[0]
    seen = generator.user_rows(user).items
    answer = engine.recommend(str(split.catalog.user_ids[user]), None, 10)
    shown = [engine.item_index.get(r.item_id) for r in answer.items]
    scores = generator.ease.scores(seen)
    scores[seen] = -np.inf
    assert shown == np.argsort(-scores, kind="stable")[:10].tolist()  # EASE's top 10, nothing seen
    titles = {engine.title(int(i)) for i in seen}
    for reason in (r.reason for r in answer.items):
        assert (
            reason.startswith("people who bought ")
            and reason.removeprefix("people who bought ").removesuffix(" bought this") in titles
        )


def test_the_ease_bundle_scores_as_offline_ease_does_on_the_held_out_films(ease_bundle):
    folder, split, _ = ease_bundle
    assert serve_and_score(folder, split).metrics["ndcg_at_10"] > 0.32  # EASE offline on this split: 0.342
