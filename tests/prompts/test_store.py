"""PromptStore and the Catalog it loads, on SQLite and PostgreSQL (``store_url``)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gateway.errors import AlreadyExists, InvalidParameter, NotFound
from gateway.store.registry import RegistryStore
from gateway.store.schema import prompt_versions
from prompts.refs import PromptRef
from prompts.store import PromptStore

CHAT = [{"role": "system", "content": "Be {{ style }}."}, {"role": "user", "content": "{{ question }}"}]


def test_versions_count_up_and_keep_what_was_registered(prompt_store: PromptStore) -> None:
    first = prompt_store.create_version(
        "qa",
        "Answer: {{ question }} ({{ user.lang }})",
        commit_message="first",
        tags={"author": "ann"},
        response_format={"type": "object", "properties": {"answer": {"type": "string"}}},
        model_config={"model_name": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 100, "seed": 7},
    )
    second = prompt_store.create_version("qa", CHAT)
    assert (first.version, second.version) == (1, 2)
    assert first.variables == ("question", "user.lang")
    assert second.template_type == "chat" and second.variables == ("style", "question")

    catalog = prompt_store.load_catalog()
    stored = catalog.version("qa", 1).version
    assert stored == first
    assert stored.model_config == {"model_name": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 100, "seed": 7}
    assert stored.response_format == {"type": "object", "properties": {"answer": {"type": "string"}}}
    assert catalog.version("qa", 2).version.template == CHAT
    assert catalog.prompt("qa").description is None


def test_versions_are_immutable(prompt_store: PromptStore) -> None:
    """The store has no way to change a version: only new versions, and aliases that move."""
    prompt_store.create_version("qa", "v1 {{ x }}")
    prompt_store.create_version("qa", "v2 {{ x }}")
    assert not any(name.startswith(("update_version", "delete_version", "set_version")) for name in dir(prompt_store))
    catalog = prompt_store.load_catalog()
    assert catalog.version("qa", 1).version.template == "v1 {{ x }}"
    # A duplicate (name, version) cannot be written even around the store: the primary key refuses it.
    with pytest.raises(sa.exc.IntegrityError), prompt_store.engine.begin() as conn:
        conn.execute(
            prompt_versions.insert().values(
                name="qa", version=1, template_type="text", template='"x"', variables="[]", tags="{}", created_at=0
            )
        )


def test_aliases_move_and_latest_is_the_highest_version(prompt_store: PromptStore) -> None:
    for i in range(3):
        prompt_store.create_version("qa", f"v{i + 1}")
    prompt_store.set_alias("qa", "production", 1)
    catalog = prompt_store.load_catalog()
    assert catalog.resolve(PromptRef("qa", alias="production")).version.version == 1
    assert catalog.resolve(PromptRef("qa", alias="latest")).version.version == 3
    assert catalog.resolve(PromptRef("qa")).version.version == 3
    assert catalog.version("qa", 1).aliases == ["production"]

    prompt_store.set_alias("qa", "production", 2)  # a move, not a second alias
    prompt_store.set_alias("qa", "staging", 2)
    catalog = prompt_store.load_catalog()
    assert catalog.by_alias("qa", "production").version.version == 2
    assert catalog.version("qa", 1).aliases == []
    assert catalog.version("qa", 2).aliases == ["production", "staging"]
    assert catalog.prompt_dict("qa")["aliases"] == {"production": 2, "staging": 2}

    prompt_store.create_version("qa", "v4")
    catalog = prompt_store.load_catalog()
    assert catalog.by_alias("qa", "LATEST").version.version == 4
    assert catalog.prompt_dict("qa")["latest_version"] == 4

    prompt_store.delete_alias("qa", "production")
    with pytest.raises(NotFound, match="Prompt 'qa' has no alias 'production'."):
        prompt_store.load_catalog().by_alias("qa", "production")


def test_errors_name_what_is_missing_or_wrong(prompt_store: PromptStore) -> None:
    prompt_store.create_prompt("empty", description="no versions yet", tags={"team": "search"})
    prompt_store.create_version("qa", "x")
    catalog = prompt_store.load_catalog()
    with pytest.raises(NotFound, match="Prompt 'nope' not found."):
        catalog.resolve(PromptRef("nope", alias="production"))
    with pytest.raises(NotFound, match="Prompt 'qa' has no version 9."):
        catalog.version("qa", 9)
    with pytest.raises(NotFound, match="Prompt 'empty' has no versions yet."):
        catalog.by_alias("empty", "latest")
    with pytest.raises(NotFound, match="Prompt 'qa' has no version 5."):
        prompt_store.set_alias("qa", "prod", 5)
    with pytest.raises(NotFound, match="Prompt 'nope' not found."):
        prompt_store.set_alias("nope", "prod", 1)
    with pytest.raises(NotFound, match="Prompt 'nope' not found."):
        prompt_store.create_version("nope", "x", create_prompt=False)
    with pytest.raises(NotFound, match="Prompt 'qa' has no alias 'prod'."):
        prompt_store.delete_alias("qa", "prod")
    with pytest.raises(AlreadyExists, match="Prompt 'qa' already exists."):
        prompt_store.create_prompt("qa")
    with pytest.raises(InvalidParameter, match="reserved"):
        prompt_store.set_alias("qa", "latest", 1)
    with pytest.raises(InvalidParameter, match="Version alias name 'v1' is reserved."):
        prompt_store.set_alias("qa", "v1", 1)
    with pytest.raises(InvalidParameter, match="Invalid prompt name 'a b'"):
        prompt_store.create_version("a b", "x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_config": {"temperature": -1}}, "Field 'model_config.temperature' must be a number >= 0, got -1."),
        ({"model_config": {"max_tokens": 0}}, "Field 'model_config.max_tokens' must be an integer > 0, got 0."),
        ({"model_config": {"max_tokens": 1.5}}, "Field 'model_config.max_tokens' must be an integer > 0"),
        ({"model_config": {"top_p": 2}}, "Field 'model_config.top_p' must be a number from 0 to 1, got 2."),
        ({"model_config": {"model_name": 5}}, "Field 'model_config.model_name' must be a string, got 5."),
        ({"model_config": {"stop_sequences": "x"}}, "Field 'model_config.stop_sequences' must be a list of strings"),
        ({"model_config": ["gpt"]}, "Field 'model_config' must be a JSON object, got list."),
        ({"response_format": "json"}, "Field 'response_format' must be a JSON object, got str."),
        ({"tags": {"k": 1}}, "Field 'tags': tag 'k' must have a non-empty string key and a string value."),
        ({"tags": ["k"]}, "Field 'tags' must be an object of strings, got list."),
        ({"commit_message": 3}, "Field 'commit_message' must be a string, got int."),
    ],
)
def test_invalid_version_fields_are_refused(prompt_store: PromptStore, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        prompt_store.create_version("qa", "x", **kwargs)  # type: ignore[arg-type]
    assert caught.value.message.startswith(message)
    assert "qa" not in prompt_store.load_catalog().prompts  # nothing was written


def test_every_write_bumps_the_shared_store_revision(prompt_store: PromptStore, store_url: str) -> None:
    registry = RegistryStore(prompt_store.engine)
    seen = [prompt_store.revision()]
    prompt_store.create_prompt("qa", description="d")
    seen.append(prompt_store.revision())
    prompt_store.create_version("qa", "x")
    seen.append(prompt_store.revision())
    prompt_store.set_alias("qa", "prod", 1)
    seen.append(prompt_store.revision())
    prompt_store.update_prompt("qa", tags={"team": "a"})
    seen.append(registry.revision())  # the model registry's counter is the same one
    prompt_store.delete_alias("qa", "prod")
    seen.append(prompt_store.revision())
    assert seen == sorted(set(seen)) and len(seen) == 6
    assert prompt_store.load_catalog().revision == seen[-1]


def test_prompt_description_and_tags_can_change(prompt_store: PromptStore) -> None:
    prompt_store.create_prompt("qa", description="old", tags={"team": "a"})
    updated = prompt_store.update_prompt("qa", description="new")
    assert (updated.description, updated.tags) == ("new", {"team": "a"})
    updated = prompt_store.update_prompt("qa", tags={"team": "b", "tier": "1"})
    assert (updated.description, updated.tags) == ("new", {"team": "b", "tier": "1"})
    assert prompt_store.load_catalog().prompt("qa") == updated
    with pytest.raises(NotFound, match="Prompt 'nope' not found."):
        prompt_store.update_prompt("nope", description="x")


def test_search_by_prefix_and_tags_with_pagination(prompt_store: PromptStore) -> None:
    for i in range(25):
        team = "search" if i % 2 == 0 else "ads"
        prompt_store.create_prompt(f"p{i:02d}", tags={"team": team, **({"tier": "gold"} if i % 5 == 0 else {})})
    prompt_store.create_prompt("other", tags={"team": "search"})
    catalog = prompt_store.load_catalog()

    pages, token = [], None
    while True:
        page, token = catalog.search(name_prefix="p", tags={"team": "search"}, max_results=4, page_token=token)
        pages.append([p["name"] for p in page])
        if token is None:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 1]
    assert sum(pages, []) == [f"p{i:02d}" for i in range(0, 25, 2)]

    gold, token = catalog.search(tags={"tier": None})
    assert [p["name"] for p in gold] == ["p00", "p05", "p10", "p15", "p20"] and token is None
    both, _ = catalog.search(tags={"tier": "gold", "team": "ads"})
    assert [p["name"] for p in both] == ["p05", "p15"]
    assert catalog.search(name_prefix="zzz")[0] == []
    everything, token = catalog.search(max_results=1000)
    assert len(everything) == 26 and token is None
    with pytest.raises(InvalidParameter, match="Invalid max_results 0"):
        catalog.search(max_results=0)
    with pytest.raises(InvalidParameter, match="Invalid page_token"):
        catalog.search(page_token="%%%")


def test_one_tag_at_a_time_and_deleting_only_an_empty_prompt(prompt_store: PromptStore) -> None:
    prompt_store.create_prompt("qa", tags={"team": "support"})
    prompt_store.set_tag("qa", "owner", "alice")
    prompt_store.set_tag("qa", "team", None)
    prompt_store.set_tag("qa", "never-set", None)
    assert prompt_store.load_catalog().prompt("qa").tags == {"owner": "alice"}
    prompt_store.delete_prompt("qa")  # no version yet: what a failed first registration leaves
    assert "qa" not in prompt_store.load_catalog().prompts
    prompt_store.create_version("qa", "Hi {{ name }}")
    with pytest.raises(InvalidParameter, match="has 1 version"):
        prompt_store.delete_prompt("qa")
    with pytest.raises(NotFound, match="'nope' not found"):
        prompt_store.set_tag("nope", "k", "v")
