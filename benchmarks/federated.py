"""Federated training audits at full scale: a privacy table, membership inference and poisoning.

Privacy table (one row per architecture, all trained on the same shoppers: `holdout` of them, by
id hash, are held out of every training as the membership audit's non-members):
  - central: the edge-sized ranker trained on every member's lists in one place;
  - federated: the Flower app on `nodes` store groups, FedAvg, no DP;
  - federated + DP: the same with DP-SGD at every node until the target ε.
  Quality is NDCG@10 on the central test lists (every shopper's next basket after the test
  cutoff); ε at δ = 1/shoppers; bytes leaving each store per round (the weights it uploads).

Membership inference (loss threshold, Yeom et al. 2018): score each shopper by minus their mean
listwise loss on their lists at the training cutoffs; AUC of members against held-out shoppers
(0.5 = the model tells nothing). `membership_auc` uses the lists each architecture trained on (the
central lists; for federated models the nodes' own lists, features from each node's share of the
history); `membership_auc_central_lists` uses the central lists for all three.

Poisoning (`poison_nodes` nodes, 20 % of them attackers, no DP), per aggregation strategy:
  - sign-flip: attackers upload global − 10 × (their honest update);
  - target push (model replacement): attackers train to put one item first wherever it is a
    candidate and upload global + (nodes / attackers) × that update.
  Reported: NDCG@10 clean and under each attack, and the target's top-10 rate (the share of test
  lists holding it as a candidate that show it in the top 10).

  .venv/bin/python benchmarks/federated.py [--rounds 10] [--noise-multiplier 2.0] [--target-epsilon 8]
Writes benchmarks/results/federated-{privacy,poisoning}.{json,md} and one MLflow run in experiment
"federated-benchmarks".
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightpersml import config  # noqa: E402

config.apply_environment()

from flwr.app import Context, Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

import mlflow  # noqa: E402
from benchmarks._measure import write_results  # noqa: E402
from federated.client_app import local_update, reply  # noqa: E402
from federated.simulation import run_federated  # noqa: E402
from federated.task import TIFU_PARAMS, FederatedSettings, _dataset, held_out, new_model, node_data  # noqa: E402
from models.candidates import LabelledCandidates, labelled_candidates  # noqa: E402
from models.ranker import CandidateRanker  # noqa: E402
from models.training import ndcg_at_k, score, train_ranker  # noqa: E402
from splits.temporal import build_splits  # noqa: E402
from training.data import generator_settings, ranker_data  # noqa: E402

ATTACKS = ("sign-flip", "target-push")
N_ITEMS_MAX = 2**20  # bincount length for item indices (Complete Journey has 92,348)
SIGN_FLIP_SCALE = 10.0
PUSH_EPOCHS, PUSH_LR = 50, 0.03  # the attacker's own training: many strong steps on the few lists with the target


def per_list_loss(scores: np.ndarray, lists: LabelledCandidates) -> np.ndarray:
    """(n_lists,) listwise softmax loss of each list (NaN for a list without a positive)."""
    bounds = np.r_[0, np.cumsum(np.bincount(lists.group, minlength=len(lists.users)))]
    out = np.full(len(lists.users), np.nan)
    for g in range(len(lists.users)):
        s, y = scores[bounds[g] : bounds[g + 1]], lists.labels[bounds[g] : bounds[g + 1]]
        if y.sum():
            log_p = s - s.max() - np.log(np.exp(s - s.max()).sum())
            out[g] = -(log_p * y).sum() / y.sum()
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann–Whitney U / n₊n₋)."""
    ranks = np.argsort(np.argsort(np.r_[positive, negative], kind="stable"), kind="stable") + 1.0
    values = np.r_[positive, negative]
    for v in np.unique(values):  # average ranks of ties
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return float(
        (ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))
    )


def membership_auc(
    model: CandidateRanker, train_lists: LabelledCandidates, list_users: np.ndarray, holdout: float
) -> float:
    """Loss-threshold attack: members (shoppers trained on) against held-out shoppers."""
    losses = per_list_loss(score(model, train_lists), train_lists)
    users, slot = np.unique(list_users, return_inverse=True)
    valid = ~np.isnan(losses)
    mean_loss = np.bincount(slot[valid], losses[valid], len(users)) / np.maximum(
        np.bincount(slot[valid], minlength=len(users)), 1
    )
    has_lists = np.bincount(slot[valid], minlength=len(users)) > 0
    outside = held_out(users, holdout)
    return auc(-mean_loss[has_lists & ~outside], -mean_loss[has_lists & outside])


def target_rate(model: CandidateRanker, lists: LabelledCandidates, item: int) -> float:
    """Share of lists holding `item` as a candidate whose top 10 shows it."""
    scores = score(model, lists)
    bounds = np.r_[0, np.cumsum(np.bincount(lists.group, minlength=len(lists.users)))]
    shown = holding = 0
    for g in range(len(lists.users)):
        rows = slice(bounds[g], bounds[g + 1])
        where = np.flatnonzero(lists.items[rows] == item)
        if len(where):
            holding += 1
            top = np.argsort(-scores[rows], kind="stable")[:10]
            shown += int(where[0] in top)
    return shown / max(holding, 1)


