"""Runtimes against mlflow's own loaders, on real packages; and ``to_jsonable`` against mlflow's JSON.

Our runtimes sit AFTER signature enforcement (another module's job). So each comparison is against
``mlflow.pyfunc.load_model(path).predict`` where mlflow's enforcement leaves the input as is, and
against the flavor's own wrapper (``_model_impl``, the same loader code without enforcement) where
mlflow's enforcement would first reshape or refuse the input.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pandas as pd
import pytest

from gateway.errors import BadRequest, GatewayError, InvalidPackage, ModelPredictError, ServiceUnavailable
from gateway.serving.output import to_jsonable
from gateway.serving.package import read_package
from gateway.serving.runtimes.loading import load_runtime
from gateway.serving.runtimes.onnx import OnnxRuntime
from gateway.serving.runtimes.pyfunc import PyfuncRuntime
from gateway.serving.types import Frame
from tests.packages import (
    IRIS_COLUMNS,
    REGRESSOR_COLUMNS,
    PackageCache,
    build_onnx_classifier_package,
    external_data_weight,
    iris_arrays,
    iris_frame,
    onnx_iris_input,
)

SKLEARN_KINDS = ["sklearn_skops", "sklearn_pickle", "sklearn_cloudpickle", "sklearn_proba"]

# MLflow's leading words for an exception raised by the model itself.
PREDICT_ERROR_PREFIX = (
    "Encountered an unexpected error while evaluating the model. Verify that the serialized input "
    "Dataframe is compatible with the model for inference. Error: "
)


def frame_of(df: pd.DataFrame) -> Frame:
    """What the request pipeline hands a runtime for a DataFrame: named 1-D numpy columns."""
    return Frame(columns={c: df[c].to_numpy() for c in df.columns}, nrows=len(df))


def mlflow_model(path: Path) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(path))


def wire(prediction: Any) -> Any:
    """What a client receives: our jsonable form through orjson."""
    return orjson.loads(orjson.dumps(to_jsonable(prediction)))


def mlflow_wire(prediction: Any) -> Any:
    """What mlflow's scoring server would send for the same raw prediction."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(prediction, out)  # type: ignore[no-untyped-call]
    return json.loads(out.getvalue())["predictions"]


def assert_close(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs) or {type(ours), type(theirs)} <= {int, float}, (ours, theirs)
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert_close(ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_close(a, b)
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)
    else:
        assert ours == theirs


@pytest.fixture(scope="module")
def runtimes(packages: PackageCache) -> dict[str, Any]:
    """One loaded runtime per kind for the module (loading is the expensive part)."""
    loaded: dict[str, Any] = {}

    def get(kind: Any) -> Any:
        if kind not in loaded:
            loaded[kind] = load_runtime(read_package(packages.get(kind)), intra_op_num_threads=1)
        return loaded[kind]

    return {"get": get}


# --------------------------------------------------------------------------- sklearn


@pytest.mark.parametrize("kind", SKLEARN_KINDS)
def test_sklearn_frame_equals_mlflow(packages: PackageCache, runtimes: dict[str, Any], kind: Any) -> None:
    runtime = runtimes["get"](kind)
    assert isinstance(runtime, PyfuncRuntime)
    df = iris_frame(slice(40, 60))
    ours = runtime.predict(frame_of(df), None)
    theirs = mlflow_model(packages.get(kind)).predict(df)
    np.testing.assert_array_equal(ours, theirs)  # same estimator, same input: exactly equal
    assert wire(ours) == mlflow_wire(theirs)


@pytest.mark.parametrize("kind", SKLEARN_KINDS)
def test_sklearn_dict_and_ndarray_equal_mlflow(packages: PackageCache, runtimes: dict[str, Any], kind: Any) -> None:
    runtime = runtimes["get"](kind)
    x = iris_arrays()[0][90:110]
    model = mlflow_model(packages.get(kind))
    columns = {name: x[:, i] for i, name in enumerate(IRIS_COLUMNS)}
    np.testing.assert_array_equal(runtime.predict(columns, None), model.predict(columns))
    # A bare matrix: mlflow's column signature refuses it, so compare with its sklearn wrapper.
    np.testing.assert_array_equal(
        runtime.predict(x, None),
        model._model_impl.predict(x) if kind != "sklearn_proba" else model._model_impl.predict_proba(x),
    )


