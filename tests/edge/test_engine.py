"""The node's engine on a real bundle: stock, cold start, unknown stores, reasons, and events
that change the very next answer."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.bundle import load_public_key
from edge.engine import Engine, Event


@pytest.fixture
def engine(edge_bundle, signing_keys) -> Engine:
    """A fresh engine per test: the tests apply events to it."""
    return Engine.load(edge_bundle, load_public_key(signing_keys[1]))


def busiest(engine: Engine) -> tuple[str, str]:
    """The shopper with the most baskets, and the store with the most items in stock."""
    user = int(np.argmax(np.diff(engine.history.user_ptr)))
    store = int(np.argmax(np.diff(engine.catalog.in_stock.indptr)))
    return str(engine.catalog.user_ids[user]), str(engine.catalog.store_ids[store])


def after_bundle(engine: Engine, days: float) -> datetime:
    return (engine.origin + timedelta(days=engine.cutoff_day + days)).replace(tzinfo=UTC)


def stocked(engine: Engine, store_id: str) -> set[str]:
    row = engine.catalog.in_stock[engine.store_index[store_id]]
    return set(engine.catalog.item_ids[row.indices].tolist())


def test_a_known_shopper_gets_k_items_in_stock_best_first_with_reasons(engine):
    user, store = busiest(engine)
    answer = engine.recommend(user, store, 10)
    assert answer.known_user and answer.known_store and answer.personalised
    assert len(answer.items) == 10 and len({r.item_id for r in answer.items}) == 10
    assert {r.item_id for r in answer.items} <= stocked(engine, store)
    scores = [r.score for r in answer.items]
    assert scores == sorted(scores, reverse=True)
    assert any(r.reason.startswith("you buy this") or r.reason == "you bought this before" for r in answer.items)


def test_an_unknown_shopper_gets_the_stores_popular_items(engine):
    _, store = busiest(engine)
    answer = engine.recommend("nobody-ever", store, 5)
    assert not answer.known_user and not answer.personalised and answer.known_store
    assert [r.reason for r in answer.items] == ["popular in this store"] * 5
    sales = engine.catalog.store_popularity[engine.store_index[store]]
    best = set(engine.catalog.item_ids[sales.indices[np.argsort(-sales.data)][:30]].tolist())
    assert {r.item_id for r in answer.items} <= best


def test_an_unknown_store_falls_back_to_global_popularity(engine):
    user, _ = busiest(engine)
    answer = engine.recommend(user, "no-such-store", 10)
    assert not answer.known_store and len(answer.items) == 10


def test_excluded_items_never_come_back(engine):
    user, store = busiest(engine)
    first = [r.item_id for r in engine.recommend(user, store, 10).items]
    again = [r.item_id for r in engine.recommend(user, store, 10, exclude=tuple(first[:3])).items]
    assert not set(first[:3]) & set(again) and len(again) == 10


def test_a_first_purchase_personalises_a_new_shopper_at_once(engine):
    _, store = busiest(engine)
    basket = [str(i) for i in engine.catalog.item_ids[engine.global_fill[:40:10]]]
    when = after_bundle(engine, 1)
    assert engine.apply([Event("new-shopper", item, "purchase", when, store, "b1") for item in basket]) == 4
    answer = engine.recommend("new-shopper", store, 10)
    assert answer.personalised and not answer.known_user
    assert {r.reason for r in answer.items if r.item_id in basket} == {"you bought this before"}


def test_a_purchase_moves_the_shoppers_own_candidates(engine):
    user, store = busiest(engine)
    at = after_bundle(engine, 0.5).timestamp()
    engine.recommend(user, store, at=at)  # the shopper is in memory
    before = engine._shoppers[user].ranked
    top = str(engine.catalog.item_ids[before.items[0]])
    engine.apply([Event(user, top, "purchase", after_bundle(engine, 0.5), store, "trip-1")])
    engine.recommend(user, store, at=at)
    after = engine._shoppers[user].ranked
    assert engine._shoppers[user].folds.rows.n_baskets == engine.generator.n_baskets[engine.user_index[user]] + 1
    assert after.count[list(after.items).index(before.items[0])] == before.count[0] + 1
    assert not np.array_equal(before.scores, after.scores)  # recency and counts changed, so the scores did


def test_a_cart_item_is_not_offered_again_and_brings_items_often_bought_with_it(engine):
    user, store = busiest(engine)
    in_store = stocked(engine, store)
    item = next(
        str(engine.catalog.item_ids[i])
        for i in np.flatnonzero(engine.co_purchase[:, 0] >= 0)
        if str(engine.catalog.item_ids[engine.co_purchase[i, 0]]) in in_store
        and str(engine.catalog.item_ids[i]) in in_store
    )
    engine.apply([Event(user, item, "add_to_cart", after_bundle(engine, 2), store)])
    answer = engine.recommend(user, store, 10)
    assert item not in {r.item_id for r in answer.items}
    title = engine.title(engine.item_index.get(item))
    assert f"often bought with {title}" in {r.reason for r in answer.items}


def test_events_older_than_the_bundle_change_nothing(engine):
    user, store = busiest(engine)
    old = after_bundle(engine, -30)
    assert engine.apply([Event(user, str(engine.catalog.item_ids[0]), "purchase", old - timedelta(days=1), store)]) == 0


@pytest.fixture
def logged_engine(edge_bundle, signing_keys, tmp_path):
    """An engine reading shoppers from a real event log, with room for 100 of them in memory."""
    from edge.events import EventLog

    log = EventLog(tmp_path / "events.db")
    engine = Engine.load(edge_bundle, load_public_key(signing_keys[1]), source=log.for_shopper, max_shoppers=100)
    return engine, log


def test_memory_holds_at_most_max_shoppers_and_the_rest_come_back_from_the_log(logged_engine):
    engine, log = logged_engine
    user, store = busiest(engine)
    top = engine.recommend(user, store, 10).items[0].item_id
    cart = [Event(user, top, "add_to_cart", after_bundle(engine, 1), store)]
    seqs = log.append(cart)
    assert engine.apply([Event(**{**vars(cart[0]), "seq": seqs[0]})]) == 1
    for j in range(300):
        engine.recommend(f"guest-{j}", store, 10)
    assert len(engine._shoppers) == 100 and user not in engine._shoppers
    assert top not in {r.item_id for r in engine.recommend(user, store, 10).items}  # read back from the log


def test_a_logged_event_is_applied_once_whether_read_or_pushed(logged_engine):
    engine, log = logged_engine
    user, store = busiest(engine)
    event = Event(user, str(engine.catalog.item_ids[0]), "view", after_bundle(engine, 1), store)
    seq = log.append([event])[0]
    engine.recommend(user, store, 10)  # reads the event from the log
    assert engine.apply([Event(**{**vars(event), "seq": seq})]) == 0
    assert engine._shoppers[user].version == 1


def test_generic_reasons_never_mention_the_shoppers_purchases_or_cart(edge_bundle, signing_keys):
    engine = Engine.load(edge_bundle, load_public_key(signing_keys[1]), personal_reasons=False)
    user, store = busiest(engine)
    first = engine.recommend(user, store, 100)
    engine.apply([Event(user, first.items[0].item_id, "add_to_cart", after_bundle(engine, 1), store)])
    reasons = {r.reason for r in first.items + engine.recommend(user, store, 100).items}
    assert "recommended for you" in reasons
    assert reasons <= {"recommended for you", "often bought together", "popular in this store", "popular with shoppers"}


def test_a_cart_item_comes_back_after_the_next_purchase(engine):
    user, store = busiest(engine)
    item = engine.recommend(user, store, 10).items[0].item_id
    engine.apply([Event(user, item, "add_to_cart", after_bundle(engine, 1), store)])
    assert item not in {r.item_id for r in engine.recommend(user, store, 10).items}
    other = str(engine.catalog.item_ids[engine.global_fill[0]])
    engine.apply([Event(user, other, "purchase", after_bundle(engine, 1.1), store, "trip")])
    assert item in {r.item_id for r in engine.recommend(user, store, 50).items}


def test_views_and_recent_items_bring_items_often_bought_with_them_and_stay_out_of_baskets(engine):
    user, store = busiest(engine)
    in_store = stocked(engine, store)
    viewed = next(
        str(engine.catalog.item_ids[i])
        for i in np.flatnonzero(engine.co_purchase[:, 0] >= 0)
        if str(engine.catalog.item_ids[engine.co_purchase[i, 0]]) in in_store
    )
    title = f"often bought with {engine.title(engine.item_index.get(viewed))}"
    assert title in {r.reason for r in engine.recommend(user, store, 10, recent=(viewed,)).items}  # ?recent=
    engine.apply([Event(user, viewed, "view", after_bundle(engine, 1), store)])
    assert title in {r.reason for r in engine.recommend(user, store, 10).items}
    assert engine._shoppers[user].baskets == {}  # a view is not a purchase


def test_answers_follow_the_request_time_and_are_reused_within_its_hour(engine):
    user, store = busiest(engine)
    hour = np.floor((engine.cutoff_day + 1) * 24) + 0.1  # a tenth into an hour after the bundle's data

    def at(hours: float) -> float:
        return engine.cutoff_at + ((hour + hours) / 24 - engine.cutoff_day) * 86400

    first = engine.recommend(user, store, 10, at=at(0))
    assert engine.recommend(user, store, 10, at=at(0.5)) == first  # the same hour: the ranked candidates are reused
    with engine._lock:
        assert engine._shoppers[user].ranked_key[1] == int(hour)
    month_later = engine.recommend(user, store, 10, at=at(30 * 24))
    assert [r.score for r in month_later.items] != [r.score for r in first.items]  # timing features moved
    with engine._lock:
        assert engine._shoppers[user].ranked_key[1] == int(hour) + 30 * 24


def test_the_bundles_arrays_are_mapped_from_its_files_not_copied_into_the_node(engine):
    """What keeps a node's private memory small: the per-shopper state, the similarity index and
    the histories are views of the bundle's files (read-only), not arrays the node allocated."""
    generator = engine.generator
    for array in (
        generator.counts.indices,
        generator.last_day,
        generator.cat_counts.data,
        generator.tifu.vectors.data,
        generator.tifu.similarity_index().indices,  # from the bundle, not rebuilt at load
        engine.history.items,
        engine.catalog.in_stock.indices,
        engine.co_purchase,
    ):
        assert not array.flags.owndata and not array.flags.writeable and array.flags.aligned


