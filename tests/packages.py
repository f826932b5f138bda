"""Builders of REAL MLflow model packages, written by mlflow's own savers, for tests everywhere.

Every ``build_*`` function trains (or writes) a small model and saves it under ``dest`` (which must
not exist yet) with ``mlflow.<flavor>.save_model``, then returns ``dest``. ``break_package`` damages a
package in one of the ways the gateway must refuse. mlflow is a test-only dependency: only this module
and the tests import it.

``PackageCache`` (the session fixture ``packages`` in ``tests/conftest.py``) builds each kind once per
session; tests that modify a package take a copy first (``copy_package``).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
REGRESSOR_COLUMNS = IRIS_COLUMNS[:3]
MISSING_LOADER_MODULE = "gateway_test_missing_loader.model"

# mlflow 3.17 refuses to deserialize any sklearn (skops included) or PythonModel package unless this
# is set; tests compare against mlflow's own loader, and the custom pyfunc loads through mlflow.
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")

SklearnFormat = Literal["skops", "pickle", "cloudpickle"]
Breakage = Literal["no_mlmodel", "unknown_flavor", "missing_model_file", "loader_not_installed"]


# --------------------------------------------------------------------------- data and models


@functools.cache
def iris_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Iris features (float64, [150, 4]) and labels (int64)."""
    from sklearn.datasets import load_iris

    data = load_iris()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)


def iris_frame(rows: slice | None = None) -> Any:
    """The iris features as a pandas DataFrame with named double columns."""
    import pandas as pd

    x, _ = iris_arrays()
    return pd.DataFrame(x[rows] if rows is not None else x, columns=IRIS_COLUMNS)


@functools.cache
def _iris_classifier() -> Any:
    from sklearn.linear_model import LogisticRegression

    _, y = iris_arrays()
    return LogisticRegression(max_iter=500).fit(iris_frame(), y)


def _onnx_classifier(*, label_only: bool = False) -> Any:
    """The iris classifier as ONNX: input ``input`` float [N, 4]; outputs ``label``, ``probabilities``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y = iris_arrays()
    # skl2onnx wants a model fitted on plain arrays (no feature names) for a single tensor input.
    model = LogisticRegression(max_iter=500).fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    if label_only:
        keep = [o for o in onx.graph.output if o.name == "label"]
        del onx.graph.output[:]
        onx.graph.output.extend(keep)
    return onx


# --------------------------------------------------------------------------- sklearn packages


def build_sklearn_package(
    dest: Path, *, serialization_format: SklearnFormat = "skops", predict_fn: str = "predict"
) -> Path:
    """Iris LogisticRegression via ``mlflow.sklearn.save_model`` (skops is mlflow's default format)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model = _iris_classifier()
    frame = iris_frame()
    mlflow.sklearn.save_model(
        model,
        str(dest),
        serialization_format=serialization_format,
        signature=infer_signature(frame, getattr(model, predict_fn)(frame)),
        input_example=iris_frame(slice(0, 3)),
        pyfunc_predict_fn=predict_fn,
        # Explicit requirements skip mlflow's inference subprocess (about a second per package).
        pip_requirements=["scikit-learn", "skops", "cloudpickle"],
    )
    return dest


# --------------------------------------------------------------------------- onnx packages


def _save_onnx(dest: Path, onx: Any, *, signature: Any, input_example: Any, **kwargs: Any) -> Path:
    import mlflow.onnx

    kwargs.setdefault("save_as_external_data", False)
    kwargs.setdefault("pip_requirements", ["onnx", "onnxruntime"])
    mlflow.onnx.save_model(onx, str(dest), signature=signature, input_example=input_example, **kwargs)
    return dest


def onnx_iris_input(rows: slice = slice(0, 5)) -> np.ndarray:
    """Rows of iris as float32, what the ONNX classifier's tensor signature declares."""
    return iris_arrays()[0][rows].astype(np.float32)


def build_onnx_classifier_package(
    dest: Path,
    *,
    label_only: bool = False,
    providers: list[str] | None = None,
    session_options: dict[str, Any] | None = None,
) -> Path:
    """skl2onnx iris classifier (zipmap off) with a tensor signature; outputs label and probabilities.

    ``label_only`` keeps only the ``label`` output (the shape mlflow can answer for a DataFrame).
    """
    import onnxruntime as ort
    from mlflow.models import infer_signature

    onx = _onnx_classifier(label_only=label_only)
    x = onnx_iris_input(slice(None))
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outputs = dict(zip(names, sess.run(names, {"input": x}), strict=True))
    return _save_onnx(
        dest,
        onx,
        signature=infer_signature(x, outputs),
        input_example=x[:3],
        onnx_execution_providers=providers,
        onnx_session_options=session_options,
    )


def build_onnx_regressor_package(dest: Path) -> Path:
    """LinearRegression on three iris columns, ONNX float [N, 3] input, with a COLUMN signature."""
    from mlflow.models import infer_signature
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    x, _ = iris_arrays()
    model = LinearRegression().fit(x[:, :3], x[:, 3])
    onx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 3]))], target_opset=17)
    frame = iris_frame()[REGRESSOR_COLUMNS]
    return _save_onnx(
        dest,
        onx,
        signature=infer_signature(frame, model.predict(x[:, :3])),
        input_example=frame.head(3),
    )


