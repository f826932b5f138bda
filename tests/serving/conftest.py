"""Session-wide model packages for the serving tests: each kind is built once, read-only."""

from __future__ import annotations

import pytest

from tests.packages import PackageCache


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> PackageCache:
    """Built packages by kind (``packages.get("onnx_classifier")``); copy one before modifying it."""
    return PackageCache(tmp_path_factory.mktemp("packages"))
