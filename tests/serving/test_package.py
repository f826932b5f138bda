"""ModelPackage: confinement to the artifact roots, MLmodel parsing, validation and warm-up bodies.

Every package here is written by mlflow's own savers (tests/packages.py); broken ones are copies
damaged the way real packages get damaged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import InvalidPackage
from gateway.serving.package import ModelPackage, read_package, read_serving_input_example, resolve_source
from gateway.serving.runtimes.loading import load_runtime
from tests.packages import (
    BUILDERS,
    IRIS_COLUMNS,
    MISSING_LOADER_MODULE,
    PackageCache,
    PackageKind,
    break_package,
    model_file_of,
)

EXPECTED = {
    # kind: (flavor, loader_module, model file name)
    "sklearn_skops": ("python_function", "mlflow.sklearn", "model.skops"),
    "sklearn_pickle": ("python_function", "mlflow.sklearn", "model.pkl"),
    "sklearn_cloudpickle": ("python_function", "mlflow.sklearn", "model.pkl"),
    "sklearn_proba": ("python_function", "mlflow.sklearn", "model.skops"),
    "onnx_classifier": ("onnx", "mlflow.onnx", "model.onnx"),
    "onnx_label_only": ("onnx", "mlflow.onnx", "model.onnx"),
    "onnx_regressor": ("onnx", "mlflow.onnx", "model.onnx"),
    "onnx_external": ("onnx", "mlflow.onnx", "model.onnx"),
    "onnx_multi_input": ("onnx", "mlflow.onnx", "model.onnx"),
    "onnx_multi_input_2d": ("onnx", "mlflow.onnx", "model.onnx"),
    "pyfunc_custom": ("python_function", "mlflow.pyfunc.model", "python_model.pkl"),
    "pyfunc_slow": ("python_function", "mlflow.pyfunc.model", "python_model.pkl"),
    "pyfunc_gated": ("python_function", "mlflow.pyfunc.model", "python_model.pkl"),
}


def _edit_mlmodel(path: Path, change: Any) -> None:
    doc = yaml.safe_load((path / "MLmodel").read_text())
    change(doc)
    (path / "MLmodel").write_text(yaml.safe_dump(doc))


def _invalid(path: Path) -> str:
    with pytest.raises(InvalidPackage) as info:
        read_package(path).validate()
    return info.value.message


# --------------------------------------------------------------------------- reading


def test_every_kind_is_covered() -> None:
    assert set(EXPECTED) == set(BUILDERS)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_read_package_every_kind(packages: PackageCache, kind: Any) -> None:
    path = packages.get(kind)
    pkg = read_package(path)
    flavor, loader, file_name = EXPECTED[kind]
    assert (pkg.flavor, pkg.loader_module) == (flavor, loader)
    assert pkg.model_file is not None and pkg.model_file.name == file_name and pkg.model_file.is_file()
    assert pkg.path == path
    # The raw signature mapping is kept as mlflow wrote it: JSON strings, parsed elsewhere.
    assert pkg.signature is not None and isinstance(pkg.signature["inputs"], str)
    json.loads(pkg.signature["inputs"])
    if kind == "pyfunc_slow":
        # Saved without an input example on purpose (warm-up would sleep through it).
        assert pkg.saved_input_example_info is None
    else:
        assert pkg.saved_input_example_info is not None
        assert pkg.saved_input_example_info["artifact_path"] == "input_example.json"
    pkg.validate()


def test_sklearn_details(packages: PackageCache) -> None:
    formats: list[tuple[PackageKind, str]] = [
        ("sklearn_skops", "skops"),
        ("sklearn_pickle", "pickle"),
        ("sklearn_cloudpickle", "cloudpickle"),
    ]
    for kind, fmt in formats:
        pkg = read_package(packages.get(kind))
        assert pkg.sklearn_format == fmt
        assert pkg.data_path == pkg.model_file
    assert read_package(packages.get("sklearn_proba")).pyfunc_conf["predict_fn"] == "predict_proba"


def test_custom_pyfunc_data_path_is_the_model_dir(packages: PackageCache) -> None:
    pkg = read_package(packages.get("pyfunc_custom"))
    assert pkg.data_path == pkg.path  # no `data` key: _load_pyfunc gets the model directory
    assert pkg.pyfunc_conf["config"] == {"offset": 0.5}
    assert json.loads(pkg.signature["params"])[0]["name"] == "scale"  # type: ignore[index]


def test_unknown_keys_are_ignored_and_metadata_kept(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("onnx_classifier", tmp_path / "pkg")

    def change(doc: dict[str, Any]) -> None:
        doc["some_future_key"] = {"nested": [1, 2]}
        doc["metadata"] = {"team": "flowers"}
        doc["flavors"]["onnx"]["future_flavor_key"] = True
        doc["flavors"]["python_function"]["another"] = "x"

    _edit_mlmodel(path, change)
    pkg = read_package(path)
    assert pkg.flavor == "onnx"
    assert pkg.metadata == {"team": "flowers"}
    pkg.validate()


def test_pyfunc_entry_with_onnx_loader_is_served_as_onnx(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("onnx_regressor", tmp_path / "pkg")
    _edit_mlmodel(path, lambda d: d["flavors"].pop("onnx"))
    pkg = read_package(path)
    assert (pkg.flavor, pkg.model_file) == ("onnx", path / "model.onnx")
    load_runtime(pkg).unload()


def test_sklearn_format_defaults_to_pickle(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("sklearn_pickle", tmp_path / "pkg")
    _edit_mlmodel(path, lambda d: d["flavors"]["sklearn"].pop("serialization_format"))
    pkg = read_package(path)
    assert pkg.sklearn_format == "pickle"
    load_runtime(pkg).unload()


# --------------------------------------------------------------------------- refusals


def test_no_mlmodel(packages: PackageCache, tmp_path: Path) -> None:
    path = break_package(packages.copy("onnx_classifier", tmp_path / "pkg"), "no_mlmodel")
    message = _invalid(path)
    assert "no MLmodel file" in message and str(path / "MLmodel") in message


def test_not_a_directory(tmp_path: Path) -> None:
    assert "is not a directory" in _invalid(tmp_path / "nothing-here")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("flavors: [unclosed", "cannot be read"),
        ("- just\n- a list\n", "is not a YAML mapping"),
        ("model_uuid: abc\n", "has no 'flavors' section"),
    ],
)
def test_unreadable_mlmodel(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "MLmodel").write_text(text)
    message = _invalid(tmp_path)
    assert words in message and str(tmp_path) in message


def test_unknown_flavor(packages: PackageCache, tmp_path: Path) -> None:
    path = break_package(packages.copy("sklearn_skops", tmp_path / "pkg"), "unknown_flavor")
    message = _invalid(path)
    assert "no flavor we can serve" in message and "'tensorflow'" in message and str(path) in message
    assert "'onnx'" in message and "'python_function'" in message


@pytest.mark.parametrize("kind", ["onnx_classifier", "sklearn_skops", "sklearn_pickle", "pyfunc_custom"])
def test_missing_model_file(packages: PackageCache, tmp_path: Path, kind: Any) -> None:
    path = packages.copy(kind, tmp_path / "pkg")
    name = model_file_of(path).name
    break_package(path, "missing_model_file")
    message = _invalid(path)
    assert f"missing its model file '{name}'" in message and str(path) in message


def test_model_file_deleted_after_reading(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("onnx_classifier", tmp_path / "pkg")
    pkg = read_package(path)
    (path / "model.onnx").unlink()
    with pytest.raises(InvalidPackage, match="missing its model file 'model.onnx'"):
        pkg.validate()


def test_model_file_outside_the_package_is_refused(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("onnx_classifier", tmp_path / "pkg")
    (tmp_path / "elsewhere.onnx").write_bytes((path / "model.onnx").read_bytes())
    _edit_mlmodel(path, lambda d: d["flavors"]["onnx"].update(data="../elsewhere.onnx"))
    message = _invalid(path)
    assert "'../elsewhere.onnx'" in message and "outside the package" in message


def test_loader_not_installed(packages: PackageCache, tmp_path: Path) -> None:
    path = break_package(packages.copy("pyfunc_custom", tmp_path / "pkg"), "loader_not_installed")
    top = MISSING_LOADER_MODULE.split(".")[0]
    message = _invalid(path)
    assert message.startswith(
        f"Model package needs the Python package '{top}' (loader_module {MISSING_LOADER_MODULE}), "
        "which is not installed."
    )
    assert str(path) in message
    with pytest.raises(InvalidPackage, match=top):
        load_runtime(read_package(path))


def test_mlflow_not_installed(packages: PackageCache, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = read_package(packages.get("pyfunc_custom"))
    # None in sys.modules makes `import mlflow` fail, as it does where mlflow is not installed.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(InvalidPackage) as info:
        pkg.validate()
    assert info.value.message.startswith(
        "Model package needs the Python package 'mlflow' (loader_module mlflow.pyfunc.model), which is not installed."
    )


def test_loader_module_missing_from_installed_package(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("pyfunc_custom", tmp_path / "pkg")
    _edit_mlmodel(path, lambda d: d["flavors"]["python_function"].update(loader_module="json.no_such_loader"))
    message = _invalid(path)
    assert "json.no_such_loader" in message and "'json' has no such module" in message


def test_loader_shipped_in_package_code_dir(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("pyfunc_custom", tmp_path / "pkg")
    (path / "code").mkdir()
    (path / "code" / "gw_test_code_loader.py").write_text(
        "class Model:\n"
        "    def __init__(self, path):\n        self.path = path\n"
        "    def predict(self, data):\n        return [self.path]\n\n"
        "def _load_pyfunc(path):\n    return Model(path)\n"
    )
    _edit_mlmodel(
        path,
        lambda d: d["flavors"]["python_function"].update(loader_module="gw_test_code_loader", code="code", config=None),
    )
    pkg = read_package(path)
    runtime = load_runtime(pkg)
    try:
        assert runtime.predict([1], None) == [str(path)]  # type: ignore[arg-type]
    finally:
        sys.path.remove(str(path / "code"))
        sys.modules.pop("gw_test_code_loader", None)


@pytest.mark.parametrize(
    ("kind", "blocked", "named"),
    [
        ("sklearn_skops", "skops", "'skops'"),
        ("sklearn_cloudpickle", "cloudpickle", "'cloudpickle'"),
        ("sklearn_pickle", "sklearn", "'scikit-learn'"),
    ],
)
def test_sklearn_extra_missing(
    packages: PackageCache, monkeypatch: pytest.MonkeyPatch, kind: Any, blocked: str, named: str
) -> None:
    pkg = read_package(packages.get(kind))
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(InvalidPackage) as info:
        pkg.validate()
    message = info.value.message
    assert named in message and "pip install 'gateway[sklearn]'" in message and str(pkg.path) in message


def test_pickle_package_needs_no_skops(packages: PackageCache, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = read_package(packages.get("sklearn_pickle"))
    monkeypatch.setitem(sys.modules, "skops", None)
    pkg.validate()


def test_unknown_sklearn_format(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("sklearn_pickle", tmp_path / "pkg")
    _edit_mlmodel(path, lambda d: d["flavors"]["sklearn"].update(serialization_format="joblib"))
    message = _invalid(path)
    assert "'joblib'" in message and "skops" in message


def test_corrupt_onnx_file_fails_at_load(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("onnx_classifier", tmp_path / "pkg")
    (path / "model.onnx").write_bytes(b"not an onnx model")
    pkg = read_package(path)
    pkg.validate()  # cheap checks pass: the file is there
    with pytest.raises(InvalidPackage, match="cannot be loaded") as info:
        load_runtime(pkg)
    assert str(path / "model.onnx") in info.value.message


# --------------------------------------------------------------------------- resolve_source


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "artifacts"
    (root / "iris" / "1").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


def test_resolve_inside(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    assert resolve_source(str(root / "iris" / "1"), [root]) == (root / "iris" / "1").resolve()
    assert resolve_source(f"file://{root}/iris/1", [root]) == (root / "iris" / "1").resolve()
    assert resolve_source(f"file:{root}/iris/1", [root]) == (root / "iris" / "1").resolve()
    assert resolve_source(str(root / "iris" / ".." / "iris" / "1"), [root]) == (root / "iris" / "1").resolve()


def test_resolve_picks_any_root(roots: tuple[Path, Path]) -> None:
    root, outside = roots
    assert resolve_source(str(outside), [root, outside]) == outside.resolve()


@pytest.mark.parametrize("how", ["dotdot", "symlink", "file_uri"])
def test_resolve_outside_is_refused(roots: tuple[Path, Path], how: str) -> None:
    root, outside = roots
    if how == "dotdot":
        source = str(root / "iris" / ".." / ".." / "outside")
    elif how == "symlink":
        (root / "link").symlink_to(outside, target_is_directory=True)
        source = str(root / "link")
    else:
        source = f"file://{outside}"
    with pytest.raises(InvalidPackage) as info:
        resolve_source(source, [root])
    message = info.value.message
    assert source in message and str(outside.resolve()) in message and str(root.resolve()) in message
    assert "outside the artifact roots" in message


def test_resolve_other_schemes_refused(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    for source, scheme in (("s3://bucket/model", "s3"), ("runs:/abc/model", "runs"), ("https://host/model", "https")):
        with pytest.raises(InvalidPackage, match=f"URI scheme '{scheme}'"):
            resolve_source(source, [root])
    with pytest.raises(InvalidPackage, match="names the host 'server'"):
        resolve_source(f"file://server{root}", [root])
    with pytest.raises(InvalidPackage, match="no artifact roots"):
        resolve_source(str(root), [])


# --------------------------------------------------------------------------- warm-up body


def test_serving_input_example_file_is_used(packages: PackageCache) -> None:
    pkg = read_package(packages.get("sklearn_skops"))
    body = read_serving_input_example(pkg)
    assert body == (pkg.path / "serving_input_example.json").read_bytes()
    assert body is not None and json.loads(body)["dataframe_split"]["columns"] == IRIS_COLUMNS


def _without_serving_file(packages: PackageCache, kind: Any, dest: Path) -> tuple[ModelPackage, Any]:
    path = packages.copy(kind, dest)
    expected = json.loads((path / "serving_input_example.json").read_text())
    (path / "serving_input_example.json").unlink()
    return read_package(path), expected


@pytest.mark.parametrize("kind", ["sklearn_skops", "onnx_classifier", "pyfunc_custom", "onnx_multi_input"])
def test_serving_input_built_from_input_example(packages: PackageCache, tmp_path: Path, kind: Any) -> None:
    pkg, expected = _without_serving_file(packages, kind, tmp_path / "pkg")
    body = read_serving_input_example(pkg)
    assert body is not None and json.loads(body) == expected  # what mlflow itself wrote


def test_no_input_example(packages: PackageCache, tmp_path: Path) -> None:
    path = packages.copy("onnx_regressor", tmp_path / "pkg")
    for name in ("serving_input_example.json", "input_example.json"):
        (path / name).unlink()
    _edit_mlmodel(path, lambda d: d.pop("saved_input_example_info"))
    assert read_serving_input_example(read_package(path)) is None
