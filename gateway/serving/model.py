"""A loaded model version and the path of one ``/invocations`` request through it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.serving.output import to_jsonable
from gateway.serving.package import ModelPackage, read_package, resolve_source
from gateway.serving.payload import parse_request
from gateway.serving.runtimes._common import predict_error
from gateway.serving.runtimes.loading import load_runtime
from gateway.serving.signature import Signature, enforce_input, enforce_params, parse_signature
from gateway.serving.types import Runtime

logger = logging.getLogger("gateway.serving")


@dataclass(eq=False)
class LoadedModel:
    """One model version with its runtime, ready to answer requests.

    The runtime runs in a single executor thread of its own, never on the event loop.
    ``in_flight`` counts requests using it, so an evicted model is unloaded only once idle.
    """

    name: str
    version: int
    source: str
    package: ModelPackage
    signature: Signature | None
    runtime: Runtime
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
    evicted: bool = False
    _executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"model-{self.name}-{self.version}"
        )
        self.version_header = str(self.version)

    async def invoke(self, body: bytes, content_type: str | None) -> tuple[Any, bool]:
        """Parse, check and predict; returns (jsonable prediction, unwrapped)."""
        signature = self.signature
        parsed = parse_request(body, content_type, signature)
        if parsed.unwrapped:
            data = parsed.data
        else:
            data = enforce_input(parsed.data, signature.inputs if signature is not None else None)
        params = enforce_params(parsed.params, signature.params if signature is not None else None)
        loop = asyncio.get_running_loop()
        prediction = await loop.run_in_executor(self._executor, self._predict, data, params)
        return to_jsonable(prediction), parsed.unwrapped

    def _predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        try:
            return self.runtime.predict(data, params)
        except GatewayError:
            raise
        except Exception as exc:
            # Runtimes map model errors themselves; anything else is logged with its traceback.
            logger.exception("Model %s version %s raised while predicting", self.name, self.version)
            raise predict_error(exc) from exc

    def unload(self) -> None:
        self._executor.shutdown(wait=True)
        self.runtime.unload()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "flavor": self.package.flavor,
            "loaded_at": self.loaded_at,
        }


def load_model(
    name: str,
    version: int,
    source: str,
    *,
    artifact_roots: Sequence[Path],
    intra_op_num_threads: int | None,
) -> LoadedModel:
    """Blocking: resolve the package, build the runtime. Raises InvalidPackage on a bad package."""
    path = resolve_source(source, artifact_roots)
    package = read_package(path)
    signature = parse_signature(package.signature)
    runtime = load_runtime(package, intra_op_num_threads=intra_op_num_threads)
    return LoadedModel(
        name=name, version=version, source=source, package=package, signature=signature, runtime=runtime
    )
