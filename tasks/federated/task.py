"""What a federated node trains, and how the server scores a global model.

Each node trains the edge-sized ranker (`tasks.distill.STUDENTS["edge"]`) on candidate lists it
builds from its own stores' purchases only (`tasks.partition`). The server scores a global model
on the central validation lists. Settings: `DEFAULTS`, overridden by Flower's run config.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from data_contracts.completejourney import load_source
from data_contracts.validation import validate_dataset
from lightpersml import config
from models.candidates import FEATURE_NAMES, LabelledCandidates, labelled_candidates
from models.ranker import CandidateRanker
from models.training import ndcg_at_k, score
from tasks.distill import STUDENTS
from tasks.features import build_splits
from tasks.partition import node_splits
from tasks.train import RankerData, generator_settings, ranker_data

DEFAULTS = {
    "data": "completejourney",  # dataset source every node partitions (simulation); see README
    "num-server-rounds": 3,
    "local-epochs": 1,
    "local-weeks": 4,  # weekly cutoffs whose next baskets are a node's training lists
    "lr": 3e-3,
    "aggregation": "fedavg",  # fedavg | fedtrimmedavg | fedmedian | krum
    "model-path": "",  # where the server saves the final model (+ per-round JSON); "" saves nothing
}
TIFU_PARAMS = {"n_neighbors": 50, "group_size": 3}  # the nodes' own candidate generator (no central tuning)


def settings(run_config: dict, overrides: dict | None = None) -> dict:
    return {**DEFAULTS, **(overrides or {}), **dict(run_config)}


@lru_cache(maxsize=2)
def _dataset(source: str):
    clean, _ = validate_dataset(load_source(source), config.state_dir() / "reports" / "federated",
                                **vars(config.ValidationSettings()))
    return clean


@lru_cache(maxsize=8)
def node_data(source: str, n_nodes: int, node: int, weeks: int) -> RankerData:
    """Node `node`'s training lists, before the central test cutoff (cached per process)."""
    split = node_splits(_dataset(source), n_nodes, "test")[node]
    return ranker_data(split, weeks, generator_settings(TIFU_PARAMS))


@lru_cache(maxsize=2)
def central_validation(source: str) -> LabelledCandidates:
    """The server's scoring lists: every shopper's next basket after the validation cutoff."""
    dataset = _dataset(source)
    split = build_splits(dataset, dataset.content_hash(), config.state_dir() / "features")[0]["validation"]
    return labelled_candidates(split.history, split.cutoff_day, split.targets, TIFU_PARAMS,
                               item_groups=split.catalog.item_groups)


def catalog_size(source: str) -> int:
    """Items every node and the server index the same way (the shared items table)."""
    return len(_dataset(source).items)


def new_model(n_items: int) -> CandidateRanker:
    return CandidateRanker(n_features=len(FEATURE_NAMES), n_items=n_items, **STUDENTS["edge"]["architecture"])


def central_ndcg(model: CandidateRanker, source: str) -> float:
    lists = central_validation(source)
    return ndcg_at_k(score(model.eval(), lists), lists)


def save_model(model: CandidateRanker, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)
    return path
