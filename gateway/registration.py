"""Registering a model version: validate the package, then write it to the store.

Shared by the registry API and the CLI so both refuse the same bad packages with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.refs import validate_alias, validate_model_name
from gateway.serving.package import read_package, resolve_source
from gateway.serving.signature import parse_signature
from gateway.store.registry import ModelVersion, RegistryStore


def register_version(
    store: RegistryStore,
    name: str,
    source: str,
    *,
    artifact_roots: Sequence[Path],
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    alias: str | None = None,
    create_model: bool = False,
) -> ModelVersion:
    """Validate the package at ``source`` (readable MLmodel, supported flavor, signature that
    parses, loader importable) and register it as the next version of ``name``."""
    validate_model_name(name)
    if alias is not None:
        validate_alias(alias)
    path = resolve_source(source, artifact_roots)
    package = read_package(path)
    package.validate()
    parse_signature(package.signature)
    version = store.create_version(
        name,
        source=str(path),
        flavor=package.flavor,
        signature=dict(package.signature) if package.signature else None,
        description=description,
        tags=dict(tags or {}),
        create_model=create_model,
    )
    if alias is not None:
        version = store.set_alias(name, alias, version.version)
    return version
