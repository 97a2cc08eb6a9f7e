"""A store group's node: trains the global model on its own candidate lists, returns the weights."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from models.training import train_ranker
from tasks.federated.task import new_model, node_data, settings


def make_client_app(overrides: dict | None = None) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context.run_config, overrides)
        node, n_nodes = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        data = node_data(cfg["data"], n_nodes, node, int(cfg["local-weeks"]))
        model = new_model(data.split.history.n_items)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        train_ranker(model, data.train, None, int(cfg["local-epochs"]), float(cfg["lr"]), seed=node)
        lists = len(data.train.basket_sizes)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": lists})})
        return Message(content=content, reply_to=msg)

    return app


app = make_client_app()
