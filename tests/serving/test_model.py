"""LoadedModel: warm-up on the package's input example, and inline or threaded execution giving the
same answers."""

from __future__ import annotations

import asyncio

import orjson

from gateway.serving.model import INLINE_MAX_ROWS, load_model
from tests.packages import PackageCache

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _load(packages: PackageCache, kind: str, inline_max_us: float):  # type: ignore[no-untyped-def]
    path = packages.get(kind)  # type: ignore[arg-type]
    return load_model(
        kind, 1, str(path), artifact_roots=[packages.root], intra_op_num_threads=1, inline_max_us=inline_max_us
    )


def test_warm_up_measures_and_decides(packages: PackageCache) -> None:
    threaded = _load(packages, "onnx_classifier", 0.0)
    assert threaded.warm_up_us is not None and threaded.warm_up_us > 0
    assert threaded.run_inline is False
    assert threaded.describe()["execution"] == "thread"
    # A budget no model can exceed: small requests run inline.
    inline = _load(packages, "onnx_classifier", 1e12)
    assert inline.run_inline is True
    assert inline.describe()["execution"] == "inline"


def test_inline_and_threaded_answers_are_identical(packages: PackageCache) -> None:
    threaded = _load(packages, "onnx_classifier", 0.0)
    inline = _load(packages, "onnx_classifier", 1e12)
    small = orjson.dumps({"inputs": ROWS})
    large = orjson.dumps({"inputs": ROWS * (INLINE_MAX_ROWS // 2 + 1)})  # more rows than run inline

    async def both(body: bytes) -> tuple[object, object]:
        return (await threaded.invoke(body, "application/json"), await inline.invoke(body, "application/json"))

    for body in (small, large):
        a, b = asyncio.run(both(body))
        assert orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(b, option=orjson.OPT_SERIALIZE_NUMPY)
    threaded.unload()
    inline.unload()


def test_package_without_example_is_not_warmed(packages: PackageCache, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    path = packages.copy("onnx_regressor", packages.root / "no_example")
    for name in ("input_example.json", "serving_input_example.json"):
        (path / name).unlink()
    model = load_model("r", 1, str(path), artifact_roots=[packages.root], intra_op_num_threads=1, inline_max_us=1e12)
    assert model.warm_up_us is None and model.run_inline is False
