"""A store group's node: trains the global model on its own candidate lists (with DP-SGD when
noise_multiplier > 0) and returns the weights, plus the private steps it took for the server's
accountant."""

from __future__ import annotations

from lightpersml import config

config.apply_environment()  # a Flower entry point: the quiet environment before flwr loads

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federated.task import FederatedSettings, NodeData, new_model, node_data
from models.private_training import train_ranker_private
from models.ranker import CandidateRanker
from models.training import train_ranker


def local_update(msg: Message, context: Context, cfg: FederatedSettings) -> tuple[CandidateRanker, NodeData, dict]:
    """Train the received global model on this node's lists: (model, the node's data, metrics)."""
    node, n_nodes = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    data = node_data(cfg.data, n_nodes, node, cfg.local_weeks, cfg.split, cfg.holdout_share)
    model = new_model(data.n_items, cfg.private)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics = {"num-examples": len(data.train.basket_sizes)}
    server_round = int(msg.metadata.group_id) if msg.metadata.group_id.isdigit() else 0  # strategies send the round
    seed = 1_000 * server_round + node  # fresh noise and order every round
    if cfg.private:
        steps = train_ranker_private(
            model,
            data.train,
            cfg.local_epochs,
            cfg.private_lr,
            cfg.clipping_norm,
            cfg.noise_multiplier,
            cfg.shoppers_per_batch,
            seed=seed,
        )
        metrics |= {
            "dp-noise-multiplier": steps.noise_multiplier,
            "dp-sample-rate": steps.sample_rate,
            "dp-steps": steps.steps,
        }
    else:
        train_ranker(model, data.train, None, cfg.local_epochs, cfg.lr, seed=seed)
    return model, data, metrics


def reply(msg: Message, model: CandidateRanker, metrics: dict) -> Message:
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def make_client_app(base: FederatedSettings | None = None) -> ClientApp:
    """A node with `base` settings (default: the defaults) under Flower's run config."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model, _, metrics = local_update(msg, context, FederatedSettings.from_run_config(context.run_config, base))
        return reply(msg, model, metrics)

    return app


app = make_client_app()
