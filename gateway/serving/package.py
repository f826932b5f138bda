"""An MLflow model package on disk: where it may live, what its MLmodel says, whether we can serve it.

``resolve_source`` confines a package location to the configured artifact roots, ``read_package``
parses the ``MLmodel`` file into a ``ModelPackage``, ``ModelPackage.validate`` checks everything that
can be checked without loading weights, and ``read_serving_input_example`` finds a warm-up body.

Every refusal is an ``InvalidPackage`` whose message names what is missing and where.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import yaml

from gateway.errors import InvalidPackage

logger = logging.getLogger("gateway.serving")

MLMODEL_FILE = "MLmodel"
SKLEARN_LOADER = "mlflow.sklearn"
ONNX_LOADER = "mlflow.onnx"
SKLEARN_FORMATS = ("pickle", "cloudpickle", "skops")
SKLEARN_EXTRA = "pip install 'gateway[sklearn]'"
# Keys of a unified-LLM request body: such a body is sent as is, not wrapped in "inputs".
_LLM_KEYS = frozenset({"messages", "prompt", "input"})

# "s3://", "runs:/", "file:"...; two letters at least so a Windows drive ("C:") is not a scheme.
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")

Flavor = Literal["onnx", "python_function"]


# PATH_MAX on Linux: no longer path can be opened.
MAX_SOURCE_CHARS = 4096


def _shown(source: str, limit: int = 120) -> str:
    """A source for an error message: shortened, so a client cannot make us echo (or log) megabytes."""
    return repr(source) if len(source) <= limit else repr(source[: limit - 3] + "...")


def resolve_source(source: str, artifact_roots: Sequence[Path]) -> Path:
    """Turn a local path or ``file://`` URI into a real path that lies inside one of ``artifact_roots``.

    Symlinks are followed before the check, so neither ``..`` nor a symlink can lead outside. A source
    no file system could hold (a NUL character, more than ``MAX_SOURCE_CHARS``) is refused as such.
    """
    if "\x00" in source:
        raise InvalidPackage(f"Model source {_shown(source)} contains a NUL character; no path can hold one.")
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidPackage(
            f"Model source {_shown(source)} is {len(source)} characters long; the limit is {MAX_SOURCE_CHARS}."
        )
    scheme = _URI_SCHEME.match(source)
    if scheme is not None:
        parsed = urlparse(source)
        if scheme.group(1).lower() != "file":
            raise InvalidPackage(
                f"Model source {source!r} uses the URI scheme '{scheme.group(1)}'; only local paths and "
                "file:// URIs are served. Copy the package under an artifact root first."
            )
        if parsed.netloc not in ("", "localhost"):
            raise InvalidPackage(
                f"Model source {source!r} names the host '{parsed.netloc}'; file:// URIs must be local (file:///path)."
            )
        raw = Path(unquote(parsed.path))
    else:
        raw = Path(source).expanduser()
    if not artifact_roots:
        raise InvalidPackage(f"Model source {source!r} cannot be served: no artifact roots are configured.")
    try:
        real = raw.resolve()
    except OSError as exc:  # e.g. a symlink loop
        raise InvalidPackage(f"Model source {_shown(source)} is not a usable path: {exc.strerror or exc}.") from None
    roots = [Path(root).resolve() for root in artifact_roots]
    if not any(real == root or real.is_relative_to(root) for root in roots):
        listed = ", ".join(f"'{r}'" for r in roots)
        raise InvalidPackage(
            f"Model source {source!r} resolves to '{real}', which is outside the artifact roots ({listed})."
        )
    return real


@dataclass(frozen=True, slots=True)
class ModelPackage:
    """What one MLmodel file says about a package, narrowed to the flavor we serve.

    ``flavor`` is ``onnx`` when the package has an onnx flavor (or a pyfunc flavor whose loader is
    ``mlflow.onnx``), else ``python_function``. ``model_file`` is the weights file (``model.onnx``,
    ``model.skops``, ``python_model.pkl``, ...) or None when the loader gets a directory and no single
    file can be named. ``data_path`` is what a pyfunc loader's ``_load_pyfunc`` receives.
    ``signature`` is the raw MLmodel mapping (JSON strings), parsed elsewhere.
    """

    path: Path
    flavor: Flavor
    loader_module: str
    model_file: Path | None
    data_path: Path
    flavor_conf: Mapping[str, Any]
    pyfunc_conf: Mapping[str, Any]
    sklearn_conf: Mapping[str, Any] | None = None
    signature: Mapping[str, Any] | None = None
    saved_input_example_info: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    mlmodel: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sklearn_format(self) -> str:
        """The sklearn serialization format; mlflow's loader assumes pickle when the key is absent."""
        conf = self.sklearn_conf or {}
        return str(conf.get("serialization_format") or "pickle")

    def validate(self) -> None:
        """Check what can be checked without loading weights: files present, loader importable."""
        if self.model_file is not None and not self.model_file.exists():
            raise InvalidPackage(
                f"Model package at '{self.path}' is missing its model file "
                f"'{self.model_file.name}' (expected at '{self.model_file}')."
            )
        if self.flavor == "onnx":
            return
        if self.loader_module == SKLEARN_LOADER:
            _check_sklearn_dependencies(self)
        else:
            _check_loader_importable(self)