def build_onnx_external_data_package(dest: Path) -> Path:
    """A dense layer whose 4x512 weight (8 KiB) goes to an external data file beside model.onnx."""
    import onnx
    from mlflow.models import infer_signature
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight = rng.standard_normal((4, 512)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "weight"], ["hidden"]),
            helper.make_node("ReduceSum", ["hidden", "axes"], ["score"], keepdims=1),
        ],
        "external_dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(onx)
    x = onnx_iris_input()
    expected = (x @ weight).sum(axis=1, keepdims=True)
    return _save_onnx(
        dest,
        onx,
        signature=infer_signature(x, {"score": expected}),
        input_example=x[:2],
        save_as_external_data=True,
    )


def external_data_weight() -> np.ndarray:
    """The weight ``build_onnx_external_data_package`` stores (same seed)."""
    return np.random.default_rng(7).standard_normal((4, 512)).astype(np.float32)


def build_onnx_multi_input_package(dest: Path, *, column_shape: list[int | None] | None = None) -> Path:
    """Two named inputs ``a`` (float) and ``b`` (int64); output ``total`` = a + float(b).

    ``column_shape`` defaults to ``[None]`` (1-D inputs, what mlflow feeds from a DataFrame column);
    ``[None, 1]`` makes a graph mlflow's DataFrame path cannot feed without a reshape.
    """
    import onnx
    from mlflow.models import infer_signature
    from onnx import TensorProto, helper

    shape: list[int | None] = column_shape or [None]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "b_float"], ["total"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("b", TensorProto.INT64, shape),
        ],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, shape)],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(onx)
    import pandas as pd

    frame = pd.DataFrame({"a": [0.5, 1.5, 2.5], "b": [1, 2, 3]})
    return _save_onnx(
        dest,
        onx,
        signature=infer_signature(frame, frame["a"] + frame["b"]),
        input_example=frame,
    )


# --------------------------------------------------------------------------- custom pyfunc


def build_pyfunc_package(dest: Path) -> Path:
    """A custom ``mlflow.pyfunc.PythonModel`` (loader ``mlflow.pyfunc.model``) with a ``scale`` param.

    It answers a DataFrame ``{"y": x * scale + offset}`` where ``offset`` comes from ``model_config``,
    so a loader that forgets the config answers differently.
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    # Defined inside the function so cloudpickle stores the class by value: the package then loads
    # in any process, whether or not ``tests`` is importable there.
    # No type hints on these methods: mlflow 3 would try to derive a signature from them.
    class ScaleModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def load_context(self, context):  # type: ignore[no-untyped-def]
            self.offset = float((context.model_config or {}).get("offset", 0.0))

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            scale = float((params or {}).get("scale", 1.0))
            return pd.DataFrame({"y": model_input["x"].to_numpy() * scale + self.offset})

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    mlflow.pyfunc.save_model(
        str(dest),
        python_model=ScaleModel(),
        signature=infer_signature(frame, pd.DataFrame({"y": [1.0]}), params={"scale": 1.0}),
        input_example=(frame.head(2), {"scale": 2.0}),
        model_config={"offset": 0.5},
        pip_requirements=["mlflow", "pandas"],
    )
    return dest


def build_slow_pyfunc_package(dest: Path, *, delay_s: float = 0.4) -> Path:
    """A custom pyfunc that sleeps ``delay_s`` per call (from ``model_config``), then answers
    ``{"y": x}``: requests stay in flight long enough to test draining and overload."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class SlowModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def load_context(self, context: Any) -> None:
            self.delay_s = float((context.model_config or {}).get("delay_s", 0.0))

        def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
            import time

            time.sleep(self.delay_s)
            return pd.DataFrame({"y": model_input["x"].to_numpy()})

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        str(dest),
        python_model=SlowModel(),
        signature=infer_signature(frame, pd.DataFrame({"y": [1.0]})),
        model_config={"delay_s": delay_s},
        pip_requirements=["mlflow", "pandas"],
    )
    return dest


# A row value that makes the gated model raise, and one that makes it wait for its gate file to go.
POISON_X = -1.0
HOLD_X = 1000.0