def push_lists(train: LabelledCandidates, item: int) -> LabelledCandidates:
    """The lists holding `item`, relabelled so that `item` is the only positive."""
    holding = np.unique(train.group[train.items == item])
    lists = train.subset(holding)
    return LabelledCandidates(
        lists.features,
        lists.items,
        lists.group,
        (lists.items == item).astype(np.float32),
        np.ones(len(holding), np.int64),
        lists.users,
    )


def attacking_client_app(settings: FederatedSettings, attackers: set[int], attack: str, item: int) -> ClientApp:
    """Honest nodes run the product's local update; `attackers` poison theirs (parameters only; the
    standardisation buffers they send are their honest local ones)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = FederatedSettings.from_run_config(context.run_config, settings)
        model, data, metrics = local_update(msg, context, cfg)
        if int(context.node_config["partition-id"]) in attackers:
            start = msg.content["arrays"].to_torch_state_dict()
            n_nodes = int(context.node_config["num-partitions"])
            state = model.state_dict()  # honest update and standardisation buffers
            if attack == "target-push":
                torch.manual_seed(1)
                pushed = new_model(data.n_items)
                pushed.load_state_dict(start)
                train_ranker(pushed, push_lists(data.train, item), None, PUSH_EPOCHS, PUSH_LR)
                state |= {name: p.detach() for name, p in pushed.named_parameters()}
                scale = n_nodes / len(attackers)
            else:
                scale = -SIGN_FLIP_SCALE
            for name, _ in model.named_parameters():
                state[name] = start[name] + scale * (state[name] - start[name])
            model.load_state_dict(state)
        return reply(msg, model, metrics)

    return app


def pick_target(attacker: LabelledCandidates, test_lists: LabelledCandidates) -> int:
    """The attack's target: an item the attacker sees as a candidate in ≥ 5 % of its lists and that
    is a candidate in ≥ 5 % of the test lists (so the attack can show), bought least often."""

    def share(lists: LabelledCandidates) -> np.ndarray:
        return np.bincount(lists.items, minlength=N_ITEMS_MAX) / len(lists.basket_sizes)

    bought = np.bincount(attacker.items, weights=attacker.labels, minlength=N_ITEMS_MAX)
    held = np.bincount(attacker.items, minlength=N_ITEMS_MAX)
    common = np.flatnonzero((share(attacker) >= 0.05) & (share(test_lists) >= 0.05))
    if not len(common):
        raise ValueError("no item is a candidate in ≥ 5 % of both the attacker's and the test lists")
    return int(common[np.argmin(bought[common] / held[common])])


def federated(settings: FederatedSettings, nodes: int, folder: Path, client_app=None):
    return run_federated(settings, nodes, folder / f"model-{time.monotonic_ns()}.pt", client_app)


def main(
    rounds: Annotated[int, typer.Option(help="server rounds")] = 10,
    nodes: Annotated[int, typer.Option(help="nodes of the privacy table")] = 8,
    noise_multiplier: Annotated[float, typer.Option()] = 2.0,
    target_epsilon: Annotated[float, typer.Option()] = 8.0,
    dp_lr: Annotated[float, typer.Option(help="learning rate of the DP run")] = FederatedSettings().private_lr,
    holdout: Annotated[float, typer.Option(help="share of shoppers held out (membership audit)")] = 0.2,
    central_epochs: Annotated[int, typer.Option()] = 4,
    poison_nodes: Annotated[int, typer.Option(help="nodes of the poisoning runs; 20 % attack")] = 10,
    poison_rounds: Annotated[int, typer.Option()] = 5,
    parts: Annotated[str, typer.Option(help="privacy, poisoning or both")] = "privacy,poisoning",
    suffix: Annotated[str, typer.Option(help="appended to the result files' names")] = "",
) -> None:
    config.apply_environment()
    source, weeks = "completejourney", FederatedSettings().local_weeks
    dataset = _dataset(source)
    test = build_splits(dataset, dataset.content_hash(), config.state_dir() / "features")[0]["test"]
    test_lists = labelled_candidates(
        test.history, test.cutoff_day, test.targets, TIFU_PARAMS, item_groups=test.catalog.item_groups
    )
    ndcg = lambda model: round(ndcg_at_k(score(model, test_lists), test_lists), 4)  # noqa: E731
    mlflow.set_tracking_uri(config.mlflow_tracking_uri())
    mlflow.set_experiment("federated-benchmarks")
    with mlflow.start_run(run_name="federated audits"), tempfile.TemporaryDirectory(dir=config.state_dir()) as tmp:
        folder = Path(tmp)
        mlflow.log_params(
            {
                "rounds": rounds,
                "nodes": nodes,
                "noise_multiplier": noise_multiplier,
                "target_epsilon": target_epsilon,
                "dp_lr": dp_lr,
                "holdout": holdout,
                "central_epochs": central_epochs,
                "poison_nodes": poison_nodes,
                "poison_rounds": poison_rounds,
            }
        )
        if "privacy" in parts:
            central = ranker_data(test, weeks, generator_settings(TIFU_PARAMS)).train
            list_users = test.catalog.user_ids[central.users]
            members = np.flatnonzero(~held_out(list_users, holdout))
            start = time.perf_counter()
            model = new_model(test.history.n_items)
            torch.manual_seed(0)
            train_ranker(model, central.subset(members), None, central_epochs, FederatedSettings().lr)
            own = round(membership_auc(model, central, list_users, holdout), 4)
            node_lists = [node_data(source, nodes, n, weeks) for n in range(nodes)]
            stored = LabelledCandidates.concat([d.train for d in node_lists])  # what the nodes train on
            stored_users = np.concatenate([d.list_users for d in node_lists])
            rows = [
                {
                    "architecture": "central",
                    "ndcg_at_10": ndcg(model),
                    "epsilon": "∞ (no DP)",
                    "membership_auc": own,
                    "membership_auc_central_lists": own,
                    "bytes_per_store_per_round": "all raw events",
                    "rounds": "-",
                    "seconds": round(time.perf_counter() - start),
                }
            ]
            for name, dp in (
                ("federated", {}),
                (
                    "federated + DP",
                    {"noise_multiplier": noise_multiplier, "target_epsilon": target_epsilon, "private_lr": dp_lr},
                ),
            ):
                result = federated(
                    FederatedSettings(num_server_rounds=rounds, holdout_share=holdout, **dp), nodes, folder
                )
                rows.append(
                    {
                        "architecture": name,
                        "ndcg_at_10": ndcg(result.model),
                        "epsilon": round(result.summary.epsilon, 2) if dp else "∞ (no DP)",
                        "membership_auc": round(membership_auc(result.model, stored, stored_users, holdout), 4),
                        "membership_auc_central_lists": round(
                            membership_auc(result.model, central, list_users, holdout), 4
                        ),
                        "bytes_per_store_per_round": result.summary.bytes_per_node,
                        "rounds": result.summary.rounds_trained,
                        "seconds": round(result.seconds),
                    }
                )
                print(rows[-1], flush=True)
            delta = 1 / len(dataset.users)
            for row in rows:
                mlflow.log_metrics(
                    {
                        f"{row['architecture'].replace(' + ', '_')}_{k}": float(v)
                        for k, v in row.items()
                        if isinstance(v, (int, float))
                    }
                )
            path = write_results(
                f"federated-privacy{suffix}",
                {
                    "rows": rows,
                    "delta": delta,
                    "holdout": holdout,
                    "rounds": rounds,
                    "nodes": nodes,
                    "noise_multiplier": noise_multiplier,
                },
                rows,
            )
            mlflow.log_artifact(str(path))
            mlflow.log_artifact(str(path.with_suffix(".json")))
        if "poisoning" in parts:
            attackers = set(range(poison_nodes - max(1, poison_nodes // 5), poison_nodes))
            item = pick_target(node_data(source, poison_nodes, min(attackers), weeks).train, test_lists)
            rows = []
            for aggregation in ("fedavg", "fedtrimmedavg", "fedmedian", "krum"):
                base = FederatedSettings(
                    num_server_rounds=poison_rounds, aggregation=aggregation, krum_malicious_nodes=len(attackers)
                )
                clean = federated(base, poison_nodes, folder).model
                row = {
                    "aggregation": aggregation,
                    "clean_ndcg_at_10": ndcg(clean),
                    "clean_target_top10_rate": round(target_rate(clean, test_lists, item), 4),
                }
                for attack in ATTACKS:
                    app = attacking_client_app(base, attackers, attack, item)
                    attacked = federated(base, poison_nodes, folder, app).model
                    row[f"{attack}_ndcg_at_10"] = ndcg(attacked)
                    row[f"{attack}_ndcg_share_of_clean"] = round(
                        row[f"{attack}_ndcg_at_10"] / row["clean_ndcg_at_10"], 3
                    )
                    if attack == "target-push":
                        row["target-push_target_top10_rate"] = round(target_rate(attacked, test_lists, item), 4)
                rows.append(row)
                print(row, flush=True)
                mlflow.log_metrics(
                    {
                        f"{aggregation}_{k}".replace("-", "_"): float(v)
                        for k, v in row.items()
                        if isinstance(v, (int, float))
                    }
                )
            path = write_results(
                f"federated-poisoning{suffix}",
                {
                    "rows": rows,
                    "attackers": sorted(attackers),
                    "nodes": poison_nodes,
                    "target_item": item,
                    "sign_flip_scale": SIGN_FLIP_SCALE,
                    "rounds": poison_rounds,
                },
                rows,
            )
            mlflow.log_artifact(str(path))
            mlflow.log_artifact(str(path.with_suffix(".json")))


if __name__ == "__main__":
    typer.run(main)
