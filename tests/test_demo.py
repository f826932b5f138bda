"""The demo package (gateway.demo) is a valid MLflow model package, checked with mlflow itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc")
mlflow_models = pytest.importorskip("mlflow.models")

from gateway.demo import FEATURES, DemoDependencyError, build_demo_package, main  # noqa: E402


def _ort_predict(package: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": rows.astype(np.float32)}), strict=True))


def _example_rows(package: Path) -> np.ndarray:
    example = json.loads((package / "input_example.json").read_text())
    assert example["columns"] == list(FEATURES)
    assert "index" not in example
    return np.asarray(example["data"], dtype=np.float64)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_package(tmp_path_factory.mktemp("demo") / "iris")


def test_package_layout(package: Path) -> None:
    names = {p.name for p in package.iterdir()}
    assert {"MLmodel", "model.onnx", "input_example.json", "serving_input_example.json"} <= names
    assert {"requirements.txt", "python_env.yaml", "conda.yaml"} <= names
    session = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    [inp] = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input", "tensor(float)", 4)
    outputs = {o.name: o.type for o in session.get_outputs()}
    assert outputs == {"label": "tensor(int64)", "probabilities": "tensor(float)"}
    serving = json.loads((package / "serving_input_example.json").read_text())
    assert serving == {"dataframe_split": json.loads((package / "input_example.json").read_text())}


def test_mlflow_loads_package_and_predicts_like_onnxruntime(package: Path) -> None:
    model = mlflow_pyfunc.load_model(str(package))
    rows = _example_rows(package)
    expected = _ort_predict(package, rows)
    # mlflow's onnx pyfunc cannot turn two outputs of different shapes into a DataFrame (it fails
    # with "All arrays must be of the same length"), so ask its onnx wrapper with a feed dict, the
    # form it answers with {output_name: ndarray}.
    got = model._model_impl.predict({"input": rows})
    assert set(got) == {"label", "probabilities"}
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)
    # one example row of each class, and the classifier gets them right
    assert expected["label"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(expected["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_label_only_variant_predicts_dataframes_through_pyfunc(tmp_path: Path) -> None:
    package = build_demo_package(tmp_path / "iris_label", label_only=True)
    meta = mlflow_models.Model.load(str(package))
    example = meta.load_input_example(str(package))
    assert list(example.columns) == list(FEATURES)
    predictions = mlflow_pyfunc.load_model(str(package)).predict(example)  # schema enforcement on
    expected = _ort_predict(package, _example_rows(package))
    assert list(predictions.columns) == ["label"]
    np.testing.assert_array_equal(predictions["label"].to_numpy(), expected["label"])
    assert [o.name for o in meta.signature.outputs.inputs] == ["label"]


def test_mlflow_parses_signature_and_example(package: Path) -> None:
    meta = mlflow_models.Model.load(str(package))
    signature = meta.signature
    assert signature is not None
    assert signature.inputs.input_names() == list(FEATURES)
    assert [spec.type.name for spec in signature.inputs.inputs] == ["double"] * 4
    assert all(spec.required for spec in signature.inputs.inputs)
    outputs = {spec.name: (spec.type, spec.shape) for spec in signature.outputs.inputs}
    assert outputs == {"label": (np.dtype("int64"), (-1,)), "probabilities": (np.dtype("float32"), (-1, 3))}
    assert signature.params is None
    assert set(meta.flavors) == {"onnx", "python_function"}
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    assert meta.flavors["onnx"]["providers"] == ["CPUExecutionProvider"]
    assert meta.saved_input_example_info["type"] == "dataframe"
    assert len(meta.model_uuid) == 32
    assert meta.model_size_bytes > 0
    example = meta.load_input_example(str(package))
    np.testing.assert_array_equal(example.to_numpy(), _example_rows(package))


def test_build_is_reproducible_and_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = {p.name: p.read_bytes() for p in build_demo_package(tmp_path / "a").iterdir()}
    out = tmp_path / "b"
    build_demo_package(out)
    (out / "stale.txt").write_text("left over from an older build")
    second = {p.name: p.read_bytes() for p in build_demo_package(out).iterdir()}  # overwrites
    assert set(first) == set(second)
    for name in first:
        if name == "MLmodel":
            continue
        assert first[name] == second[name], name

    def without_time(raw: bytes) -> list[bytes]:
        return [line for line in raw.splitlines() if not line.startswith(b"utc_time_created:")]

    assert without_time(first["MLmodel"]) == without_time(second["MLmodel"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no staging directory left

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    third = build_demo_package(tmp_path / "c")
    fourth = build_demo_package(tmp_path / "d")
    for name in first:
        assert (third / name).read_bytes() == (fourth / name).read_bytes(), name
    assert b"utc_time_created: '2023-11-14 22:13:20.000000'" in (third / "MLmodel").read_bytes()


def test_refuses_to_replace_a_directory_that_is_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        build_demo_package(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_missing_demo_extra_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # makes `import skl2onnx` raise ImportError
    with pytest.raises(DemoDependencyError, match=r"pip install 'gateway\[demo\]'"):
        build_demo_package(tmp_path / "iris")
    assert not (tmp_path / "iris").exists()


def test_cli_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "models" / "iris")]) == 0
    assert (tmp_path / "models" / "iris" / "MLmodel").is_file()
    assert capsys.readouterr().out.strip() == str(tmp_path / "models" / "iris")
