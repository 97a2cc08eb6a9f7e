"""The server: aggregates the nodes' weights with the configured strategy, accounts the privacy
budget of differentially private rounds and stops when the next round would pass the target ε,
and scores every round's global model on the central validation lists.

Per round it records validation NDCG@10, ε and δ, and the bytes each node sent; they go to the
MLflow run `mlflow-run-id` (when set) as the round ends, named <split>_round_<name>, and with the
final model to `model-path` (JSON beside it).
"""

from __future__ import annotations

from lightpersml import config

config.apply_environment()  # a Flower entry point: the quiet environment before flwr loads

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

import mlflow
from federated.privacy import PrivacyLedger
from federated.task import central_ndcg, new_model, private, server_data, settings
from models.private_training import PrivateSteps
from training.export import save_torch

log = logging.getLogger(__name__)

STRATEGIES = {"fedavg": FedAvg, "fedtrimmedavg": FedTrimmedAvg, "fedmedian": FedMedian, "krum": Krum}


def upload_bytes(reply: Message) -> int:
    """Bytes of model weights a node sent (the payload that leaves the store)."""
    return sum(len(array.data) for record in reply.content.array_records.values() for array in record.values())


def log_round(run_id: str, prefix: str, server_round: int, record: dict) -> None:
    """Log a round's numbers to MLflow run `run_id` (no-op for "") as `prefix`_round_<name>, step = round."""
    if run_id:
        client = mlflow.MlflowClient(config.mlflow_tracking_uri())
        for key, value in record.items():
            client.log_metric(run_id, f"{prefix}_round_{key}", float(value), step=server_round)


def audited(strategy: type, ledger: PrivacyLedger, rounds: dict, private: bool) -> type:
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
            record = {"nodes": len(replies), "bytes_per_node": max(sizes), "bytes_total": sum(sizes)}
            metrics = [reply.content["metrics"] for reply in replies]
            if private:
                if not all("dp-steps" in m for m in metrics):
                    raise RuntimeError(f"round {server_round}: a node reported no private steps in a private run")
                record["epsilon"] = ledger.record(
                    [
                        PrivateSteps(float(m["dp-noise-multiplier"]), float(m["dp-sample-rate"]), int(m["dp-steps"]))
                        for m in metrics
                    ]
                )
                record["delta"] = ledger.delta
            rounds[server_round] = record
            return super().aggregate_train(server_round, replies)

    return Audited


def make_server_app(overrides: dict | None = None, output_path: Path | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = settings(context.run_config, overrides)
        n_nodes = len(list(grid.get_node_ids()))
        shared = server_data(cfg["data"])
        delta = float(cfg["delta"]) or 1 / shared.n_users
        ledger = PrivacyLedger(delta, float(cfg["target-epsilon"]))
        rounds: dict[int, dict] = {}
        options = {"num_malicious_nodes": int(cfg["krum-malicious-nodes"])} if cfg["aggregation"] == "krum" else {}
        strategy = audited(STRATEGIES[cfg["aggregation"]], ledger, rounds, private(cfg))(
            fraction_evaluate=0.0, min_train_nodes=n_nodes, min_available_nodes=n_nodes, **options
        )
        model = new_model(shared.n_items, private(cfg))

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round and server_round not in rounds:  # budget spent: no training this round
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            record = rounds.setdefault(server_round, {})
            record["validation_ndcg_at_10"] = central_ndcg(model, cfg["data"])
            log_round(cfg["mlflow-run-id"], cfg["split"], server_round, record)
            return MetricRecord(record)

        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=int(cfg["num-server-rounds"]),
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
        output = Path(cfg["model-path"]) if cfg["model-path"] else output_path
        if output is not None:
            save_torch(model, output)
            summary = {
                "rounds": rounds,
                "epsilon": epsilon,
                "delta": delta,
                "private": private(cfg),
                "target_epsilon": ledger.target_epsilon,
                "budget_spent": ledger.spent,
                # what each node applied, per round: anyone can recompute ε from it
                "privacy_rounds": [[asdict(steps) for steps in nodes] for nodes in ledger.rounds],
                "rounds_trained": len([r for r in rounds if r]),
                "settings": cfg,
            }
            output.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))

    return app


app = make_server_app()
