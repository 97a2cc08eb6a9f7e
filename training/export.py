"""Export a ranking tier to a single-file ONNX model and quantize it to int8 (STACK.md recipe)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch

from models.ranker import CandidateRanker

INPUT_NAMES = ("features", "items")
OUTPUT_NAME = "scores"
# The exporter warns once per torchvision operator it skips registering ("torchvision is not
# installed", 24 lines per run); the ranker uses none of them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
# torch.export pickles its tree specs through an API it has itself deprecated (torch 2.13): not ours to fix.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


def export_onnx(model: CandidateRanker, path: Path, n_features: int) -> Path:
    """fp32 ONNX with a dynamic number of candidate rows: features (rows, n_features) float32,
    items (rows,) int64 → scores (rows,). One file (no external data)."""
    model = model.eval()
    example = (torch.randn(8, n_features), torch.zeros(8, dtype=torch.int64))
    rows = torch.export.Dim("rows", min=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # both inputs share the `rows` dimension, which is the point
        warnings.filterwarnings("ignore", message=".*axis name: rows will not be used")
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"features": {0: rows}, "items": {0: rows}},
        )
    return path


def save_torch(model: CandidateRanker, path: Path) -> Path:
    """The ranker for PyTorch eager serving (models.scorers.TorchScorer): config + weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)
    return path


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization of weights, after ORT's shape inference and graph optimisation
    (`quant_pre_process`): without it a gather/matmul model came out slower than fp32 (STACK.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QInt8)
    return int8_path
