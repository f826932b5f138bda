"""``python_function`` packages: mlflow.sklearn through our own loader, any other loader module as
``mlflow.pyfunc.load_model`` would run it.

For a custom loader (``mlflow.pyfunc.model``, a package's own module) the steps follow
``mlflow.pyfunc.load_model``: put the package's ``code`` directory on ``sys.path``, import
``loader_module``, call ``_load_pyfunc(data_path[, model_config])`` where ``data_path`` is
``<model_dir>/<data>`` when ``data`` is set, else the model directory, then predict through the
``predict_fn`` attribute (``predict`` by default), passing ``params`` only when it takes them.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from gateway.error_text import first_line
from gateway.errors import GatewayError, InvalidPackage, ServiceUnavailable
from gateway.serving.package import SKLEARN_LOADER, ModelPackage, code_dir
from gateway.serving.runtimes._common import (
    PANDAS_EXTRA,
    columns_of,
    frame_to_dataframe,
    frame_to_matrix,
    import_pandas,
    predict_error,
)
from gateway.serving.runtimes.sklearn_loader import load_sklearn_model
from gateway.serving.types import Frame, ModelInput

logger = logging.getLogger("gateway.serving")


class PyfuncRuntime:
    """A ``python_function`` model; ``predict`` calls it in the caller's thread."""

    def __init__(self, pkg: ModelPackage) -> None:
        self.package = pkg
        self.is_sklearn = pkg.loader_module == SKLEARN_LOADER
        predict_fn = str(pkg.pyfunc_conf.get("predict_fn") or "predict")
        self.model: Any = load_sklearn_model(pkg) if self.is_sklearn else _load_with_loader(pkg)
        fn = getattr(self.model, predict_fn, None)
        if not callable(fn):
            raise InvalidPackage(
                f"Model package at '{pkg.path}' names predict_fn '{predict_fn}', which the "
                f"loaded {type(self.model).__name__} does not have."
            )
        self._predict_fn: Callable[..., Any] | None = fn
        # mlflow passes params only when the method has a `params` argument (not just **kwargs);
        # sklearn estimators never take them.
        self._takes_params = not self.is_sklearn and _takes_params(fn)
        # Frames become DataFrames when pandas is here (sklearn keeps its feature names); a custom
        # model gets nothing else, so it needs pandas.
        self._pandas = import_pandas()
        logger.info("Loaded pyfunc model %s (loader %s, predict_fn %s)", pkg.path, pkg.loader_module, predict_fn)

    def predict(self, data: ModelInput, params: dict[str, Any] | None = None) -> Any:
        fn = self._predict_fn
        if fn is None:
            raise ServiceUnavailable(f"Model at '{self.package.path}' has been unloaded.")
        model_input = self._convert(data)
        try:
            if self._takes_params:
                return fn(model_input, params=params)
            return fn(model_input)
        except Exception as exc:
            raise predict_error(exc) from exc

    def unload(self) -> None:
        self._predict_fn = None
        self.model = None

    def _convert(self, data: ModelInput) -> Any:
        if isinstance(data, dict) and self.is_sklearn:
            # mlflow's column-signature enforcement turns a dict of columns into a DataFrame.
            data = columns_of(data) or data
        if not isinstance(data, Frame):
            return data
        if self._pandas is not None:
            return frame_to_dataframe(data, self._pandas)
        if self.is_sklearn:
            return frame_to_matrix(data)
        raise GatewayError(
            f"Model at '{self.package.path}' (loader {self.package.loader_module}) takes a pandas DataFrame, "
            f"but pandas is not installed. Install it with: {PANDAS_EXTRA}"
        )


def _load_with_loader(pkg: ModelPackage) -> Any:
    code = code_dir(pkg)
    if code is not None and str(code) not in sys.path:
        sys.path.insert(0, str(code))  # as mlflow's _add_code_from_conf_to_system_path does
    try:
        module = importlib.import_module(pkg.loader_module)
    except ImportError as exc:
        missing = (exc.name or pkg.loader_module).split(".", 1)[0]
        raise InvalidPackage(
            f"Model package needs the Python package '{missing}' (loader_module {pkg.loader_module}), "
            f"which is not installed. Package: '{pkg.path}'."
        ) from exc
    loader = getattr(module, "_load_pyfunc", None)
    if not callable(loader):
        raise InvalidPackage(f"loader_module {pkg.loader_module} of '{pkg.path}' has no _load_pyfunc function.")
    config = pkg.pyfunc_conf.get("config")
    try:
        if config and _positional_count(loader) >= 2:
            return loader(str(pkg.data_path), dict(config))
        if config:
            logger.warning("%s._load_pyfunc takes no model_config; ignoring config of %s", pkg.loader_module, pkg.path)
        return loader(str(pkg.data_path))
    except GatewayError:
        raise
    except Exception as exc:
        raise InvalidPackage(
            f"Loading '{pkg.path}' with {pkg.loader_module}._load_pyfunc failed: {first_line(exc)}"
        ) from exc


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def _takes_params(fn: Callable[..., Any]) -> bool:
    try:
        param = inspect.signature(fn).parameters.get("params")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind is not inspect.Parameter.VAR_KEYWORD