def test_sklearn_predict_fn_is_honoured(runtimes: dict[str, Any]) -> None:
    proba = runtimes["get"]("sklearn_proba").predict(frame_of(iris_frame(slice(0, 4))), None)
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


NO_PANDAS_SCRIPT = """
import sys


class NoPandas:  # `import pandas` fails from here on, as where it is not installed

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("No module named 'pandas'", name="pandas")
        return None


sys.meta_path.insert(0, NoPandas())
import json, numpy as np
from pathlib import Path
from gateway.serving.output import to_jsonable
from gateway.serving.package import read_package
from gateway.serving.runtimes.loading import load_runtime
from gateway.serving.types import Frame
rows = np.array(json.loads(sys.argv[3]))
frame = Frame(columns={i: rows[:, i] for i in range(rows.shape[1])}, nrows=len(rows))
out = {}
for kind, path in (("sklearn", sys.argv[1]), ("onnx", sys.argv[2])):
    runtime = load_runtime(read_package(Path(path)), intra_op_num_threads=1)
    out[kind] = to_jsonable(runtime.predict(frame, None))
assert "pandas" not in sys.modules
print(json.dumps(out))
"""


def test_serving_works_without_pandas(packages: PackageCache) -> None:
    """In a fresh interpreter where pandas cannot be imported: gateway.serving imports, an sklearn
    package predicts from a 2-D matrix, an ONNX package from the Frame."""
    import subprocess

    df = iris_frame(slice(0, 10))
    rows = df.to_numpy()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_PANDAS_SCRIPT,
            str(packages.get("sklearn_skops")),
            str(packages.get("onnx_label_only")),
            json.dumps(rows.tolist()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expected = mlflow_model(packages.get("sklearn_skops")).predict(df).tolist()
    assert out["sklearn"] == expected
    assert [r["label"] for r in out["onnx"]] == expected


def test_sklearn_model_error_is_a_predict_error(runtimes: dict[str, Any]) -> None:
    with pytest.raises(ModelPredictError) as info:
        runtimes["get"]("sklearn_skops").predict(np.ones((2, 3)), None)
    assert info.value.message.startswith(PREDICT_ERROR_PREFIX + "ValueError: ")
    assert "Traceback" not in info.value.message and "\n" not in info.value.message


# --------------------------------------------------------------------------- onnx


def test_onnx_classifier_ndarray_and_dict_equal_mlflow(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    runtime = runtimes["get"]("onnx_classifier")
    assert isinstance(runtime, OnnxRuntime)
    model = mlflow_model(packages.get("onnx_classifier"))
    x32 = onnx_iris_input(slice(0, 150, 7))
    theirs = model.predict(x32)
    for data in (x32, {"input": x32}):
        ours = runtime.predict(data, None)
        assert ours.keys() == theirs.keys() == {"label", "probabilities"}
        np.testing.assert_array_equal(ours["label"], theirs["label"])
        np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=1e-6)
        assert_close(wire(ours), mlflow_wire(theirs))
    # float64 is cast to the graph's float32, as mlflow's wrapper does.
    x64 = x32.astype(np.float64)
    np.testing.assert_allclose(
        runtime.predict(x64, None)["probabilities"], model._model_impl.predict(x64)["probabilities"], rtol=1e-6
    )


def test_onnx_two_outputs_on_a_frame(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    """mlflow cannot answer this (trap 3); we answer one column per output, a list per row."""
    df = pd.DataFrame(onnx_iris_input(slice(0, 3)).astype(np.float64))
    with pytest.raises(ValueError, match="same length"):
        mlflow_model(packages.get("onnx_classifier"))._model_impl.predict(df)
    ours = runtimes["get"]("onnx_classifier").predict(frame_of(df), None)
    assert isinstance(ours, Frame) and ours.nrows == 3 and list(ours.columns) == ["label", "probabilities"]
    records = wire(ours)
    assert [set(r) for r in records] == [{"label", "probabilities"}] * 3
    assert [r["label"] for r in records] == [0, 0, 0]
    expected = runtimes["get"]("onnx_classifier").predict(df.to_numpy(), None)["probabilities"]
    np.testing.assert_allclose([r["probabilities"] for r in records], expected, rtol=1e-6)


def test_onnx_frame_with_a_tensor_column(runtimes: dict[str, Any]) -> None:
    """A one-column table whose cells are per-row tensors feeds a single graph input stacked."""
    x = onnx_iris_input(slice(0, 3))
    column = np.empty(3, dtype=object)
    column[:] = x.astype(np.float64).tolist()
    runtime = runtimes["get"]("onnx_classifier")
    ours = runtime.predict(Frame(columns={"input": column}, nrows=3), None)
    np.testing.assert_array_equal(ours.columns["label"], runtime.predict(x, None)["label"])


def test_onnx_label_only_frame_equals_mlflow(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    df = pd.DataFrame(onnx_iris_input(slice(45, 105, 5)).astype(np.float64))
    theirs = mlflow_model(packages.get("onnx_label_only"))._model_impl.predict(df)
    ours = runtimes["get"]("onnx_label_only").predict(frame_of(df), None)
    assert wire(ours) == mlflow_wire(theirs)
    assert {r["label"] for r in wire(ours)} == {0, 1, 2}


def test_onnx_regressor_column_signature_equals_mlflow(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    df = iris_frame(slice(0, 150, 9))[REGRESSOR_COLUMNS]
    theirs = mlflow_model(packages.get("onnx_regressor")).predict(df)  # enforcement passes: named doubles
    ours = runtimes["get"]("onnx_regressor").predict(frame_of(df), None)
    assert_close(wire(ours), mlflow_wire(theirs))
    assert list(wire(ours)[0]) == ["variable"]


def test_onnx_multi_input_equals_mlflow(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    runtime = runtimes["get"]("onnx_multi_input")
    model = mlflow_model(packages.get("onnx_multi_input"))
    df = pd.DataFrame({"a": [0.25, 1.5, -2.0], "b": [1, 2, 30]})
    assert_close(wire(runtime.predict(frame_of(df), None)), mlflow_wire(model.predict(df)))
    feeds = {"a": df["a"].to_numpy(), "b": df["b"].to_numpy(), "ignored": np.zeros(3)}
    ours = runtime.predict(feeds, None)
    theirs = model._model_impl.predict({"a": feeds["a"], "b": feeds["b"]})
    np.testing.assert_allclose(ours["total"], theirs["total"])
    # An unnamed table feeds the inputs by position.
    unnamed = Frame(columns={0: df["a"].to_numpy(), 1: df["b"].to_numpy()}, nrows=3)
    assert wire(runtime.predict(unnamed, None)) == wire(runtime.predict(frame_of(df), None))


def test_onnx_multi_input_refusals(runtimes: dict[str, Any]) -> None:
    runtime = runtimes["get"]("onnx_multi_input")
    with pytest.raises(BadRequest, match=r"takes 2 inputs \['a', 'b'\]"):
        runtime.predict(np.zeros((2, 2)), None)
    with pytest.raises(BadRequest, match=r"inputs \['b'\] are missing"):
        runtime.predict({"a": np.zeros(2)}, None)
    with pytest.raises(BadRequest, match=r"\['b'\] are missing from the table"):
        runtime.predict(Frame(columns={"a": np.zeros(2), "c": np.zeros(2)}, nrows=2), None)


def test_onnx_column_reshaped_for_2d_inputs(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    """Graph inputs [N, 1]: mlflow feeds 1-D columns and onnxruntime refuses; we add the axis."""
    df = pd.DataFrame({"a": [0.5, 1.5], "b": [1, 2]})
    with pytest.raises(Exception, match="Invalid rank"):
        mlflow_model(packages.get("onnx_multi_input_2d"))._model_impl.predict(df)
    assert wire(runtimes["get"]("onnx_multi_input_2d").predict(frame_of(df), None)) == [{"total": 1.5}, {"total": 3.5}]


def test_onnx_external_data(packages: PackageCache, runtimes: dict[str, Any], tmp_path: Path) -> None:
    path = packages.get("onnx_external")
    data_files = [p for p in path.iterdir() if p.suffix == ".data"]
    assert len(data_files) == 1 and data_files[0].stat().st_size >= 4 * 512 * 4  # the weight is outside
    x = onnx_iris_input(slice(0, 4))
    ours = runtimes["get"]("onnx_external").predict(x, None)["score"]
    np.testing.assert_allclose(ours, (x @ external_data_weight()).sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(ours, mlflow_model(path).predict(x)["score"], rtol=1e-6)
    # Without its data file the model cannot load, and the error says so.
    broken = packages.copy("onnx_external", tmp_path / "pkg")
    next(p for p in broken.iterdir() if p.suffix == ".data").unlink()
    with pytest.raises(InvalidPackage, match="cannot be loaded"):
        load_runtime(read_package(broken))


def test_onnx_model_error_is_a_predict_error(runtimes: dict[str, Any]) -> None:
    with pytest.raises(ModelPredictError) as info:
        runtimes["get"]("onnx_classifier").predict(np.ones((2, 3), dtype=np.float32), None)
    message = info.value.message
    assert message.startswith(PREDICT_ERROR_PREFIX + "InvalidArgument: [ONNXRuntimeError]")
    assert "\n" not in message and "Traceback" not in message


def test_unload(packages: PackageCache) -> None:
    for kind in ("onnx_regressor", "sklearn_pickle"):
        runtime = load_runtime(read_package(packages.get(kind)))
        runtime.unload()
        with pytest.raises(ServiceUnavailable, match="unloaded"):
            runtime.predict(np.zeros((1, 3)), None)


# --------------------------------------------------------------------------- providers and options


def _classifier(tmp_path: Path, **kwargs: Any) -> OnnxRuntime:
    threads = kwargs.pop("threads", None)
    path = build_onnx_classifier_package(tmp_path / "pkg", **kwargs)
    runtime = load_runtime(read_package(path), intra_op_num_threads=threads)
    assert isinstance(runtime, OnnxRuntime)
    return runtime


def test_unavailable_providers_are_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.serving")
    runtime = _classifier(tmp_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.session.get_providers() == ["CPUExecutionProvider"]
    warning = next(r for r in caplog.records if r.name == "gateway.serving" and r.levelno == logging.WARNING)
    assert "['CUDAExecutionProvider'] are not available" in warning.getMessage()


def test_no_usable_provider_falls_back_to_cpu(tmp_path: Path) -> None:
    runtime = _classifier(tmp_path, providers=["TensorrtExecutionProvider"])
    assert runtime.session.get_providers() == ["CPUExecutionProvider"]
    assert runtime.predict(onnx_iris_input(slice(0, 1)), None)["label"].tolist() == [0]


def test_provider_with_options(packages: PackageCache, tmp_path: Path) -> None:
    """(name, options) pairs come back from YAML as lists; onnxruntime needs tuples."""
    import yaml

    path = packages.copy("onnx_classifier", tmp_path / "pkg")
    doc = yaml.safe_load((path / "MLmodel").read_text())
    options = {"arena_extend_strategy": "kSameAsRequested"}
    doc["flavors"]["onnx"]["providers"] = [["CPUExecutionProvider", options]]
    (path / "MLmodel").write_text(yaml.safe_dump(doc))
    runtime = load_runtime(read_package(path))
    assert runtime.session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert "CPUExecutionProvider" in ort.get_available_providers()


def test_session_options_are_honoured(tmp_path: Path) -> None:
    runtime = _classifier(
        tmp_path,
        session_options={
            # inter_op 2: with 1 inter-op thread onnxruntime itself switches parallel back to sequential.
            "intra_op_num_threads": 2,
            "inter_op_num_threads": 2,
            "execution_mode": "parallel",
            "graph_optimization_level": 1,
            "enable_cpu_mem_arena": False,
            "extra_session_config": {"session.intra_op.allow_spinning": "0"},
        },
        threads=1,
    )
    options = runtime.session.get_session_options()
    assert options.intra_op_num_threads == 2  # the package wins over the server's default
    assert options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.enable_cpu_mem_arena is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_threads_argument_applies_when_package_is_silent(tmp_path: Path) -> None:
    runtime = _classifier(tmp_path, threads=1)
    assert runtime.session.get_session_options().intra_op_num_threads == 1


def test_optimization_level_zero_is_honoured(tmp_path: Path) -> None:
    # mlflow skips falsy values here (`if level := ...`), so 0 = ORT_DISABLE_ALL never applied there.
    runtime = _classifier(tmp_path, session_options={"graph_optimization_level": 0})
    level = runtime.session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_invalid_session_option_is_an_invalid_package(packages: PackageCache, tmp_path: Path) -> None:
    import yaml

    path = packages.copy("onnx_classifier", tmp_path / "pkg")
    doc = yaml.safe_load((path / "MLmodel").read_text())
    doc["flavors"]["onnx"]["onnx_session_options"] = {"execution_mode": "sideways"}
    (path / "MLmodel").write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidPackage, match="onnx_session_options .* invalid value: KeyError: 'SIDEWAYS'"):
        load_runtime(read_package(path))


# --------------------------------------------------------------------------- custom pyfunc


def test_custom_pyfunc_equals_mlflow_with_params_and_config(packages: PackageCache, runtimes: dict[str, Any]) -> None:
    runtime = runtimes["get"]("pyfunc_custom")
    model = mlflow_model(packages.get("pyfunc_custom"))
    df = pd.DataFrame({"x": [1.0, 2.0, 4.0]})
    for params in (None, {"scale": 3.0}):
        ours = runtime.predict(frame_of(df), params)
        theirs = model.predict(df, params=params)
        pd.testing.assert_frame_equal(ours, theirs)
        assert wire(ours) == mlflow_wire(theirs)
    # offset 0.5 comes from the package's model_config: proof it reached _load_pyfunc.
    assert wire(runtime.predict(frame_of(df), {"scale": 2.0})) == [{"y": 2.5}, {"y": 4.5}, {"y": 8.5}]


def test_custom_pyfunc_model_error(runtimes: dict[str, Any]) -> None:
    with pytest.raises(ModelPredictError, match=re.escape(PREDICT_ERROR_PREFIX + "KeyError: 'x'")):
        runtimes["get"]("pyfunc_custom").predict(Frame(columns={"z": np.ones(2)}, nrows=2), None)


def test_custom_pyfunc_without_pandas_names_the_extra(packages: PackageCache, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.pyfunc.model  # noqa: F401 - loaded while pandas is still importable

    runtime = load_runtime(read_package(packages.get("pyfunc_custom")))
    monkeypatch.setattr(runtime, "_pandas", None)  # as if `import pandas` had failed at load
    with pytest.raises(GatewayError, match=r"pandas is not installed.*gateway\[pandas\]"):
        runtime.predict(Frame(columns={"x": np.ones(2)}, nrows=2), None)


# --------------------------------------------------------------------------- to_jsonable


@pytest.mark.parametrize(
    "prediction",
    [
        np.array([1, 2, 3]),
        np.array([[0.5, np.float32(0.25)]], dtype=np.float32),
        {"label": np.array([0, 1]), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]])},
        pd.DataFrame({"a": [1.5, 2.5], "b": ["x", "y"], "c": [1, 2]}),
        pd.DataFrame([[1, 2]]),
        pd.Series([2.0, 4.0], name="x"),
        pd.Series([1, 2]),
        [np.int64(3), np.float32(0.5), "s", None, True],
        {"nested": {"v": np.array([1, 2]), "s": np.bool_(True)}, "n": np.int32(7)},
        np.float64(1.25),
        b"\x00\x01binary",
        np.array(["a", "b"]),
    ],
    ids=lambda p: type(p).__name__,
)
def test_to_jsonable_matches_mlflow(prediction: Any) -> None:
    assert wire(prediction) == mlflow_wire(prediction)


def test_to_jsonable_frame_and_special_values() -> None:
    frame = Frame(columns={"label": np.array([0, 2]), 1: np.array([b"ab", b"c"], dtype=object)}, nrows=2)
    assert to_jsonable(frame) == [{"label": 0, "1": "YWI=\n"}, {"label": 2, "1": "Yw==\n"}]
    assert wire(np.array([np.nan, 1.0])) == [None, 1.0]  # orjson writes NaN as null
    assert to_jsonable(np.array(["2024-01-02T03:04:05"], dtype="datetime64[ns]")) == ["2024-01-02T03:04:05.000000000"]
    assert to_jsonable({np.int64(1): np.float32(2.0)}) == {"1": 2.0}
