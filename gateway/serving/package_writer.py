"""Writing an MLflow-format ONNX model package without mlflow: what the iris demo (``gateway.demo``)
and the bench's MLP model (``loadtest/mlp_model.py``) both write.

A package of ``double`` input columns mapped onto one float input tensor, its ONNX outputs as tensors::

    root/
      MLmodel                     flavors onnx + python_function (loader_module mlflow.onnx)
      model.onnx
      input_example.json          pandas split orient, without index
      serving_input_example.json  a ready ``/invocations`` body ({"dataframe_split": ...})
      requirements.txt, python_env.yaml, conda.yaml

``mlflow.pyfunc.load_model``, ``mlflow models serve`` and ``gateway models register`` take it as is.
The ``model_uuid`` is derived from the model and its signature; ``utc_time_created`` is the build
time, or ``SOURCE_DATE_EPOCH`` when set (then the whole package is byte-identical between builds).

``replace_package`` writes into a sibling temporary directory and renames it into place, so a failed
build leaves the previous package where it was. Used by tools, never by the serving path.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml


def check_package_target(out: Path) -> Path:
    """``out`` made absolute, when a package may be written there: it does not exist, or it is a model
    package (a directory holding ``MLmodel``) or an empty directory. Anything else raises
    ``FileExistsError`` rather than being deleted."""
    out = Path(out).absolute()
    if out.exists() and not (out.is_dir() and ((out / "MLmodel").is_file() or not any(out.iterdir()))):
        raise FileExistsError(f"{out} exists and is not a model package; refusing to overwrite it")
    return out


def replace_package(out: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(directory)`` on a fresh sibling directory of ``out``, then put it in ``out``'s place
    (``out`` as checked by ``check_package_target``); on any failure ``out`` is left as it was."""
    out = check_package_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; a server running as another user must read it
        write(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def write_onnx_package(
    root: Path,
    onnx_bytes: bytes,
    *,
    columns: Sequence[str],
    example: list[list[float]],
    outputs: Sequence[Mapping[str, Any]],
    session_options: Mapping[str, Any] | None = None,
) -> None:
    """Write the package into the existing directory ``root``: ``columns`` are the signature's
    ``double`` inputs in order, ``example`` rows of them, ``outputs`` the signature's tensor specs,
    ``session_options`` the onnx flavor's ``onnx_session_options``."""
    (root / "model.onnx").write_bytes(onnx_bytes)
    (root / "input_example.json").write_text(json.dumps({"columns": list(columns), "data": example}))
    serving = {"dataframe_split": {"columns": list(columns), "data": example}}
    (root / "serving_input_example.json").write_text(json.dumps(serving, indent=2))
    _write_env_files(root)

    signature = {
        "inputs": json.dumps([{"type": "double", "name": name, "required": True} for name in columns]),
        "outputs": json.dumps(list(outputs)),
        "params": None,
    }
    digest = hashlib.sha256(onnx_bytes + json.dumps(signature, sort_keys=True).encode()).digest()
    mlmodel: dict[str, Any] = {
        "flavors": {
            "onnx": {
                "code": None,
                "data": "model.onnx",
                "onnx_session_options": None if session_options is None else dict(session_options),
                "onnx_version": _version("onnx"),
                "providers": ["CPUExecutionProvider"],
            },
            "python_function": {
                "data": "model.onnx",
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.onnx",
                "python_version": platform.python_version(),
            },
        },
        "is_signature_from_type_hint": False,
        "model_size_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        "model_uuid": uuid.UUID(bytes=digest[:16], version=4).hex,
        "saved_input_example_info": {
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "serving_input_path": "serving_input_example.json",
            "type": "dataframe",
        },
        "signature": signature,
        "type_hint_from_example": False,
        "utc_time_created": _created_at(),
    }
    (root / "MLmodel").write_text(yaml.safe_dump(mlmodel, default_flow_style=False))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _created_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _requirements() -> list[str]:
    """What pyfunc needs to load the package (mlflow's own env managers read this file)."""
    reqs = ["mlflow"]
    for dist in ("onnx", "onnxruntime"):
        version = _version(dist)
        reqs.append(f"{dist}=={version}" if version else dist)
    return reqs


def _write_env_files(root: Path) -> None:
    reqs = _requirements()
    (root / "requirements.txt").write_text("\n".join(reqs))
    python_env = {
        "python": platform.python_version(),
        "build_dependencies": ["pip", "setuptools", "wheel"],
        "dependencies": ["-r requirements.txt"],
    }
    (root / "python_env.yaml").write_text(yaml.safe_dump(python_env, sort_keys=False))
    conda_env = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={platform.python_version()}", "pip", {"pip": reqs}],
    }
    (root / "conda.yaml").write_text(yaml.safe_dump(conda_env, sort_keys=False))
