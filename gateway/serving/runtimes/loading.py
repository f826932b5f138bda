"""Runtimes: a loaded model behind the ``Runtime`` protocol of ``gateway.serving.types``.

``onnx`` packages run on onnxruntime (``OnnxRuntime``); every ``python_function`` package, mlflow.sklearn
included, runs through ``PyfuncRuntime``. ``load_runtime`` picks one from ``ModelPackage.flavor``.
"""

from __future__ import annotations

from gateway.serving.package import ModelPackage
from gateway.serving.types import Runtime


def load_runtime(
    pkg: ModelPackage, *, intra_op_num_threads: int | None = None, allow_spinning: bool | None = None
) -> Runtime:
    """Validate ``pkg`` and load it; raises ``InvalidPackage`` saying what is wrong.

    ``intra_op_num_threads`` sizes onnxruntime's intra-op pool when the package does not;
    ``allow_spinning=False`` keeps its idle threads from spinning (see ``build_session_options``).
    Loading is blocking: call it in a worker thread.
    """
    pkg.validate()
    if pkg.flavor == "onnx":
        from gateway.serving.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(pkg, intra_op_num_threads=intra_op_num_threads, allow_spinning=allow_spinning)
    from gateway.serving.runtimes.pyfunc import PyfuncRuntime

    return PyfuncRuntime(pkg)