def test_purchases_folded_in_at_the_node_equal_a_refit_on_all_the_shoppers_baskets(engine):
    from tests.code.test_user_rows import assert_same_rows

    user, store = busiest(engine)
    row = engine.user_index[user]
    items = [str(i) for i in engine.catalog.item_ids[engine.generator.counts.row(row)[0][:4]]]
    trips = [("trip-1", 0.5, items[:2]), ("trip-2", 1.5, items[1:]), ("trip-2", 1.75, [items[0]])]
    engine.apply(
        [
            Event(user, item, "purchase", after_bundle(engine, day), store, key)
            for key, day, bought in trips
            for item in bought
        ]
    )
    engine.recommend(user, store, at=after_bundle(engine, 2).timestamp())

    def live() -> dict:
        baskets = engine._shoppers[user].baskets
        return {key: (day, frozenset(items)) for key, (day, items) in baskets.items()}

    folds = engine._shoppers[user].folds
    assert sorted(folds.baskets) == ["trip-1", "trip-2"] and folds.newest == "trip-2"
    assert_same_rows(folds.rows, engine._refit(row, live()).rows, neighbours=False)
    # a basket dated before one already folded in cannot be folded: the shopper is refitted
    engine.apply([Event(user, items[3], "purchase", after_bundle(engine, 0.25), store, "trip-0")])
    engine.recommend(user, store, at=after_bundle(engine, 2).timestamp())
    folds = engine._shoppers[user].folds
    assert folds.rows.n_baskets == engine.generator.n_baskets[row] + 3 and not engine._shoppers[user].unfolded
    assert_same_rows(folds.rows, engine._refit(row, live()).rows)


def test_discovery_slots_hold_items_new_to_the_shopper_and_the_best_of_the_rest(engine, edge_bundle, signing_keys):
    exploring = Engine.load(edge_bundle, load_public_key(signing_keys[1]), discovery_slots=2)
    user, store = busiest(engine)
    bought = {str(engine.catalog.item_ids[i]) for i in engine.generator.user_rows(engine.user_index[user]).items}
    plain, explored = (
        [r.item_id for r in e.recommend(user, store, 10, at=engine.cutoff_at).items] for e in (engine, exploring)
    )
    new_in_plain = sum(item not in bought for item in plain)
    assert new_in_plain < 2  # "buy again" fills this shopper's answer: the slots change it
    assert sum(item not in bought for item in explored) == max(2, new_in_plain) and len(explored) == 10
    known = [item for item in plain if item in bought]
    assert [item for item in explored if item in bought] == known[: 10 - max(2, new_in_plain)]
