"""``gateway prompts ...``: register prompt versions, move aliases, show, render and list prompts.

Like ``gateway models``, the commands talk to the store directly (``--store-uri``/``GATEWAY_STORE_URI``)
and, when ``redis_url`` is set, tell running gateways about a change at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.cli_output import print_json
from gateway.errors import InvalidParameter

AddStoreOptions = Callable[[argparse.ArgumentParser], None]


def add_commands(commands: Any, add_store_options: AddStoreOptions) -> None:
    """Add the ``prompts`` command and its actions to ``gateway``'s subparsers."""
    prompts = commands.add_parser("prompts", help="Register prompt versions, set aliases, show, render and list.")
    actions = prompts.add_subparsers(dest="prompts_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="Create prompt NAME (and its version 1 when a template is given).",
        description="Create a prompt; refuses a name that exists (use 'gateway prompts version' to add versions).",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--description")
    _add_version_options(create, required=False)
    add_store_options(create)

    version = actions.add_parser(
        "version",
        help="Register the next version of NAME (creating the prompt if needed).",
        description="Versions are immutable: each call registers a new one. Placeholders: {{ variable }}.",
    )
    version.add_argument("name", metavar="NAME")
    _add_version_options(version, required=True)
    add_store_options(version)

    alias = actions.add_parser("alias", help="Point ALIAS of NAME at VERSION (or --delete it).")
    alias.add_argument("name", metavar="NAME")
    alias.add_argument("alias", metavar="ALIAS")
    alias.add_argument("version", metavar="VERSION", nargs="?")
    alias.add_argument("--delete", action="store_true", help="Remove the alias instead.")
    add_store_options(alias)

    show = actions.add_parser(
        "show", help="Show a prompt (NAME) or one version (NAME@ALIAS, NAME/VERSION, prompts:/...)."
    )
    show.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]")
    show.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(show)

    render = actions.add_parser("render", help="Render a version with variables (--var k=v).")
    render.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]")
    render.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="A variable (repeatable).")
    render.add_argument("--vars-json", metavar="JSON", help="Variables as one JSON object.")
    add_store_options(render)

    listing = actions.add_parser("list", help="List prompts.")
    listing.add_argument("--prefix", default="", help="Only names starting with this.")
    listing.add_argument(
        "--tag", action="append", default=[], metavar="KEY[=VALUE]", help="Only prompts with this tag."
    )
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(listing)


def _add_version_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument(
        "--template", metavar="FILE|TEXT", help="A text template: a file's path, '-' (stdin) or the text."
    )
    source.add_argument(
        "--message",
        action="append",
        metavar="ROLE:TEXT",
        help="A chat message (repeatable, in order), e.g. --message 'system:You are {{ style }}.'",
    )
    parser.add_argument("--commit-message", metavar="TEXT")
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A tag (repeatable): the prompt's on create, the version's on version.",
    )
    parser.add_argument(
        "--model-config", metavar="JSON", help='e.g. \'{"model_name": "gpt-4o-mini", "temperature": 0}\''
    )
    parser.add_argument("--response-format", metavar="JSON", help="A JSON schema for structured output.")
    parser.add_argument("--alias", metavar="ALIAS", help="Point this alias at the new version.")


def run(args: argparse.Namespace, store_uri: str, redis_url: str | None) -> int:
    from prompts.store import PromptStore

    store = PromptStore.open(store_uri)
    try:
        command = args.prompts_command
        if command in ("create", "version", "alias"):
            _write(store, args)
            if redis_url:
                from gateway.store.notify import publish_change_sync

                publish_change_sync(redis_url, store.revision())
        else:
            _read(store, args)
    finally:
        store.close()
    return 0


