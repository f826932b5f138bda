"""The ceiling the bench compares the gateway against: the least a Python ASGI server can do.

Two endpoints on one bare Starlette app (no middleware, no validation beyond what the answer
needs, no access log), run by the bench under ``uvicorn --loop uvloop --http httptools``:

- ``POST /invocations``: parse ``{"dataframe_split": {"columns": [...], "data": [[...]]}}`` with
  orjson, put the columns in the model's feature order, build one float32 array, run the ONNX
  session inline (no executor hop) and answer
  ``{"predictions": [{"label": 0, "probabilities": [...]}, ...]}``, the shape the gateway answers
  for the iris demo package.
- ``POST|GET /hello``: read the body, answer a constant JSON object (the HTTP-only ceiling).
- ``GET /ping``: readiness, as on the gateway.

The model is ``$BARE_APP_MODEL`` (a package directory holding ``model.onnx`` and ``MLmodel``,
or a ``.onnx`` file), loaded once per worker with ``intra_op_num_threads=1`` and spinning off.
The feature order comes from the package's column signature when there is one.

Imports nothing from ``gateway``: it is the baseline, not the thing measured.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"


class _Model:
    """One ONNX session plus what the hot path needs, resolved at load time."""

    def __init__(self, location: str) -> None:
        path = Path(location)
        onnx_file = path / "model.onnx" if path.is_dir() else path
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        [inp] = self.session.get_inputs()
        self.input_name: str = inp.name
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.features: list[str] | None = _signature_columns(path / "MLmodel") if path.is_dir() else None
        width = len(self.features) if self.features else int(inp.shape[1])
        self.session.run(self.output_names, {self.input_name: np.zeros((1, width), dtype=np.float32)})

    def predict(self, columns: list[str] | None, data: list[list[float]]) -> list[dict[str, Any]]:
        rows = np.asarray(data, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError("dataframe_split.data must be a list of rows")
        if self.features is not None and columns is not None and columns != self.features:
            rows = rows[:, [columns.index(name) for name in self.features]]
        outputs = self.session.run(self.output_names, {self.input_name: rows})
        per_output = [out.tolist() for out in outputs]
        return [dict(zip(self.output_names, values, strict=True)) for values in zip(*per_output, strict=True)]


def _signature_columns(mlmodel: Path) -> list[str] | None:
    if not mlmodel.is_file():
        return None
    meta = yaml.safe_load(mlmodel.read_text())
    inputs = (meta.get("signature") or {}).get("inputs")
    if not inputs:
        return None
    specs = json.loads(inputs)
    if any(spec.get("type") == "tensor" or "name" not in spec for spec in specs):
        return None
    return [spec["name"] for spec in specs]


_model: _Model | None = None


def _get_model() -> _Model:
    global _model
    if _model is None:
        _model = _Model(os.environ["BARE_APP_MODEL"])
    return _model


def _error(status: int, message: str) -> Response:
    body = orjson.dumps({"error_code": "BAD_REQUEST", "message": message})
    return Response(body, status_code=status, media_type=JSON)


async def invocations(request: Request) -> Response:
    try:
        payload = orjson.loads(await request.body())
        split = payload["dataframe_split"]
        predictions = _get_model().predict(split.get("columns"), split["data"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        return _error(400, f"bad request: {exc!r}")
    return Response(orjson.dumps({"predictions": predictions}), media_type=JSON)


_HELLO = orjson.dumps({"status": "ok"})


async def hello(request: Request) -> Response:
    await request.body()
    return Response(_HELLO, media_type=JSON)


async def ping(request: Request) -> Response:
    return Response(b"\n", media_type=JSON)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    if os.environ.get("BARE_APP_MODEL"):
        _get_model()  # load and warm up before the first /ping answers
    yield


app = Starlette(
    routes=[
        Route("/invocations", invocations, methods=["POST"]),
        Route("/hello", hello, methods=["GET", "POST"]),
        Route("/ping", ping, methods=["GET"]),
    ],
    lifespan=_lifespan,
)
