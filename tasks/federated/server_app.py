"""The server: aggregates the nodes' weights with the configured strategy and scores every round's
global model on the central validation lists; the final model (and the per-round scores, as JSON
beside it) is saved to `output` for the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

from tasks.federated.task import catalog_size, central_ndcg, new_model, save_model, settings

STRATEGIES = {"fedavg": FedAvg, "fedtrimmedavg": FedTrimmedAvg, "fedmedian": FedMedian, "krum": Krum}


def make_server_app(overrides: dict | None = None, output_path: Path | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = settings(context.run_config, overrides)
        n_nodes = len(list(grid.get_node_ids()))
        strategy = STRATEGIES[cfg["aggregation"]](fraction_evaluate=0.0, min_train_nodes=n_nodes,
                                                  min_available_nodes=n_nodes)
        model = new_model(catalog_size(cfg["data"]))

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            return MetricRecord({"validation_ndcg_at_10": central_ndcg(model, cfg["data"])})

        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                                num_rounds=int(cfg["num-server-rounds"]), evaluate_fn=evaluate)
        model.load_state_dict(result.arrays.to_torch_state_dict())
        output = Path(cfg["model-path"]) if cfg["model-path"] else output_path
        if output is not None:
            save_model(model, output)
            rounds = {server_round: dict(metrics) for server_round, metrics in result.evaluate_metrics_serverapp.items()}
            output.with_suffix(".json").write_text(json.dumps(rounds))

    return app


app = make_server_app()
