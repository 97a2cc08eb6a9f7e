"""`CandidateRanker`: scores (user, candidate item) rows from repurchase features and a learned
item embedding. The same module serves every neural tier; sizes differ by tier."""

from __future__ import annotations

import torch
from torch import nn


class CandidateRanker(nn.Module):
    """score = MLP([standardised features, item embedding]).

    n_features: feature columns (models.candidates.FEATURE_NAMES). n_items: catalog size.
    item_buckets: embed `item % item_buckets` instead of one row per item (hashed catalog for
    small tiers); None embeds every item. Feature mean/std are buffers so exported models
    standardise inside the graph. log_features: feed sign(x)·log1p(|x|) instead of x, a fixed
    compression for models that may not learn statistics from the data (differentially private
    training keeps mean 0 and std 1).
    """

    def __init__(
        self,
        n_features: int,
        n_items: int,
        item_dim: int = 32,
        hidden: int = 128,
        item_buckets: int | None = None,
        dropout: float = 0.1,
        log_features: bool = False,
    ):
        super().__init__()
        self.config = dict(
            n_features=n_features,
            n_items=n_items,
            item_dim=item_dim,
            hidden=hidden,
            item_buckets=item_buckets,
            dropout=dropout,
            log_features=log_features,
        )  # re-creates the module (torch.save)
        self.item_buckets = item_buckets
        self.log_features = log_features
        self.item_embedding = nn.Embedding(item_buckets or n_items, item_dim)
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        self.mlp = nn.Sequential(
            nn.Linear(n_features + item_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Store the training features' column mean and std (n_features,)."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """features: (n_rows, n_features) float32; items: (n_rows,) int64 → scores (n_rows,)."""
        if self.item_buckets:
            items = torch.remainder(items, self.item_buckets)
        if self.log_features:
            features = torch.sign(features) * torch.log1p(features.abs())
        x = torch.cat([(features - self.feature_mean) / self.feature_std, self.item_embedding(items)], dim=1)
        return self.mlp(x).squeeze(-1)

    @classmethod
    def load(cls, path) -> CandidateRanker:
        """A ranker saved as {"config", "state_dict"} (training.export.save_torch), in eval mode."""
        saved = torch.load(path, weights_only=True)
        model = cls(**saved["config"])
        model.load_state_dict(saved["state_dict"])
        return model.eval()

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
