"""How a bundle's candidates are scored: a learned ranker, or a baseline's own statistic.

Every tier is served by `edge.engine.Engine`, which builds a shopper's candidates and asks the
bundle's scorer for one raw score per candidate (higher first; -inf drops it). The scorer is named
in the bundle's `serving.json` (`scorer`):

- `{"kind": "ranker"}`: the bundle's ONNX ranker (ONNX Runtime, every node: a LightGBM tree
  ensemble or a neural ranker), or a boosted ranker in LightGBM itself when the engine runs with
  runtime "native" (the cloud reference; needs LightGBM installed).
- `{"kind": "features", "by": [name, …]}`: no model: candidates ordered by these
  `models.candidates.FEATURE_NAMES` columns (the first decides, the next break ties); candidates
  whose first column is 0 are dropped, so popularity fills their slots. P-TopFreq ("buy again")
  is `["log_count", "log_popularity"]`, TIFU-KNN `["tifu_score"]`.
- `{"kind": "popularity"}`: no candidates at all; answers are the store's popular items (G-TopFreq).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge import bundle
from models.candidates import FEATURE_NAMES

RANKER, FEATURES, POPULARITY = "ranker", "features", "popularity"


class OnnxScorer:
    """scores(features (rows, n_features) float32, items (rows,) int64) → (rows,) float32. A model
    that takes no `items` input (a tree ensemble) is given the features alone."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False  # a few hundred candidate rows need no arena; it keeps ~10 MB
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {given.name: given for given in self.session.get_inputs()}
        width = inputs["features"].shape[1] if "features" in inputs else None
        if width != len(FEATURE_NAMES):
            raise ValueError(
                f"{path}: the model takes {width} features per candidate, this version computes "
                f"{len(FEATURE_NAMES)}; train and bundle it again with this version"
            )
        self.takes_items = "items" in inputs

    def __call__(self, features: np.ndarray, items: np.ndarray) -> np.ndarray:
        inputs = {"features": features, "items": items} if self.takes_items else {"features": features}
        return self.session.run(None, inputs)[0].reshape(-1)


class BoostedScorer:
    """The same LightGBM ranker in LightGBM itself (its text model file)."""

    def __init__(self, path: Path, threads: int = 1):
        import lightgbm

        self.booster = lightgbm.Booster(model_file=str(path))
        self.threads = threads

    def __call__(self, features: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.booster.predict(features, num_threads=self.threads).astype(np.float32)


class FeatureScorer:
    """Orders candidates by feature columns `by` (lexicographically, largest first); a candidate
    whose first column is ≤ 0 scores -inf (dropped)."""

    def __init__(self, by: list[str]):
        unknown = [name for name in by if name not in FEATURE_NAMES]
        if not by or unknown:
            raise ValueError(f"scorer columns {by!r}: need at least one of {FEATURE_NAMES}")
        self.columns = [FEATURE_NAMES.index(name) for name in by]

    def __call__(self, features: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = [-features[:, column] for column in reversed(self.columns)]
        order = np.lexsort(keys) if len(items) else np.zeros(0, np.int64)
        raw = np.empty(len(items), np.float32)
        raw[order] = np.arange(len(items), 0, -1, dtype=np.float32)
        raw[features[:, self.columns[0]] <= 0] = -np.inf
        return raw


def scorer_spec(kind: str, by: list[str] | None = None) -> dict:
    """The `serving.json` entry of a scorer."""
    if kind not in (RANKER, FEATURES, POPULARITY):
        raise ValueError(f"unknown scorer kind {kind!r}")
    return {"kind": kind, **({"by": list(by)} if kind == FEATURES else {})}


def load_scorer(spec: dict, folder: Path, runtime: str = "onnx"):
    """The scorer a bundle names (None for popularity: no candidates are scored).

    runtime: "onnx" or "native" (a boosted ranker's LightGBM file beside the ONNX one). Raises
    FileNotFoundError when the ranker file is missing, ValueError for an unknown spec."""
    kind = spec.get("kind")
    if kind == RANKER:
        folder = Path(folder)
        if runtime == "native":
            if not (folder / bundle.LIGHTGBM_MODEL).is_file():
                raise FileNotFoundError(f"{folder}: the native runtime needs {bundle.LIGHTGBM_MODEL}")
            return BoostedScorer(folder / bundle.LIGHTGBM_MODEL)
        if not (folder / bundle.MODEL).is_file():
            raise FileNotFoundError(f"{folder}: the ranker scorer needs {bundle.MODEL}")
        return OnnxScorer(folder / bundle.MODEL)
    if kind == FEATURES:
        return FeatureScorer(list(spec.get("by") or []))
    if kind == POPULARITY:
        return None
    raise ValueError(f"{folder}: unknown scorer {spec!r}")
