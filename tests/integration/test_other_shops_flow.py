"""The training flow on other shops' data, each in this module's own project home so their
registered versions never move the `candidate` alias the Complete Journey run in
test_training_flow.py checks: a shop where nobody repeats an item, and a raw export with voids
and unknown items."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from lightpersml.cli import app
from tests.integration.test_training_flow import TIERS, child_runs

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_data_that_nobody_repeats_runs_and_excludes_seen_items(prefect_api, one_off_purchases, tmp_path):
    """A ratings-like export (`event_type` = rating): refused with the option that maps it, then
    trained with the mapping."""
    from flows.train import training_flow

    ratings = tmp_path / "ratings"
    shutil.copytree(one_off_purchases, ratings)
    pd.read_csv(ratings / "events.csv", dtype=str).assign(event_type="rating").to_csv(
        ratings / "events.csv", index=False
    )
    refused = runner.invoke(app, ["validate", str(ratings)])
    assert refused.exit_code == 1 and "--event-type TYPE=purchase" in refused.output
    result = training_flow(data=str(ratings), profile="smoke", event_types={"rating": "purchase"})
    children = child_runs(result.run_id)
    assert sorted(r.data.tags["tier"] for r in children) == sorted([*TIERS, "ease"])  # EASE is a baseline here
    assert all(r.data.params["exclude_seen"] == "True" and r.data.params["protocol"] == "holdout" for r in children)
    # The logged model is the evaluation fit of the holdout protocol: it knows every rating but
    # each shopper's newest tenth, and must never recommend one it knows.
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from lightpersml import config
    from splits.holdout import holdout_splits

    settings = config.ValidationSettings(event_types=(("rating", "purchase"),))
    dataset, _ = validate_dataset(load_source(str(ratings)), tmp_path / "report", **vars(settings))
    test = holdout_splits(dataset)["test"]
    ids, items = test.catalog.user_ids, test.catalog.item_ids
    users = [str(ids[u]) for u in sorted(test.targets)[:10]]
    known = {(str(ids[u]), str(items[i])) for u, seen in test.seen_items().items() for i in seen}
    (tmp_path / "u.txt").write_text("\n".join(users))
    out = tmp_path / "recs.parquet"
    for tier in ("p_topfreq", "ease", "edge"):
        outcome = runner.invoke(
            app, ["recommend", "--model", tier, "--requests", str(tmp_path / "u.txt"), "--out", str(out)]
        )
        assert outcome.exit_code == 0, outcome.output
        recs = pd.read_parquet(out)
        assert len(recs) == 100 and not any((u, i) in known for u, i in zip(recs["user_id"], recs["item_id"])), tier


def test_a_raw_shop_export_trains_with_its_voids_and_unknown_items_quarantined(prefect_api, tmp_path):
    """The Complete Journey's raw transactions (every 15th household) without the adapter's cleaning."""
    import json

    from flows.train import training_flow
    from tests.data.raw_export import write_raw_export

    folder = write_raw_export(tmp_path / "raw-export", every_nth_household=15)
    result = training_flow(data=str(folder), profile="smoke")
    report = json.loads(open(result.validation_report).read())
    checks = {f["check"]: f["unexpected_count"] for f in report["findings"] if f["table"] == "events"}
    assert (
        report["passed"] and checks["item_id_in_items_table"] > 0 and checks["expect_column_values_to_be_between"] > 0
    )
    assert report["quarantined"]["events"] >= max(
        checks["item_id_in_items_table"], checks["expect_column_values_to_be_between"]
    )
    assert {row.tier for row in result.tiers} >= {"tifu_knn", "edge"} and all(
        0 <= row.ndcg_at_10 <= 1 for row in result.tiers
    )
