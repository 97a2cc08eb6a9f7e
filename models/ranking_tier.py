"""`RankingTier`: candidate generation + a learned ranker, served like any baseline tier.

The ranker is scored through ONNX Runtime (every deployable neural tier) or PyTorch eager (the
"cloud" reference). torch is imported only by the torch scorer, so an ONNX tier loads without it.
Saved files: `model.onnx` or `model.pt` beside the `Recommender`'s state.npz (candidate state).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from models import candidates

ONNX_FILE = "model.onnx"
TORCH_FILE = "model.pt"


class OnnxScorer:
    """scores(features (rows, n_features) float32, items (rows,) int64) → (rows,) float32."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False  # a few hundred candidate rows need no arena; it keeps ~10 MB
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"features": features, "items": items})[0]


class TorchScorer:
    """The same ranker in PyTorch eager mode (file: {"config": ranker kwargs, "state_dict": …})."""

    def __init__(self, path: Path, threads: int = 1):
        import torch

        from models.ranker import CandidateRanker

        torch.set_num_threads(threads)
        self.model = CandidateRanker.load(path)
        self.torch = torch

    def __call__(self, features: np.ndarray, items: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(features), self.torch.from_numpy(items)).numpy()


SCORERS = {"onnx": (OnnxScorer, ONNX_FILE), "torch": (TorchScorer, TORCH_FILE)}


class RankingTier:
    """Scores every item for known users: candidates get their ranker score mapped into [1, 2]
    (order kept), everything else 0, so `Recommender` fills the rest by popularity.

    params: {"tier", "runtime" ("onnx" | "torch"), "n_items", "generator": CandidateGenerator.params,
    "ranker": ranker kwargs, "param_count": trainable parameters of the ranker, …}.
    """

    kind = "ranking"

    def __init__(self, params: dict, generator: "candidates.CandidateGenerator | None" = None, model_path: Path | None = None):
        self.params, self.generator, self.model_path = params, generator, model_path
        self.name = params["tier"]
        self.scorer = None
        if model_path is not None:
            self.scorer = SCORERS[params["runtime"]][0](model_path)

    def score(self, users: np.ndarray) -> np.ndarray:
        found = self.generator.build(np.asarray(users))
        raw = self.scorer(found.features, found.items) if len(found.items) else np.zeros(0, np.float32)
        scores = np.zeros((len(users), self.params["n_items"]), dtype=np.float32)
        for row in range(len(users)):
            rows = slice(found.user_ptr[row], found.user_ptr[row + 1])
            s = raw[rows]
            if len(s):
                spread = float(s.max() - s.min())
                scores[row, found.items[rows]] = 1 + (s - s.min()) / (spread if spread > 0 else 1.0)
        return scores

    def state(self) -> dict[str, np.ndarray]:
        return self.generator.state()

    def save_files(self, folder: Path) -> None:
        """Copy the ranker file next to the recommender's state."""
        shutil.copyfile(self.model_path, Path(folder) / SCORERS[self.params["runtime"]][1])

    @classmethod
    def load(cls, params: dict, state: dict, folder: Path) -> "RankingTier":
        generator = candidates.CandidateGenerator(**params["generator"]).load_state(state)
        return cls(params, generator, Path(folder) / SCORERS[params["runtime"]][1])

    def param_count(self) -> int:
        return int(self.params["param_count"])
