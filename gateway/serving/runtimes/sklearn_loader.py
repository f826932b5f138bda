"""Load the estimator of an ``mlflow.sklearn`` package without mlflow.

Mirrors ``mlflow.sklearn._load_model_from_local_file``: the ``sklearn`` flavor's
``serialization_format`` picks pickle (the default when absent), cloudpickle or skops; skops loads
with the package's ``skops_trusted_types``. Like pickle itself, this runs code from the package:
serve only packages from trusted sources.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from gateway.error_text import first_line
from gateway.errors import InvalidPackage
from gateway.serving.package import SKLEARN_EXTRA, SKLEARN_FORMATS, ModelPackage

logger = logging.getLogger("gateway.serving")


def load_sklearn_model(pkg: ModelPackage) -> Any:
    """The deserialized estimator (or pipeline) of an ``mlflow.sklearn`` package."""
    fmt = pkg.sklearn_format
    path = pkg.model_file
    if path is None or fmt not in SKLEARN_FORMATS:
        raise InvalidPackage(
            f"Model package at '{pkg.path}' has no loadable scikit-learn model "
            f"(file {path}, serialization format {fmt!r})."
        )
    try:
        if fmt == "skops":
            import skops.io

            trusted = (pkg.sklearn_conf or {}).get("skops_trusted_types")
            return skops.io.load(path, trusted=trusted)
        with open(path, "rb") as fh:
            if fmt == "cloudpickle":
                import cloudpickle

                return cloudpickle.load(fh)
            return pickle.load(fh)
    except ImportError as exc:
        # sklearn itself is imported while unpickling; a missing extra surfaces here at the latest.
        raise InvalidPackage(
            f"Model package at '{pkg.path}' ({fmt}) cannot be loaded: the Python package '{exc.name}' is not "
            f"installed. Install the scikit-learn extra: {SKLEARN_EXTRA}"
        ) from exc
    except Exception as exc:
        raise InvalidPackage(f"scikit-learn model '{path}' ({fmt}) cannot be loaded: {first_line(exc)}") from exc
