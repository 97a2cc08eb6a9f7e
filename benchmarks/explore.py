"""How much "explore" recall simple discovery scorers reach, with 1, 2, 3 or all 10 slots.

Explore recall@m: the share of a user's new-to-them target items found among the m best items
they never bought, averaged over users whose target basket has a new item (as in models.metrics).
This is the ceiling a tier faces when it gives m of its 10 slots to discovery.

Run after a pipeline run of that profile (it reads the cached splits and the tuned TIFU-KNN study):
  .venv/bin/python benchmarks/explore.py [--split validation|test] [--profile full]
Writes benchmarks/results/explore-<split>.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import optuna
import scipy.sparse as sp
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightpersml import config  # noqa: E402

config.apply_environment()

from benchmarks._measure import write_results  # noqa: E402
from data_contracts.sources import load_source  # noqa: E402
from data_contracts.validation import validate_dataset  # noqa: E402
from models.baselines import TIFUKNN  # noqa: E402
from models.ranking import top_k  # noqa: E402
from splits.temporal import Split, build_splits  # noqa: E402

SLOTS = (1, 2, 3, 10)


def explore_scorers(split: Split, tifu_params: dict, users: np.ndarray) -> dict[str, np.ndarray]:
    """(len(users), n_items) scores per discovery scorer; higher is better."""
    history = split.history
    counts = history.user_item_counts()
    popularity = history.item_basket_counts().astype(np.float32)
    line_day = history.basket_day[history.line_baskets()]
    recent = np.bincount(history.items[line_day >= split.cutoff_day - 28], minlength=history.n_items).astype(np.float32)
    tifu = TIFUKNN(**tifu_params).fit(history)
    groups = split.catalog.item_groups
    n_groups = int(groups.max()) + 1
    group_of = np.where(groups >= 0, groups, n_groups)
    user_group = np.zeros((len(users), n_groups + 1), np.float32)
    bought = counts[users].tocoo()
    np.add.at(user_group, (bought.row, group_of[bought.col]), 1.0)
    user_group /= np.maximum(user_group.sum(1, keepdims=True), 1)
    lines = history.line_baskets()
    baskets = sp.csr_matrix(
        (np.ones(len(lines), np.float32), (lines, history.items)), shape=(history.n_baskets, history.n_items)
    )
    baskets.data[:] = 1
    together = (baskets.T @ baskets).tocsr()
    together.setdiag(0)
    return {
        "global popularity (G-TopFreq)": np.broadcast_to(popularity, (len(users), history.n_items)),
        "popularity, last 28 days": np.broadcast_to(recent, (len(users), history.n_items)),
        "TIFU-KNN neighbours (the tiers' explore candidates)": tifu.score(users),
        "user's category share × popularity": user_group[:, group_of] * popularity,
        "co-purchase with the user's items": (tifu.vectors.to_scipy()[users] @ together).toarray()
        / np.sqrt(popularity + 1),
    }


def explore_recall(split: Split, users: np.ndarray, scores: np.ndarray, slots: int) -> float:
    counts = split.history.user_item_counts()
    seen = counts[users].toarray() > 0
    best, _ = top_k(np.where(seen, -np.inf, scores), slots)
    recalls = []
    for row, user in enumerate(users):
        new = split.targets[user] - set(counts.indices[counts.indptr[user] : counts.indptr[user + 1]].tolist())
        if new:
            recalls.append(len(new & set(best[row].tolist())) / len(new))
    return float(np.mean(recalls))


def main(
    split: Annotated[str, typer.Option(help="validation or test")] = "validation",
    profile: Annotated[str, typer.Option(help="profile whose TIFU-KNN study to use")] = "full",
) -> None:
    settings = config.PROFILES[profile]
    with tempfile.TemporaryDirectory() as report_dir:
        clean, _ = validate_dataset(
            load_source("completejourney"), Path(report_dir), **vars(config.ValidationSettings())
        )
    data_hash = clean.content_hash()
    splits, _ = build_splits(
        clean, data_hash, config.state_dir() / "features", settings.test_weeks, settings.validation_weeks
    )
    study_name = f"tifu_knn-{data_hash}-{splits['validation'].cutoff:%Y%m%d}-x0"
    storage = f"sqlite:///{config.state_dir() / 'optuna' / 'optuna.db'}"
    try:
        tifu_params = optuna.load_study(study_name=study_name, storage=storage).best_params
    except KeyError:
        raise SystemExit(f"no TIFU-KNN study {study_name}: run `lightpersml run --profile {profile}` first") from None
    chosen = splits[split]
    users = np.array(sorted(chosen.targets))
    table = []
    for name, scores in explore_scorers(chosen, tifu_params, users).items():
        table.append(
            {
                "scorer": name,
                **{f"explore recall@{m}": round(explore_recall(chosen, users, scores, m), 4) for m in SLOTS},
            }
        )
        print(table[-1], flush=True)
    path = write_results(
        f"explore-{split}", {"split": split, "users": len(users), "tifu_params": tifu_params, "scorers": table}, table
    )
    print(path.read_text())


if __name__ == "__main__":
    typer.run(main)
