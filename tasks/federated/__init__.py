"""The Flower app of federated training (Flower's layout: task.py, client_app.py, server_app.py)."""
