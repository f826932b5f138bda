"""MlflowSource against a real ``mlflow server``: versions and aliases read over MLflow's REST API, packages
downloaded through its artifact proxy into the shared, verified cache; an unreachable server is an error the
refresh reports, not a crash."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.refs import LATEST, ModelRef
from gateway.serving.artifact_cache import ArtifactCache
from gateway.serving.mlflow_source import MlflowSource, MlflowUnreachable
from tests.mlflow_interop.logging_models import log_sklearn_iris, set_alias
from tests.servers import free_port

CHAMPION = ModelRef("src-iris", alias="champion")


@pytest.fixture
def registered(mlflow_client_env: str) -> str:
    """src-iris version 1 logged with mlflow.sklearn, alias champion on it (once per module's server)."""
    from mlflow import MlflowClient

    try:
        MlflowClient().get_registered_model("src-iris")
    except Exception:
        version = log_sklearn_iris("src-iris")
        set_alias("src-iris", "champion", version)
    return mlflow_client_env


def test_reads_aliases_and_versions_and_reports_no_change(registered: str, tmp_path: Path) -> None:
    source = MlflowSource(registered, tmp_path / "cache")
    try:
        view = source.read_view(-1, [CHAMPION])
        assert view is not None
        assert view.aliases[("src-iris", "champion")] == 1
        assert view.aliases[("src-iris", LATEST)] == 1
        # MLflow 3 registers a logged model (source models:/m-<id>); get-download-uri names its artifacts.
        assert view.sources[("src-iris", 1)].startswith("mlflow-artifacts:")
        assert view.resolve(CHAMPION) == ("src-iris", 1)
        # Followed from now on without being asked again; an unchanged registry is no new view.
        assert source.read_view(view.revision, []) is None
    finally:
        source.close()


def test_download_is_verified_atomic_and_shared_by_workers(registered: str, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    workers = [MlflowSource(registered, cache_dir) for _ in range(3)]  # one per worker, one directory
    try:
        view = workers[0].read_view(-1, [CHAMPION])
        assert view is not None
        uri = view.sources[("src-iris", 1)]
        paths: list[str] = []
        errors: list[BaseException] = []

        def materialize(source: MlflowSource) -> None:
            try:
                paths.append(source.materialize("src-iris", 1, uri))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=materialize, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        assert len(set(paths)) == 1
        package = Path(paths[0])
        assert package.parent == cache_dir and package.name.startswith("sha256-")
        assert (package / "MLmodel").is_file()
        assert [p.name for p in cache_dir.iterdir() if p.name.startswith("sha256-")] == [package.name]
        assert list((cache_dir / "tmp").iterdir()) == []  # no download left behind
    finally:
        for worker in workers:
            worker.close()


def test_short_download_is_refused_and_never_cached(registered: str, tmp_path: Path) -> None:
    source = MlflowSource(registered, tmp_path / "cache")
    try:
        view = source.read_view(-1, [CHAMPION])
        assert view is not None
        path = view.sources[("src-iris", 1)].split(":", 1)[1].strip("/")
        listed = {entry["path"]: entry for entry in source.client.list_artifacts(path)}
        size = int(listed["MLmodel"]["file_size"])
        cache = ArtifactCache(tmp_path / "cache")

        def fetch_with_wrong_size(into: Path) -> None:  # the listing said one size, the bytes another
            source.client.download_file(f"{path}/MLmodel", into / "MLmodel", size + 1)

        with pytest.raises(MlflowUnreachable, match="the listing says"):
            cache.get("wrong-size", fetch_with_wrong_size)
        assert cache.cached("wrong-size") is None
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []

        def fetch_without_mlmodel(into: Path) -> None:
            source.client.download_file(f"{path}/requirements.txt", into / "requirements.txt", None)

        with pytest.raises(Exception, match="no MLmodel file"):
            cache.get("no-mlmodel", fetch_without_mlmodel)
        assert cache.cached("no-mlmodel") is None
    finally:
        source.close()


def test_unreachable_server_is_an_error_naming_mlflow(tmp_path: Path) -> None:
    source = MlflowSource(f"http://127.0.0.1:{free_port()}", tmp_path / "cache")
    try:
        with pytest.raises(MlflowUnreachable, match=r"MLflow at http://127\.0\.0\.1:\d+ is unreachable"):
            source.read_view(-1, [CHAMPION])
    finally:
        source.close()


def test_unknown_model_is_not_followed(registered: str, tmp_path: Path) -> None:
    source = MlflowSource(registered, tmp_path / "cache")
    try:
        view = source.read_view(-1, [ModelRef("no-such-model", alias="champion")])
        assert view is not None and view.aliases == {} and view.sources == {}
        assert source.read_view(view.revision, []) is None
    finally:
        source.close()
