"""What a federated training did, as the server saw it: per round and in total. The server saves
it as JSON beside the final model (`dataclasses.asdict`); `FederatedSummary.from_dict` reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from federated.task import FederatedSettings
from models.private_training import PrivateSteps


@dataclass(frozen=True)
class RoundRecord:
    """One server round. Round 0 is the random initial model (nothing trained or sent); None:
    not measured (ε and δ only in private runs)."""

    round: int
    validation_ndcg_at_10: float | None = None  # the global model on the central validation lists (0–1)
    nodes: int | None = None  # nodes that trained
    bytes_per_node: int | None = None  # largest upload of one node: its model weights (bytes)
    bytes_total: int | None = None  # every node's upload (bytes)
    epsilon: float | None = None  # privacy spent up to this round, at `delta`
    delta: float | None = None

    def metrics(self) -> dict[str, float | int]:
        """The numbers measured, by name (MLflow logs them as <split>_round_<name>)."""
        return {name: value for name, value in asdict(self).items() if name != "round" and value is not None}


@dataclass(frozen=True)
class FederatedSummary:
    """A federated training's rounds and privacy spend."""

    rounds: list[RoundRecord]  # round 0 first, then every trained round
    rounds_trained: int  # fewer than asked once the privacy budget is spent
    epsilon: float  # privacy spent over every round, at `delta` (0 without DP)
    delta: float
    private: bool  # the nodes trained with DP-SGD
    target_epsilon: float  # 0: no budget
    budget_spent: bool  # one more round like the last would have passed target_epsilon
    privacy_rounds: list[list[PrivateSteps]]  # what each node applied, per round: anyone can recompute ε
    settings: FederatedSettings

    @property
    def bytes_per_node(self) -> int:
        """Largest upload of one node in any round (bytes)."""
        return max((r.bytes_per_node or 0 for r in self.rounds), default=0)

    @classmethod
    def from_dict(cls, value: dict) -> FederatedSummary:
        """The summary from its `dataclasses.asdict` (the server's JSON)."""
        return cls(
            **value
            | {
                "rounds": [RoundRecord(**r) for r in value["rounds"]],
                "privacy_rounds": [[PrivateSteps(**s) for s in nodes] for nodes in value["privacy_rounds"]],
                "settings": FederatedSettings(**value["settings"]),
            }
        )
