"""Registry behaviour through RegistryStore, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from gateway.errors import AlreadyExists, InvalidParameter, NotFound
from gateway.refs import ModelRef, parse_model_ref
from gateway.store.registry import RegistryStore

SIGNATURE = {"inputs": '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'}


def _register(store: RegistryStore, name: str = "iris", count: int = 1) -> None:
    for i in range(count):
        store.create_version(name, source=f"/models/{name}/{i + 1}", flavor="onnx", create_model=True)


def test_create_and_get_model(store: RegistryStore) -> None:
    created = store.create_model("iris", description="Iris classifier", tags={"team": "ml"})
    fetched = store.get_model("iris")
    assert fetched == created
    assert fetched.description == "Iris classifier"
    assert fetched.tags == {"team": "ml"}
    assert fetched.created_at == fetched.updated_at > 0
    assert fetched.aliases == {}
    assert fetched.latest_version is None


def test_create_model_twice_is_already_exists(store: RegistryStore) -> None:
    store.create_model("iris")
    with pytest.raises(AlreadyExists, match=r"^Registered model 'iris' already exists\.$"):
        store.create_model("iris")


def test_model_name_and_tags_are_validated(store: RegistryStore) -> None:
    with pytest.raises(InvalidParameter, match="Invalid model name"):
        store.create_model("no spaces allowed")
    with pytest.raises(InvalidParameter, match="Tag 'n'"):
        store.create_model("iris", tags={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidParameter, match="signature must be an object"):
        store.create_version("iris", source="/m", flavor="onnx", signature="x", create_model=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="'source' must be a non-empty string"):
        store.create_version("iris", source="", flavor="onnx", create_model=True)
    assert store.list_models() == []


def test_get_missing_model_names_it(store: RegistryStore) -> None:
    with pytest.raises(NotFound, match=r"^Registered model 'nope' not found\.$"):
        store.get_model("nope")
    with pytest.raises(NotFound, match=r"^Registered model 'nope' not found\.$"):
        store.list_versions("nope")


def test_list_models_sorted_with_aliases_and_latest(store: RegistryStore) -> None:
    _register(store, "wine", 2)
    store.create_model("iris")
    store.set_alias("wine", "champion", 1)
    models = store.list_models()
    assert [m.name for m in models] == ["iris", "wine"]
    assert models[0].latest_version is None and models[0].aliases == {}
    assert models[1].latest_version == 2 and models[1].aliases == {"champion": 1}


def test_create_version_numbers_and_fields(store: RegistryStore) -> None:
    store.create_model("iris")
    first = store.create_version(
        "iris", source="/m/1", flavor="onnx", signature=SIGNATURE, description="first", tags={"k": "v"}
    )
    second = store.create_version("iris", source="/models/iris/2", flavor="python_function")
    assert (first.version, second.version) == (1, 2)
    assert store.get_version("iris", 1) == first
    assert first.source == "/m/1"
    assert first.signature == SIGNATURE and first.tags == {"k": "v"} and first.description == "first"
    assert second.signature is None and second.tags == {} and second.flavor == "python_function"
    assert [v.version for v in store.list_versions("iris")] == [1, 2]
    assert store.get_model("iris").updated_at >= second.created_at


def test_create_version_of_missing_model(store: RegistryStore) -> None:
    with pytest.raises(NotFound, match=r"^Registered model 'iris' not found\.$"):
        store.create_version("iris", source="/m", flavor="onnx")
    version = store.create_version("iris", source="/m", flavor="onnx", create_model=True)
    assert version.version == 1
    assert store.get_model("iris").latest_version == 1
    # create_model=True on an existing model just adds a version.
    assert store.create_version("iris", source="/m", flavor="onnx", create_model=True).version == 2


def test_get_missing_version_names_model_and_version(store: RegistryStore) -> None:
    _register(store)
    with pytest.raises(NotFound, match=r"^Registered model 'iris' has no version 7\.$"):
        store.get_version("iris", 7)
    with pytest.raises(NotFound, match=r"^Registered model 'wine' not found\.$"):
        store.get_version("wine", 1)


def test_aliases_set_move_and_delete(store: RegistryStore) -> None:
    _register(store, count=3)
    assert store.set_alias("iris", "champion", 1).aliases == ["champion"]
    store.set_alias("iris", "challenger", 1)
    assert store.get_version("iris", 1).aliases == ["challenger", "champion"]
    moved = store.set_alias("iris", "champion", 3)
    assert moved.version == 3 and moved.aliases == ["champion"]
    assert store.get_version_by_alias("iris", "champion").version == 3
    assert store.get_model("iris").aliases == {"challenger": 1, "champion": 3}
    assert [v.aliases for v in store.list_versions("iris")] == [["challenger"], [], ["champion"]]
    store.delete_alias("iris", "champion")
    with pytest.raises(NotFound, match=r"^Registered model 'iris' has no alias 'champion'\.$"):
        store.get_version_by_alias("iris", "champion")
    with pytest.raises(NotFound, match=r"^Registered model 'iris' has no alias 'champion'\.$"):
        store.delete_alias("iris", "champion")


def test_alias_errors(store: RegistryStore) -> None:
    _register(store)
    with pytest.raises(NotFound, match=r"^Registered model 'iris' has no version 7\.$"):
        store.set_alias("iris", "champion", 7)
    with pytest.raises(NotFound, match=r"^Registered model 'wine' not found\.$"):
        store.set_alias("wine", "champion", 1)
    with pytest.raises(NotFound, match=r"^Registered model 'wine' not found\.$"):
        store.get_version_by_alias("wine", "champion")
    assert store.get_model("iris").aliases == {}


@pytest.mark.parametrize("alias", ["latest", "LATEST", "v1", "V12", "has space", ""])
def test_reserved_and_invalid_aliases_are_refused(store: RegistryStore, alias: str) -> None:
    _register(store)
    with pytest.raises(InvalidParameter):
        store.set_alias("iris", alias, 1)
    assert store.get_model("iris").aliases == {}


def test_latest_is_the_highest_version(store: RegistryStore) -> None:
    store.create_model("iris")
    with pytest.raises(NotFound, match=r"^Registered model 'iris' has no versions\.$"):
        store.get_version_by_alias("iris", "latest")
    _register(store, count=3)
    store.set_alias("iris", "champion", 1)
    assert store.get_version_by_alias("iris", "latest").version == 3
    assert store.get_version_by_alias("iris", "Latest").version == 3
    assert store.resolve(parse_model_ref("models:/iris/latest")).version == 3
    assert store.resolve(parse_model_ref("models:/iris@champion")).version == 1
    assert store.resolve(ModelRef("iris", version=2)).source == "/models/iris/2"


def test_revision_changes_on_every_write_only(store: RegistryStore) -> None:
    seen = [store.revision()]

    def wrote() -> bool:
        seen.append(store.revision())
        return seen[-1] > seen[-2]

    store.create_model("iris")
    assert wrote()
    store.create_version("iris", source="/m", flavor="onnx")
    assert wrote()
    store.set_alias("iris", "champion", 1)
    assert wrote()
    store.delete_alias("iris", "champion")
    assert wrote()
    store.get_model("iris"), store.list_versions("iris"), store.snapshot()
    assert not wrote()
    with pytest.raises(AlreadyExists):
        store.create_model("iris")
    with pytest.raises(NotFound):
        store.set_alias("iris", "champion", 9)
    assert not wrote()


def test_snapshot_holds_versions_and_aliases(store: RegistryStore) -> None:
    _register(store, "iris", 2)
    _register(store, "wine", 1)
    store.create_model("empty")
    store.set_alias("iris", "champion", 1)
    snapshot = store.snapshot()
    assert snapshot.revision == store.revision()
    assert set(snapshot.versions) == {("iris", 1), ("iris", 2), ("wine", 1)}
    assert snapshot.versions[("iris", 1)] == store.get_version("iris", 1)
    assert snapshot.aliases == {("iris", "champion"): 1, ("iris", "latest"): 2, ("wine", "latest"): 1}
    assert snapshot.find(parse_model_ref("models:/iris@champion")) == store.get_version("iris", 1)
    assert snapshot.find(parse_model_ref("models:/iris")) == store.get_version("iris", 2)
    assert snapshot.find(parse_model_ref("models:/empty@latest")) is None

    store.set_alias("iris", "champion", 2)
    later = store.snapshot()
    assert later.revision > snapshot.revision
    assert later.aliases[("iris", "champion")] == 2
    assert snapshot.aliases[("iris", "champion")] == 1  # an old snapshot does not change


def test_writes_are_visible_to_another_store(store_url: str, store: RegistryStore) -> None:
    other = RegistryStore.open(store_url)
    try:
        before = other.revision()
        _register(store)
        store.set_alias("iris", "champion", 1)
        assert other.revision() > before
        assert other.get_version_by_alias("iris", "champion").version == 1
    finally:
        other.close()


def test_to_dict_is_json_ready(store: RegistryStore) -> None:
    store.create_model("iris", tags={"team": "ml"})
    store.create_version("iris", source="/m", flavor="onnx", signature=SIGNATURE)
    store.set_alias("iris", "champion", 1)
    model = json.loads(json.dumps(store.get_model("iris").to_dict()))
    assert model == {
        "name": "iris",
        "description": None,
        "tags": {"team": "ml"},
        "created_at": model["created_at"],
        "updated_at": model["updated_at"],
        "aliases": {"champion": 1},
        "latest_version": 1,
    }
    version = json.loads(json.dumps(store.get_version("iris", 1).to_dict()))
    assert version == {
        "name": "iris",
        "version": 1,
        "source": "/m",
        "flavor": "onnx",
        "signature": SIGNATURE,
        "tags": {},
        "description": None,
        "created_at": version["created_at"],
        "aliases": ["champion"],
    }


def test_descriptions_and_tags_change_in_place(store: RegistryStore) -> None:
    _register(store, count=2)
    store.set_model_tag("iris", "team", "ml")
    store.set_model_tag("iris", "owner", "alice")
    store.set_model_tag("iris", "team", None)
    store.set_model_tag("iris", "never-set", None)  # deleting a missing tag is no error (MLflow's rule)
    updated = store.update_model("iris", description="Iris")
    assert (updated.description, updated.tags, updated.latest_version) == ("Iris", {"owner": "alice"}, 2)
    store.set_version_tag("iris", 2, "k", "v")
    assert store.update_version("iris", 2, description="second").description == "second"
    assert store.get_version("iris", 2).tags == {"k": "v"}
    store.set_version_tag("iris", 2, "k", None)
    assert store.get_version("iris", 2).tags == {}
    with pytest.raises(NotFound, match="has no version 3"):
        store.set_version_tag("iris", 3, "k", "v")
    with pytest.raises(NotFound, match="'wine' not found"):
        store.update_model("wine", description=None)
    with pytest.raises(InvalidParameter, match="non-empty string key"):
        store.set_model_tag("iris", "", "v")


def test_a_deleted_version_is_a_tombstone_whose_number_is_never_reused(store: RegistryStore) -> None:
    _register(store, count=3)
    store.set_alias("iris", "prod", 3)
    store.delete_version("iris", 3)
    with pytest.raises(NotFound, match="has no version 3"):
        store.get_version("iris", 3)
    with pytest.raises(NotFound, match="has no version 3"):
        store.delete_version("iris", 3)
    with pytest.raises(NotFound, match="has no version 3"):
        store.set_alias("iris", "prod", 3)
    assert store.get_model("iris").aliases == {}  # the alias went with its version
    assert store.get_model("iris").latest_version == 2
    assert store.resolve(parse_model_ref("models:/iris@latest")).version == 2
    assert [v.version for v in store.list_versions("iris")] == [1, 2]
    assert (("iris", 3) not in store.snapshot().versions) and store.snapshot().aliases[("iris", "latest")] == 2
    assert store.create_version("iris", source="/models/iris/4", flavor="onnx").version == 4


def test_deleting_a_model_deletes_its_versions_and_aliases(store: RegistryStore) -> None:
    _register(store, count=2)
    _register(store, "wine")
    store.set_alias("iris", "prod", 1)
    before = store.revision()
    store.delete_model("iris")
    assert store.revision() > before
    assert [m.name for m in store.list_models()] == ["wine"]
    with pytest.raises(NotFound, match="'iris' not found"):
        store.delete_model("iris")
    assert {name for name, _ in store.snapshot().versions} == {"wine"}
    # Registered again, it counts from 1, as MLflow does.
    assert store.create_version("iris", source="/other", flavor="onnx", create_model=True).version == 1
