"""The server: aggregates the nodes' weights with the configured strategy, accounts the privacy
budget of differentially private rounds and stops when the next round would pass the target ε,
and scores every round's global model on the central validation lists.

Per round it records validation NDCG@10, ε and δ, and the bytes each node sent (`RoundRecord`);
they go to the MLflow run `mlflow_run_id` (when set) as the round ends, named
<split>_round_<name>, and with the final model to `model_path` (its `FederatedSummary` as JSON
beside it).
"""

from __future__ import annotations

from lightpersml import config

config.apply_environment()  # a Flower entry point: the quiet environment before flwr loads

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

import mlflow
from federated.privacy import PrivacyLedger
from federated.summary import FederatedSummary, RoundRecord
from federated.task import FederatedSettings, central_ndcg, new_model, server_data
from models.private_training import PrivateSteps
from training.export import save_torch

log = logging.getLogger(__name__)

STRATEGIES = {"fedavg": FedAvg, "fedtrimmedavg": FedTrimmedAvg, "fedmedian": FedMedian, "krum": Krum}


def upload_bytes(reply: Message) -> int:
    """Bytes of model weights a node sent (the payload that leaves the store)."""
    return sum(len(array.data) for record in reply.content.array_records.values() for array in record.values())


def log_round(run_id: str, prefix: str, record: RoundRecord) -> None:
    """Log a round's numbers to MLflow run `run_id` (no-op for "") as `prefix`_round_<name>, step = round."""
    if run_id:
        client = mlflow.MlflowClient(config.mlflow_tracking_uri())
        for key, value in record.metrics().items():
            client.log_metric(run_id, f"{prefix}_round_{key}", float(value), step=record.round)


def audited(strategy: type, ledger: PrivacyLedger, rounds: dict[int, RoundRecord], private: bool) -> type:
    """`strategy` that records each round's upload sizes and (when `private`) every node's DP-SGD
    steps before aggregating, and sends no more training rounds once the ledger's budget is spent.
    A round with a failed node, or a node that reports no private steps in a private run, fails."""

    class Audited(strategy):
        def configure_train(self, server_round: int, arrays: ArrayRecord, config, grid: Grid) -> Iterable[Message]:
            return [] if ledger.spent else super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, replies: Iterable[Message]):
            replies = list(replies)
            if ledger.spent and not replies:  # no round was sent
                return None, None
            failed = [
                f"node {reply.metadata.src_node_id}: {reply.error.reason}" for reply in replies if reply.has_error()
            ]
            if failed or not replies:  # a partial model must not be released
                raise RuntimeError(f"round {server_round}: " + ("; ".join(failed) or "no node answered"))
            sizes = [upload_bytes(reply) for reply in replies]
            record = RoundRecord(server_round, nodes=len(replies), bytes_per_node=max(sizes), bytes_total=sum(sizes))
            metrics = [reply.content["metrics"] for reply in replies]
            if private:
                if not all("dp-steps" in m for m in metrics):
                    raise RuntimeError(f"round {server_round}: a node reported no private steps in a private run")
                epsilon = ledger.record(
                    [
                        PrivateSteps(float(m["dp-noise-multiplier"]), float(m["dp-sample-rate"]), int(m["dp-steps"]))
                        for m in metrics
                    ]
                )
                record = replace(record, epsilon=epsilon, delta=ledger.delta)
            rounds[server_round] = record
            return super().aggregate_train(server_round, replies)

    return Audited


def make_server_app(base: FederatedSettings | None = None, output_path: Path | None = None) -> ServerApp:
    """The server with `base` settings (default: the defaults) under Flower's run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = FederatedSettings.from_run_config(context.run_config, base)
        n_nodes = len(list(grid.get_node_ids()))
        shared = server_data(cfg.data)
        delta = cfg.delta or 1 / shared.n_users
        ledger = PrivacyLedger(delta, cfg.target_epsilon)
        rounds: dict[int, RoundRecord] = {}
        options = {"num_malicious_nodes": cfg.krum_malicious_nodes} if cfg.aggregation == "krum" else {}
        strategy = audited(STRATEGIES[cfg.aggregation], ledger, rounds, cfg.private)(
            fraction_evaluate=0.0, min_train_nodes=n_nodes, min_available_nodes=n_nodes, **options
        )
        model = new_model(shared.n_items, cfg.private)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round and server_round not in rounds:  # budget spent: no training this round
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            record = replace(
                rounds.get(server_round, RoundRecord(server_round)),
                validation_ndcg_at_10=central_ndcg(model, cfg.data),
            )
            rounds[server_round] = record
            log_round(cfg.mlflow_run_id, cfg.split, record)
            return MetricRecord(record.metrics())

        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.num_server_rounds,
            evaluate_fn=evaluate,
        )
        model.load_state_dict(result.arrays.to_torch_state_dict())
        epsilon = ledger.epsilon()
        if ledger.target_epsilon and epsilon > ledger.target_epsilon:
            log.error(
                "ε = %.2f passes the target %.2f: a single round costs more; raise noise-multiplier",
                epsilon,
                ledger.target_epsilon,
            )
        output = Path(cfg.model_path) if cfg.model_path else output_path
        if output is not None:
            save_torch(model, output)
            summary = FederatedSummary(
                rounds=[rounds[r] for r in sorted(rounds)],
                rounds_trained=sum(r > 0 for r in rounds),
                epsilon=epsilon,
                delta=delta,
                private=cfg.private,
                target_epsilon=ledger.target_epsilon,
                budget_spent=ledger.spent,
                privacy_rounds=ledger.rounds,
                settings=cfg,
            )
            output.with_suffix(".json").write_text(json.dumps(asdict(summary), indent=1))

    return app


app = make_server_app()
