"""ONNX export and int8 quantization of the ranker, served by ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.ranker import CandidateRanker
from training.export import export_onnx, quantize_int8


def top10_overlap(a: np.ndarray, b: np.ndarray, groups: int, size: int) -> float:
    overlaps = []
    for g in range(groups):
        rows = slice(g * size, (g + 1) * size)
        overlaps.append(len(set(np.argsort(-a[rows])[:10]) & set(np.argsort(-b[rows])[:10])) / 10)
    return float(np.mean(overlaps))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = CandidateRanker(n_features=15, n_items=5000, item_dim=16, hidden=64, dropout=0.0)
    model.set_standardisation(torch.randn(1000, 15) * 3 + 1)
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(model, folder / "model.onnx", n_features=15)
    int8 = quantize_int8(fp32, folder / "model.int8.onnx")
    return model, fp32, int8


def run(path, features, items):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"features": features, "items": items})[0]


def test_fp32_onnx_matches_torch_top10_on_any_number_of_rows(exported):
    model, fp32, _ = exported
    rng = np.random.default_rng(1)
    groups, size = 50, 120
    features = rng.normal(1, 3, (groups * size, 15)).astype(np.float32)
    items = rng.integers(0, 5000, groups * size)
    with torch.no_grad():
        expected = model(torch.from_numpy(features), torch.from_numpy(items)).numpy()
    got = run(fp32, features, items)
    assert got.shape == (groups * size,)
    assert top10_overlap(expected, got, groups, size) >= 0.99
    assert run(fp32, features[:1], items[:1]).shape == (1,)


def test_int8_model_is_smaller_and_still_ranks(exported):
    model, fp32, int8 = exported
    assert int8.stat().st_size < fp32.stat().st_size / 2
    rng = np.random.default_rng(2)
    features = rng.normal(1, 3, (600, 15)).astype(np.float32)
    items = rng.integers(0, 5000, 600)
    scores = run(int8, features, items)
    assert scores.shape == (600,) and np.isfinite(scores).all()
    with torch.no_grad():
        reference = model(torch.from_numpy(features), torch.from_numpy(items)).numpy()
    assert np.corrcoef(scores, reference)[0, 1] > 0.9  # quality on real data is measured, not assumed


def test_a_model_of_another_feature_set_is_refused_when_loaded_not_on_the_first_request(exported):
    """A bundle trained by a version with other candidate features (here 15 per candidate) must
    fail where the node installs it, naming both widths, instead of failing every request."""
    from models.scorers import OnnxScorer

    _, fp32, _ = exported
    with pytest.raises(ValueError, match=r"takes 15 features per candidate, this version computes \d+"):
        OnnxScorer(fp32)
