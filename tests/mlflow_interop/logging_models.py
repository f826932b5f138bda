"""Models logged into a real MLflow server with MLflow's own client, as a team's training job would."""

from __future__ import annotations

from typing import Any

from tests.packages import iris_arrays, iris_frame, onnx_iris_input


def log_sklearn_iris(registered_name: str, *, regularization: float = 1.0) -> str:
    """Log an iris LogisticRegression (``C=regularization``, so two calls can differ) with
    ``mlflow.sklearn.log_model(..., registered_model_name=...)``; returns the new version number."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    _, y = iris_arrays()
    frame = iris_frame()
    model = LogisticRegression(C=regularization, max_iter=500).fit(frame, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=registered_name,
            signature=infer_signature(frame, model.predict(frame)),
            input_example=iris_frame(slice(0, 3)),
            pip_requirements=["scikit-learn", "skops", "cloudpickle"],
        )
    return str(info.registered_model_version)


def log_onnx_iris(registered_name: str) -> str:
    """The skl2onnx iris classifier (zipmap off) with ``mlflow.onnx.log_model``; returns the version number."""
    import mlflow
    import mlflow.onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    from tests.packages import _onnx_classifier

    onx = _onnx_classifier()
    x = onnx_iris_input(slice(None))
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs: dict[str, Any] = dict(zip(names, session.run(names, {"input": x}), strict=True))
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onx,
            name="model",
            registered_model_name=registered_name,
            signature=infer_signature(x, outputs),
            input_example=x[:3],
            pip_requirements=["onnx", "onnxruntime"],
            save_as_external_data=False,
        )
    return str(info.registered_model_version)


def set_alias(registered_name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(registered_name, alias, version)