def _write(store: Any, args: argparse.Namespace) -> None:
    from prompts.refs import parse_prompt_version

    if args.prompts_command == "alias":
        if args.delete:
            store.delete_alias(args.name, args.alias)
            print(f"Alias {args.alias!r} of prompt {args.name!r} deleted")
            return
        if args.version is None:
            raise InvalidParameter("VERSION is required (or pass --delete to remove the alias).")
        number = parse_prompt_version(args.version)
        store.set_alias(args.name, args.alias, number)
        print(f"Alias {args.alias!r} of prompt {args.name!r} now points at version {number}")
        return
    if args.prompts_command == "create":
        store.create_prompt(args.name, args.description, _pairs(args.tag, "--tag"))
        print(f"Created prompt {args.name!r}")
        if args.template is None and not args.message:
            return
    version = store.create_version(
        args.name,
        _template(args),
        commit_message=args.commit_message,
        tags=None if args.prompts_command == "create" else _pairs(args.tag, "--tag"),
        model_config=_json_object(args.model_config, "--model-config"),
        response_format=_json_object(args.response_format, "--response-format"),
    )
    variables = ", ".join(version.variables) or "none"
    print(f"Registered prompt {args.name!r} version {version.version} (variables: {variables})")
    if args.alias:
        store.set_alias(args.name, args.alias, version.version)
        print(f"Alias {args.alias!r} of prompt {args.name!r} now points at version {version.version}")


def _read(store: Any, args: argparse.Namespace) -> None:
    from prompts.refs import parse_prompt_ref

    catalog = store.load_catalog()
    if args.prompts_command == "list":
        tags = {key: (value if eq else None) for key, eq, value in (t.partition("=") for t in args.tag)}
        prompts, _ = catalog.search(name_prefix=args.prefix, tags=tags, max_results=1000)
        if args.json:
            print_json(prompts)
            return
        print(f"{'NAME':<32} {'LATEST':>6}  ALIASES")
        for prompt in prompts:
            aliases = ", ".join(f"{a}={v}" for a, v in sorted(prompt["aliases"].items()))
            print(f"{prompt['name']:<32} {prompt['latest_version'] or '-':>6}  {aliases}")
        return
    ref = parse_prompt_ref(args.ref)
    if args.prompts_command == "show" and ref.version is None and ref.alias is None:
        prompt = catalog.prompt_dict(ref.name, with_versions=True)
        if args.json:
            print_json(prompt)
            return
        print(f"{prompt['name']}: {prompt['description'] or ''}".rstrip(": "))
        for version in prompt["versions"]:
            aliases = f"  @{', @'.join(version['aliases'])}" if version["aliases"] else ""
            message = version["commit_message"] or ""
            print(f"  version {version['version']:<4} {version['template_type']:<5} {message}{aliases}")
        return
    cached = catalog.resolve(ref)
    if args.prompts_command == "show":
        data = cached.version.to_dict(cached.aliases)
        if args.json:
            print_json(data)
            return
        print(
            f"{ref.name} version {data['version']} ({data['template_type']}; variables: {', '.join(data['variables'])})"
        )
        template = data["template"]
        if isinstance(template, str):
            print(template)
        else:
            for message in template:
                print(f"[{message['role']}] {message['content']}")
        return
    variables: dict[str, Any] = _json_object(args.vars_json, "--vars-json") or {}
    variables.update(_pairs(args.var, "--var") or {})
    rendered = cached.compiled.render(variables)
    if isinstance(rendered, str):
        sys.stdout.write(rendered + ("" if rendered.endswith("\n") else "\n"))
    else:
        print_json(rendered)


def _template(args: argparse.Namespace) -> str | list[dict[str, str]]:
    if args.message:
        messages = []
        for item in args.message:
            role, colon, content = item.partition(":")
            if not colon or not role:
                raise InvalidParameter(f"--message {item!r}: expected ROLE:TEXT, e.g. 'user:{{{{ question }}}}'.")
            messages.append({"role": role.strip(), "content": content})
        return messages
    text: str = args.template
    if text == "-":
        return sys.stdin.read()
    path = Path(text)
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:  # a long text is not a path
        pass
    return text


def _pairs(items: list[str], option: str) -> dict[str, str] | None:
    if not items:
        return None
    pairs: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidParameter(f"{option} {item!r}: expected KEY=VALUE.")
        pairs[key] = value
    return pairs


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidParameter(f"{option}: not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise InvalidParameter(f"{option}: expected a JSON object, got {type(value).__name__}.")
    return value
