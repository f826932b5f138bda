"""The bench's heavy model: a wide scikit-learn MLP regressor as an MLflow-format ONNX package.

An iris demo call in onnxruntime is so cheap that batching has nothing to amortise there but the
HTTP path. This model costs far more per 1-row call with one intra-op thread (its two 2048-wide
hidden layers are 16 MB of float32 weights read per call), and far less per row in a batch, which
is where a batcher pays off (the measured costs are in docs/benchmarks.md, "What is measured").

    python loadtest/mlp_model.py --out DIR [--features 32] [--hidden 2048,2048]

writes ``DIR`` with ``MLmodel`` (flavors onnx + python_function, loader ``mlflow.onnx``, so
``gateway models register`` and ``mlflow models serve`` both take it as is), ``model.onnx``
(input ``input`` float [N, F]; output ``variable`` float32 [N, 1]), a column signature of F
``double`` columns ``f00``, ``f01``, ..., ``input_example.json`` and
``serving_input_example.json`` (three rows), and the env files. ``onnx_session_options`` pins
one intra-op thread with spinning off: the gateway and mlflow both honour it, so every server
runs the model the same way as ``loadtest/bare_app.py``.

Run as a subprocess by the bench with the venv's python (it needs scikit-learn, skl2onnx and
onnx: the ``dev`` extra). Of ``gateway`` it imports only the package writer the demo uses too
(``gateway.serving.package_writer``); the bench still talks to the gateway over HTTP only.
Training is seeded and short (two epochs on 256 random rows; what the weights predict does not
matter, their cost does), so the same environment writes the same ``model.onnx``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

from gateway.serving.package_writer import check_package_target, replace_package, write_onnx_package

INPUT_NAME = "input"
OUTPUT_NAME = "variable"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SESSION_OPTIONS = {
    "intra_op_num_threads": 1,
    "inter_op_num_threads": 1,
    "extra_session_config": {"session.intra_op.allow_spinning": "0"},
}


def feature_names(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"f{i:0{max(2, width)}d}" for i in range(count)]


def train_and_convert(features: int, hidden: Sequence[int]) -> tuple[bytes, list[list[float]]]:
    """Return (serialized ONNX model, three example rows)."""
    import numpy as np
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, features))
    y = x[:, : min(4, features)].sum(axis=1) + 0.1 * rng.normal(size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # two epochs on purpose
        model = MLPRegressor(hidden_layer_sizes=tuple(hidden), max_iter=2, random_state=0).fit(x, y)
    onx = convert_sklearn(
        model,
        name="bench_mlp",
        initial_types=[(INPUT_NAME, FloatTensorType([None, features]))],
        target_opset=TARGET_OPSET,
    )
    onnx.checker.check_model(onx)
    example = [[round(float(v), 4) for v in row] for row in x[:3]]
    return onx.SerializeToString(), example


def build_mlp_package(out: Path, features: int = 32, hidden: Sequence[int] = (2048, 2048)) -> Path:
    """Write the package at ``out`` (replacing a previous package there) and return ``out``."""
    out = check_package_target(out)
    onnx_bytes, example = train_and_convert(features, hidden)
    output = {"name": OUTPUT_NAME, "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1]}}
    return replace_package(
        out,
        lambda root: write_onnx_package(
            root,
            onnx_bytes,
            columns=feature_names(features),
            example=example,
            outputs=[output],
            session_options=SESSION_OPTIONS,
        ),
    )


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths, got {text!r}") from exc
    if not sizes or any(s < 1 or s > 16384 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected layer widths in 1..16384, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python loadtest/mlp_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="package directory (replaced)")
    parser.add_argument("--features", type=int, default=32, help="input columns")
    parser.add_argument("--hidden", type=_hidden, default=[2048, 2048], help="hidden layer widths")
    args = parser.parse_args(argv)
    if not 1 <= args.features <= 4096:
        parser.error("--features must be in 1..4096")
    print(build_mlp_package(args.out, args.features, args.hidden))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