def read_package(path: Path) -> ModelPackage:
    """Parse ``path/MLmodel`` tolerantly (unknown keys ignored) and pick the flavor we serve."""
    path = Path(path)
    doc = _read_mlmodel(path)
    flavors = doc.get("flavors")
    if not isinstance(flavors, Mapping) or not flavors:
        raise InvalidPackage(f"MLmodel in '{path}' has no 'flavors' section; nothing to serve.")
    pyfunc = flavors.get("python_function")
    pyfunc = pyfunc if isinstance(pyfunc, Mapping) else None
    onnx_conf = flavors.get("onnx")
    sklearn_conf = flavors.get("sklearn")
    sklearn_conf = sklearn_conf if isinstance(sklearn_conf, Mapping) else None
    common: dict[str, Any] = {
        "signature": _mapping_or_none(doc.get("signature")),
        "saved_input_example_info": _mapping_or_none(doc.get("saved_input_example_info")),
        "metadata": _mapping_or_none(doc.get("metadata")),
        "mlmodel": doc,
    }

    loader = str(pyfunc.get("loader_module") or "") if pyfunc else ""
    if isinstance(onnx_conf, Mapping) or loader == ONNX_LOADER:
        conf: Mapping[str, Any] = onnx_conf if isinstance(onnx_conf, Mapping) else (pyfunc or {})
        model_file = _package_file(path, conf.get("data") or (pyfunc or {}).get("data"), "onnx model file")
        pkg = ModelPackage(
            path=path,
            flavor="onnx",
            loader_module=ONNX_LOADER,
            model_file=model_file,
            data_path=model_file,
            flavor_conf=conf,
            pyfunc_conf=pyfunc or {},
            **common,
        )
    elif pyfunc is not None and loader:
        pkg = _pyfunc_package(path, pyfunc, loader, sklearn_conf, common)
    elif sklearn_conf is not None:
        # An sklearn flavor without its pyfunc entry (hand-written MLmodel): same loader, same file.
        pkg = _pyfunc_package(
            path, {"model_path": sklearn_conf.get("pickled_model")}, SKLEARN_LOADER, sklearn_conf, common
        )
    else:
        found = ", ".join(f"'{name}'" for name in flavors) or "none"
        detail = " ('python_function' has no loader_module)" if pyfunc is not None else ""
        raise InvalidPackage(
            f"Model package at '{path}' has no flavor we can serve{detail}: found {found}; "
            "supported are 'onnx', 'python_function' and 'sklearn'."
        )

    if pkg.model_file is not None and not pkg.model_file.exists():
        raise InvalidPackage(
            f"Model package at '{path}' is missing its model file "
            f"'{pkg.model_file.name}' (MLmodel says it is at '{pkg.model_file}')."
        )
    if not pkg.data_path.exists():
        raise InvalidPackage(
            f"Model package at '{path}' is missing '{pkg.data_path}', the data path its python_function flavor names."
        )
    return pkg


def read_serving_input_example(pkg: ModelPackage) -> bytes | None:
    """A ready ``/invocations`` JSON body for warm-up, or None when the package has no usable example.

    Prefers ``serving_input_example.json``; otherwise builds the body from ``input_example.json``
    the way mlflow's ``_Example`` would have.
    """
    info = pkg.saved_input_example_info or {}
    serving_name = info.get("serving_input_path") or "serving_input_example.json"
    serving = _inside(pkg.path, serving_name)
    if serving is not None and serving.is_file():
        return serving.read_bytes()
    example = _inside(pkg.path, info.get("artifact_path") or "")
    if not info or example is None or not example.is_file():
        return None
    try:
        raw = json.loads(example.read_bytes())
    except ValueError:
        logger.warning("Input example %s is not valid JSON; no warm-up request", example)
        return None
    data, params = raw, None
    if str(info.get("params", "")).lower() == "true" and isinstance(raw, dict):
        data, params = raw.get("inputs"), raw.get("params")
    kind = info.get("type")
    body: dict[str, Any]
    if kind == "dataframe":
        body = {"dataframe_split": data}
    elif kind in ("sparse_matrix_csc", "sparse_matrix_csr"):
        return None  # the scoring protocol has no sparse input
    elif isinstance(data, dict) and _LLM_KEYS & data.keys():
        body = {**data, **(params or {})}
        params = None
    else:
        body = {"inputs": data}
    if params:
        body["params"] = params
    return json.dumps(body).encode()


# --------------------------------------------------------------------------- internals


