"""``gateway keys create|list|show|revoke|rotate``: gateway keys in the store, as ``/api/keys`` manages them.

Like ``gateway models``, the commands talk to the store directly (``--store-uri``/``GATEWAY_STORE_URI``) and, with
``redis_url`` set, tell running gateways at once (else they see the change within ``auth.refresh_interval_s``).
``create`` and ``rotate`` print the key once; the store keeps its sha256 digest and first characters only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection
from typing import Any

from gateway.cli_output import print_json
from gateway.key_admin import create_key, key_spec, rotate_key
from gateway.keys import BUDGET_PERIODS
from gateway.llm.routes_config import SCOPES
from gateway.store.keys import KeyStore, StoredKey

AddStoreOptions = Callable[[argparse.ArgumentParser], None]


def add_commands(commands: Any, add_store_options: AddStoreOptions) -> None:
    """Add the ``keys`` command and its actions to ``gateway``'s subparsers."""
    keys = commands.add_parser("keys", help="Create, list, show, revoke and rotate gateway keys.")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="Create a key and print it once.",
        description="The store keeps the key's sha256 digest and first characters only: copy the key now. "
        "Keys are checked when auth is on (auth.keys holds at least one bootstrap digest).",
    )
    create.add_argument("--name", required=True, help="A unique name (letters, digits, '.', '_', ':', '-').")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, metavar="SCOPE",
        help=f"A scope the key holds (repeatable): {', '.join(SCOPES)}.",
    )  # fmt: skip
    create.add_argument(
        "--models", action="append", metavar="NAME[,NAME]",
        help="Only these LLM routes (the 'model' of a /v1 call); repeatable or comma-separated.",
    )  # fmt: skip
    create.add_argument(
        "--route", action="append", metavar="PATH",
        help="Only these paths of the route table, e.g. /v1/chat/completions (repeatable).",
    )  # fmt: skip
    create.add_argument("--rpm", type=int, help="Requests per minute on /v1 (a sliding minute).")
    create.add_argument("--tpm", type=int, help="Tokens per minute on /v1 (input and output).")
    create.add_argument("--budget-usd", type=float, metavar="USD", help="Spend allowed per budget period.")
    create.add_argument("--budget-period", choices=BUDGET_PERIODS, help="When the budget resets (UTC; default month).")
    create.add_argument(
        "--expires", metavar="WHEN", help="A date (works through that day, UTC), an ISO 8601 time or epoch ms."
    )
    create.add_argument("--json", action="store_true", help='Print JSON (the key under "key").')
    add_store_options(create)

    listing = actions.add_parser("list", help="List keys (never the keys themselves).")
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(listing)

    for action, what in (
        ("show", "Show a key's scopes, limits and state."),
        ("revoke", "Revoke a key: it stops working on every replica."),
        ("rotate", "Give a key a new secret and print it once; the old secret stops working."),
    ):
        parser = actions.add_parser(action, help=what)
        parser.add_argument("key", metavar="ID|NAME")
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        add_store_options(parser)


def run(args: argparse.Namespace, store_uri: str, redis_url: str | None, known_paths: Collection[str]) -> int:
    from gateway.store.migrations import open_migrated_engine

    engine = open_migrated_engine(store_uri)
    store = KeyStore(engine)
    try:
        command = args.keys_command
        if command == "list":
            keys = store.load()
            if args.json:
                print_json([key.to_dict() for key in keys])
            else:
                print(f"{'ID':<12}  {'NAME':<24} {'PREFIX':<10}  {'STATE':<8} SCOPES")
                for key in keys:
                    print(f"{key.id:<12}  {key.name:<24} {key.prefix:<10}  {_state(key):<8} {', '.join(key.scopes)}")
            return 0
        if command == "show":
            _show(store.get(args.key), None, args.json)
            return 0
        if command == "create":
            spec = key_spec(_create_fields(args), known_paths=known_paths)
            secret, stored = create_key(store, spec)
            _show(stored, secret, args.json)
        elif command == "rotate":
            secret, stored = rotate_key(store, args.key)
            _show(stored, secret, args.json)
        else:
            _show(store.revoke(args.key), None, args.json)
        if redis_url:
            from gateway.store.notify import KEYS_CHANGED, publish_change_sync

            publish_change_sync(redis_url, KEYS_CHANGED)
    finally:
        engine.dispose()
    return 0


def _create_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": args.name, "scopes": args.scope}
    if args.models:
        fields["models"] = [name.strip() for value in args.models for name in value.split(",") if name.strip()]
    optional = {
        "routes": args.route, "rpm": args.rpm, "tpm": args.tpm, "budget_usd": args.budget_usd,
        "budget_period": args.budget_period, "expires_at": args.expires,
    }  # fmt: skip
    fields.update({name: value for name, value in optional.items() if value is not None})
    if isinstance(fields.get("expires_at"), str) and fields["expires_at"].strip().isdigit():
        fields["expires_at"] = int(fields["expires_at"])
    return fields


def _state(key: StoredKey) -> str:
    import time

    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= time.time() * 1000:
        return "expired"
    return "active"


def _show(key: StoredKey, secret: str | None, as_json: bool) -> None:
    data = key.to_dict()
    data["state"] = _state(key)
    if as_json:
        print_json({"key": secret, **data} if secret is not None else data)
        return
    if secret is not None:
        print(f"Key {key.name!r} ({key.id}); shown once, store it now:\n{secret}", file=sys.stdout)
    for name in ("id", "name", "prefix", "state", "scopes", "models", "routes", "rpm", "tpm", "budget_usd",
                 "budget_period", "expires_at", "revoked_at", "created_at", "rotated_at"):  # fmt: skip
        value = data[name]
        if value is None:
            continue
        print(f"  {name:<14} {', '.join(value) if isinstance(value, list) else value}")