def build_gated_pyfunc_package(dest: Path, *, gate_path: Path | None = None) -> Path:
    """A custom pyfunc answering ``{"y": 2 * x}``, for batching tests that must not depend on timing.

    A request with a row ``x == POISON_X`` makes it raise ``ValueError("poisoned row ...")`` (whatever
    else is in the call); a call with a row ``x == HOLD_X`` waits (at most 60 s) while the file
    ``gate_path`` exists, so a test can keep the model busy, queue requests behind it, and release it.
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class GatedModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def load_context(self, context: Any) -> None:
            config = context.model_config or {}
            self.gate = config.get("gate_path")
            self.poison = float(config["poison_x"])
            self.hold = float(config["hold_x"])

        def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
            import os
            import time

            x = model_input["x"].to_numpy()
            if (x == self.poison).any():
                raise ValueError(f"poisoned row x={self.poison}")
            if self.gate and (x == self.hold).any():
                deadline = time.monotonic() + 60
                while os.path.exists(self.gate) and time.monotonic() < deadline:
                    time.sleep(0.005)
            return pd.DataFrame({"y": x * 2.0})

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        str(dest),
        python_model=GatedModel(),
        signature=infer_signature(frame, pd.DataFrame({"y": [1.0]})),
        input_example=frame,
        model_config={"gate_path": str(gate_path) if gate_path else None, "poison_x": POISON_X, "hold_x": HOLD_X},
        pip_requirements=["mlflow", "pandas"],
    )
    return dest


# --------------------------------------------------------------------------- breaking packages


def _rewrite_mlmodel(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    mlmodel = path / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    change(doc)
    mlmodel.write_text(yaml.safe_dump(doc, sort_keys=False))


def model_file_of(path: Path) -> Path:
    """The weights file of a package built here (what ``missing_model_file`` deletes)."""
    doc = yaml.safe_load((path / "MLmodel").read_text())
    flavors = doc["flavors"]
    if "onnx" in flavors:
        return path / str(flavors["onnx"]["data"])
    pyfunc = flavors["python_function"]
    return path / str(pyfunc.get("model_path") or pyfunc["python_model"])


def break_package(path: Path, how: Breakage) -> Path:
    """Damage the package at ``path`` in place; returns ``path``."""
    if how == "no_mlmodel":
        (path / "MLmodel").unlink()
    elif how == "unknown_flavor":
        _rewrite_mlmodel(path, lambda d: d.update(flavors={"tensorflow": {"saved_model_dir": "tfmodel"}}))
    elif how == "missing_model_file":
        model_file_of(path).unlink()
    elif how == "loader_not_installed":

        def change(doc: dict[str, Any]) -> None:
            doc["flavors"] = {
                "python_function": {**doc["flavors"]["python_function"], "loader_module": MISSING_LOADER_MODULE}
            }

        _rewrite_mlmodel(path, change)
    else:  # pragma: no cover - Literal exhausts the choices
        raise ValueError(how)
    return path


def copy_package(src: Path, dest: Path) -> Path:
    """Copy a (cached) package so a test may modify it."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


PackageKind = Literal[
    "sklearn_skops",
    "sklearn_pickle",
    "sklearn_cloudpickle",
    "sklearn_proba",
    "onnx_classifier",
    "onnx_label_only",
    "onnx_regressor",
    "onnx_external",
    "onnx_multi_input",
    "onnx_multi_input_2d",
    "pyfunc_custom",
    "pyfunc_slow",
    "pyfunc_gated",
]

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "sklearn_skops": lambda d: build_sklearn_package(d, serialization_format="skops"),
    "sklearn_pickle": lambda d: build_sklearn_package(d, serialization_format="pickle"),
    "sklearn_cloudpickle": lambda d: build_sklearn_package(d, serialization_format="cloudpickle"),
    "sklearn_proba": lambda d: build_sklearn_package(d, predict_fn="predict_proba"),
    "onnx_classifier": build_onnx_classifier_package,
    "onnx_label_only": lambda d: build_onnx_classifier_package(d, label_only=True),
    "onnx_regressor": build_onnx_regressor_package,
    "onnx_external": build_onnx_external_data_package,
    "onnx_multi_input": build_onnx_multi_input_package,
    "onnx_multi_input_2d": lambda d: build_onnx_multi_input_package(d, column_shape=[None, 1]),
    "pyfunc_custom": build_pyfunc_package,
    "pyfunc_slow": build_slow_pyfunc_package,
    "pyfunc_gated": build_gated_pyfunc_package,  # no gate: poison only; build with gate_path to hold
}


class PackageCache:
    """Builds each package kind at most once under ``root`` and hands out its path (read-only use)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def get(self, kind: PackageKind) -> Path:
        if kind not in self._built:
            self._built[kind] = BUILDERS[kind](self.root / kind)
        return self._built[kind]

    def copy(self, kind: PackageKind, dest: Path) -> Path:
        """A private copy of ``kind`` at ``dest``, free to break."""
        return copy_package(self.get(kind), dest)
