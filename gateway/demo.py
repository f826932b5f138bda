"""The demo model: an iris classifier packaged in MLflow format, written without mlflow.

``build_demo_package(out)`` trains a deterministic scikit-learn ``LogisticRegression`` on the
iris data set, converts it to ONNX with skl2onnx (ZipMap off) and writes a model package that
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` accept as is (written by
``gateway.serving.package_writer``)::

    out/
      MLmodel                     flavors onnx + python_function (loader_module mlflow.onnx)
      model.onnx                  input ``input`` float [N, 4]; outputs ``label`` int64 [N],
                                  ``probabilities`` float32 [N, 3]
      input_example.json          pandas split orient, without index
      serving_input_example.json  a ready ``/invocations`` body ({"dataframe_split": ...})
      requirements.txt, python_env.yaml, conda.yaml

The signature is a *column* signature: four named ``double`` columns (``sepal_length``,
``sepal_width``, ``petal_length``, ``petal_width``) in, the two tensors out. A server maps the
four columns, in schema order, onto the single ``[N, 4]`` float input.

``label_only=True`` writes a variant whose graph and signature keep only the ``label`` output:
``mlflow models serve`` cannot answer a DataFrame request for a model with both outputs (it
turns each output into a column and fails with "All arrays must be of the same length"), so
the bench uses that variant for mlflow.

Building is reproducible: the same environment gives byte-identical ``model.onnx`` and the
same ``model_uuid`` (derived from the content); only ``utc_time_created`` moves, unless
``SOURCE_DATE_EPOCH`` is set, in which case the whole package is byte-identical.

Command line: ``python -m gateway.demo --out ./models/iris [--label-only]``.
The training dependencies are the ``demo`` extra: ``pip install 'gateway[demo]'``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.serving.package_writer import check_package_target, replace_package, write_onnx_package

FEATURES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
INPUT_NAME = "input"
OUTPUTS: tuple[str, ...] = ("label", "probabilities")
# One row of each class (rows 0, 50 and 100 of the iris data set): setosa, versicolor, virginica.
EXAMPLE_ROWS: tuple[int, ...] = (0, 50, 100)
# Pinned opsets so the graph does not change with the newest opset a skl2onnx release knows.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
DEMO_EXTRA_HINT = "pip install 'gateway[demo]'"

_OUTPUT_SPECS: dict[str, dict[str, Any]] = {
    "label": {"name": "label", "type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
    "probabilities": {
        "name": "probabilities",
        "type": "tensor",
        "tensor-spec": {"dtype": "float32", "shape": [-1, 3]},
    },
}


class DemoDependencyError(RuntimeError):
    """The ``demo`` extra (scikit-learn, skl2onnx, onnx) is not installed."""


def _import_training_deps() -> tuple[Any, Any, Any, Any, Any]:
    try:
        import onnx
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DemoDependencyError(
            f"building the demo model needs scikit-learn, skl2onnx and onnx ({exc.name or exc} is "
            f"missing): {DEMO_EXTRA_HINT}"
        ) from exc
    return onnx, convert_sklearn, FloatTensorType, load_iris, LogisticRegression


def _train_and_convert(label_only: bool) -> tuple[bytes, list[list[float]]]:
    """Train the classifier and return (serialized ONNX model, example rows)."""
    onnx, convert_sklearn, FloatTensorType, load_iris, LogisticRegression = _import_training_deps()
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, random_state=0).fit(x, y)
    onx = convert_sklearn(
        model,
        name="iris_logreg",
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    if label_only:
        keep = [o for o in onx.graph.output if o.name == "label"]
        del onx.graph.output[:]
        onx.graph.output.extend(keep)
    onnx.checker.check_model(onx)
    example = [[float(v) for v in x[i]] for i in EXAMPLE_ROWS]
    return onx.SerializeToString(), example


def build_demo_package(out: Path, *, label_only: bool = False) -> Path:
    """Build the iris demo package at ``out`` and return ``out``.

    ``out`` is replaced if it is an existing model package (a directory holding ``MLmodel``) or
    an empty directory; any other existing path raises ``FileExistsError`` rather than being
    deleted. The package is written to a sibling temporary directory first, so a failed build
    leaves the previous package in place.

    Raises ``DemoDependencyError`` (a ``RuntimeError``) naming ``pip install 'gateway[demo]'``
    when scikit-learn, skl2onnx or onnx are missing.
    """
    out = check_package_target(out)
    onnx_bytes, example = _train_and_convert(label_only)
    outputs = [_OUTPUT_SPECS[name] for name in (("label",) if label_only else OUTPUTS)]
    return replace_package(
        out,
        lambda root: write_onnx_package(root, onnx_bytes, columns=FEATURES, example=example, outputs=outputs),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo",
        description="Train the iris demo classifier and write it as an MLflow-format ONNX model package.",
    )
    parser.add_argument("--out", type=Path, default=Path("models/iris"), help="package directory (replaced)")
    parser.add_argument(
        "--label-only",
        action="store_true",
        help="keep only the `label` output (the variant `mlflow models serve` can answer for DataFrames)",
    )
    args = parser.parse_args(argv)
    try:
        path = build_demo_package(args.out, label_only=args.label_only)
    except (DemoDependencyError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