def _read_mlmodel(path: Path) -> Mapping[str, Any]:
    mlmodel = path / MLMODEL_FILE
    try:
        is_dir, has_mlmodel = path.is_dir(), mlmodel.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows (is_dir raises on that)
        raise InvalidPackage(f"Model package {_shown(str(path))} cannot be read: {exc.strerror or exc}.") from None
    if not is_dir:
        raise InvalidPackage(f"Model package '{path}' is not a directory (or does not exist).")
    if not has_mlmodel:
        raise InvalidPackage(f"Model package at '{path}' has no MLmodel file (expected '{mlmodel}').")
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(mlmodel.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidPackage(f"MLmodel file '{mlmodel}' cannot be read: {first}") from exc
    if not isinstance(doc, Mapping):
        raise InvalidPackage(f"MLmodel file '{mlmodel}' is not a YAML mapping.")
    return doc


def _pyfunc_package(
    path: Path,
    pyfunc: Mapping[str, Any],
    loader: str,
    sklearn_conf: Mapping[str, Any] | None,
    common: dict[str, Any],
) -> ModelPackage:
    if loader == SKLEARN_LOADER:
        # mlflow.sklearn's pyfunc entry names the file with `model_path` (not `data`).
        rel = pyfunc.get("model_path") or pyfunc.get("data") or (sklearn_conf or {}).get("pickled_model")
        sklearn_file = _package_file(path, rel, "scikit-learn model file")
        return ModelPackage(
            path=path,
            flavor="python_function",
            loader_module=loader,
            model_file=sklearn_file,
            data_path=sklearn_file,
            flavor_conf=pyfunc,
            pyfunc_conf=pyfunc,
            sklearn_conf=sklearn_conf,
            **common,
        )
    # mlflow.pyfunc.load_model: the loader gets <model_dir>/<data> when `data` is set, else the dir.
    data = pyfunc.get("data")
    data_path = _package_file(path, data, "python_function data") if data else path
    model_file: Path | None = None
    if pyfunc.get("python_model"):
        model_file = _package_file(path, pyfunc["python_model"], "python_model file")
    elif pyfunc.get("model_code_path"):
        model_file = _package_file(path, pyfunc["model_code_path"], "model code file")
    elif data:
        model_file = data_path
    return ModelPackage(
        path=path,
        flavor="python_function",
        loader_module=loader,
        model_file=model_file,
        data_path=data_path,
        flavor_conf=pyfunc,
        pyfunc_conf=pyfunc,
        sklearn_conf=sklearn_conf,
        **common,
    )


def _package_file(path: Path, rel: object, what: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise InvalidPackage(f"MLmodel in '{path}' does not name its {what}.")
    resolved = _inside(path, rel)
    if resolved is None:
        raise InvalidPackage(f"MLmodel in '{path}' names its {what} as {rel!r}, which is outside the package.")
    return resolved


def _inside(path: Path, rel: str) -> Path | None:
    """``path/rel`` when it stays inside the package (a crafted MLmodel must not point elsewhere)."""
    if not rel:
        return None
    candidate = path / rel
    real_root = path.resolve()
    if not candidate.resolve().is_relative_to(real_root):
        return None
    return candidate


def _mapping_or_none(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _missing(*modules: str) -> list[str]:
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


_DIST_NAMES = {"sklearn": "scikit-learn"}


def _check_sklearn_dependencies(pkg: ModelPackage) -> None:
    fmt = pkg.sklearn_format
    if fmt not in SKLEARN_FORMATS:
        raise InvalidPackage(
            f"Model package at '{pkg.path}' uses the scikit-learn serialization format "
            f"{fmt!r}; supported are {', '.join(SKLEARN_FORMATS)}."
        )
    needed = ["sklearn"] + ({"skops": ["skops"], "cloudpickle": ["cloudpickle"]}.get(fmt, []))
    missing = _missing(*needed)
    if missing:
        names = ", ".join(f"'{_DIST_NAMES.get(m, m)}'" for m in missing)
        raise InvalidPackage(
            f"Model package at '{pkg.path}' is a scikit-learn model saved as {fmt}; it needs the Python "
            f"package(s) {names}, which are not installed. Install them with: {SKLEARN_EXTRA}"
        )


def _check_loader_importable(pkg: ModelPackage) -> None:
    module = pkg.loader_module
    top = module.split(".", 1)[0]
    code = code_dir(pkg)
    if code is not None and ((code / top).is_dir() or (code / f"{top}.py").is_file()):
        return  # shipped in the package's own code directory, importable once it is on sys.path
    if _missing(top):
        raise InvalidPackage(
            f"Model package needs the Python package '{top}' (loader_module {module}), which is not "
            f"installed. Package: '{pkg.path}'."
        )
    if _missing(module):
        raise InvalidPackage(
            f"Model package names loader_module {module}, but the installed package '{top}' has no such "
            f"module. Package: '{pkg.path}'."
        )


def code_dir(pkg: ModelPackage) -> Path | None:
    """The package's ``code`` directory (mlflow puts it on ``sys.path`` before importing the loader)."""
    code = pkg.pyfunc_conf.get("code")
    if isinstance(code, str) and code:
        found = _inside(pkg.path, code)
        return found if found is not None and found.is_dir() else None
    return None
