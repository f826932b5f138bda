"""The ``gateway`` command: ``serve``, the ``models`` registry commands, ``prompts`` (prompts/cli.py),
``judges`` (judges/cli.py), ``eval`` (judges/eval_cli.py) and ``keys`` (gateway/keys_cli.py)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway import __version__
from gateway.cli_output import print_json
from gateway.config import DEFAULT_STORE_URI, PARAMS, ConfigError, Settings, load_settings, settings_to_dict
from gateway.errors import GatewayError

logger = logging.getLogger("gateway.cli")

_CONFIG_HELP = "\n".join(f"  {p.env_var:<40} {p.key}: {p.help}" for p in PARAMS)
_OTEL_HELP = (
    "\nTracing: the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT to export spans over OTLP/HTTP,\n"
    "OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*, ...); see docs/configuration.md."
)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (also GATEWAY_CONFIG).")
    parser.add_argument("--store-uri", metavar="URI", help=f"Registry store (default {DEFAULT_STORE_URI}).")
    parser.add_argument(
        "--artifact-root",
        metavar="DIR",
        action="append",
        help="Directory model packages may be loaded from (repeatable; default ./models).",
    )


_SETTINGS_HELP = (
    "Settings: command-line flag > GATEWAY_* variable > config file > default.\n" + _CONFIG_HELP + "\n" + _OTEL_HELP
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Model-serving and GenAI observability gateway.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="Start the gateway (uvicorn, one worker per core).",
        description="Serve registered models at /invocations, the registry and prompt APIs, and the "
        "OpenAI-compatible LLM proxy at /v1 (routes: the llm section of the config file).",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_store_options(serve)
    serve.add_argument("--host", help="Address to bind (default 127.0.0.1).")
    serve.add_argument("--port", type=int, help="Port to bind (default 8080).")
    serve.add_argument("--workers", type=int, help="Worker processes (default: number of cores).")
    serve.add_argument(
        "--model",
        metavar="REF",
        action="append",
        help="Model to preload, e.g. models:/iris@champion (repeatable); the first is served at /invocations.",
    )
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", default=None, help="Log every request.")

    models = commands.add_parser("models", help="Register models, set aliases, list and show them.")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    register = model_commands.add_parser(
        "register",
        help="Register a model package as the next version of NAME.",
        description="Validate the package at PATH (MLmodel, flavor, signature) and register it.",
    )
    register.add_argument("name", metavar="NAME")
    register.add_argument("path", metavar="PATH", help="Model package directory or file:// URI.")
    register.add_argument("--alias", metavar="ALIAS", help="Point this alias at the new version.")
    register.add_argument("--description")
    register.add_argument(
        "--tag",
        metavar="KEY=VALUE",
        action="append",
        type=_tag,
        default=[],
        help="Version tag (repeatable), e.g. gateway.max_batch_rows=64 (see docs/configuration.md).",
    )
    _add_store_options(register)

    alias = model_commands.add_parser("alias", help="Point ALIAS of NAME at VERSION.")
    alias.add_argument("name", metavar="NAME")
    alias.add_argument("alias", metavar="ALIAS")
    alias.add_argument("version", metavar="VERSION")
    _add_store_options(alias)

    listing = model_commands.add_parser("list", help="List registered models.")
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    _add_store_options(listing)

    show = model_commands.add_parser("show", help="Show a model with its versions and aliases.")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="Print JSON.")
    _add_store_options(show)

    from prompts.cli import add_commands as add_prompt_commands

    add_prompt_commands(commands, _add_store_options)

    from judges.cli import add_commands as add_judge_commands

    add_judge_commands(commands, _add_store_options)

    from judges.eval_cli import add_commands as add_eval_commands

    add_eval_commands(commands, _add_store_options)

    from gateway.keys_cli import add_commands as add_key_commands

    add_key_commands(commands, _add_store_options)
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    cli: dict[str, Any] = {"store_uri": args.store_uri, **extra}
    if args.artifact_root:
        cli["artifact_roots"] = args.artifact_root
    return load_settings(cli, config_file=args.config)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        **{"serving.preload": args.model, "serving.default_model": args.model[0] if args.model else None},
    )
    import uvicorn

    from gateway.app import SETTINGS_ENV, configure_logging, create_app, head_limits
    from gateway.http_protocol import configure as configure_http
    from gateway.http_protocol import select_http_protocol
    from gateway.llm.routes_config import refuse_open_by_accident, warn_about_risky_settings
    from gateway.telemetry.setup import check_otel_environment
    from judges.online.queue_choice import check_online_queue

    configure_logging(settings.log_level)
    # A bad llm route or auth key already stopped load_settings (exit 2); these are allowed but risky.
    refuse_open_by_accident(settings.auth, settings.host)  # a ConfigError: exit 2, before anything binds
    warn_about_risky_settings(settings.llm, settings.auth, host=settings.host, port=settings.port)
    if settings.auth.key_hashes and settings.workers > 1 and not settings.redis_url:
        logger.warning(
            "redis_url is not set: the rate limits and budgets of gateway keys are counted by each of the %d "
            "worker processes for itself (a key may make up to %d times its limits); set redis_url to share them",
            settings.workers,
            settings.workers,
        )
    check_otel_environment()  # OTEL_* choices we cannot honour: exit 2 before any worker starts
    check_online_queue(settings)  # judges.online rules without a judge queue: the same

    loop = "uvloop" if _importable("uvloop") else "auto"
    # uvicorn's httptools protocol, sending each response's headers and body in one write (gateway/http_protocol.py).
    http = select_http_protocol()
    if loop != "uvloop" and settings.workers > 1:
        # Without uvloop, uvicorn's pre-bound multi-worker socket loses TCP_NODELAY: small answers then wait
        # for the client's delayed ACK (docs/benchmarks.md, "Figures once quoted in code").
        logger.warning("uvloop is not installed: several workers will add latency; pip install uvloop")
    logger.info(
        "Starting gateway %s on http://%s:%d with %d worker(s)",
        __version__,
        settings.host,
        settings.port,
        settings.workers,
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": loop,
        "http": http,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": 30,
        "timeout_keep_alive": settings.http.keep_alive_s,
        "server_header": False,
    }
    configure_http(head_limits(settings))  # workers spawned below do it in create_app_from_environ
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
    else:
        os.environ[SETTINGS_ENV] = orjson.dumps(settings_to_dict(settings)).decode()
        with _shared_metrics_dir():
            uvicorn.run("gateway.app:create_app_from_environ", factory=True, workers=settings.workers, **common)
    return 0


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """Where the workers leave their metrics snapshots, so /metrics on any worker counts them all:
    GATEWAY_METRICS_DIR when set (old snapshots removed), else a temporary directory removed at exit."""
    from gateway.metrics import METRICS_DIR_ENV, prepare_metrics_dir

    given = os.environ.get(METRICS_DIR_ENV)
    if given:
        prepare_metrics_dir(Path(given))
        yield
        return
    directory = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[METRICS_DIR_ENV] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _table_paths() -> set[str]:
    """Every path of the app's route table (what a key's ``routes`` may name)."""
    from gateway.api.routes import app_table
    from judges.evaluation_routes import EVALUATION_ROUTES
    from judges.routes import JUDGE_ROUTES
    from prompts.routes import PROMPT_ROUTES

    return {route.path for route in app_table(PROMPT_ROUTES, JUDGE_ROUTES, EVALUATION_ROUTES)}


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def _models(args: argparse.Namespace) -> int:
    from gateway.refs import parse_version
    from gateway.registration import register_version
    from gateway.store.registry import RegistryStore

    settings = _settings(args)
    store = RegistryStore.open(settings.store_uri)
    try:
        if args.models_command == "register":
            source = args.path if args.path.startswith("file:") else str(Path(args.path).resolve())
            version = register_version(
                store,
                args.name,
                source,
                artifact_roots=settings.artifact_roots,
                description=args.description,
                tags=dict(args.tag),
                alias=args.alias,
                create_model=True,
            )
            alias_note = f" with alias {args.alias!r}" if args.alias else ""
            print(f"Registered {args.name!r} version {version.version}{alias_note} from {version.source}")
        elif args.models_command == "alias":
            number = parse_version(args.version)
            store.set_alias(args.name, args.alias, number)
            print(f"Alias {args.alias!r} of {args.name!r} now points at version {number}")
        if args.models_command in ("register", "alias") and settings.redis_url:
            from gateway.store.notify import publish_change_sync

            publish_change_sync(settings.redis_url, store.revision())
        if args.models_command == "list":
            models = store.list_models()
            if args.json:
                print_json([m.to_dict() for m in models])
            else:
                print(f"{'NAME':<32} {'LATEST':>6}  ALIASES")
                for model in models:
                    aliases = ", ".join(f"{a}={v}" for a, v in sorted(model.aliases.items()))
                    print(f"{model.name:<32} {model.latest_version or '-':>6}  {aliases}")
        elif args.models_command == "show":
            model = store.get_model(args.name)
            versions = store.list_versions(args.name)
            if args.json:
                print_json({**model.to_dict(), "versions": [v.to_dict() for v in versions]})
            else:
                print(f"{model.name}: {model.description or ''}".rstrip(": "))
                for version in versions:
                    aliases = f"  @{', @'.join(version.aliases)}" if version.aliases else ""
                    print(f"  version {version.version:<4} {version.flavor:<16} {version.source}{aliases}")
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "prompts":
            from prompts.cli import run as run_prompts

            settings = _settings(args)
            return run_prompts(args, settings.store_uri, settings.redis_url)
        if args.command == "judges":
            from judges.cli import run as run_judges

            return run_judges(args, _settings(args))
        if args.command == "eval":
            from judges.eval_cli import run as run_eval

            return run_eval(args, lambda: _settings(args))
        if args.command == "keys":
            from gateway.keys_cli import run as run_keys

            settings = _settings(args)
            return run_keys(args, settings.store_uri, settings.redis_url, _table_paths())
        return _models(args)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway: {exc.message}", file=sys.stderr)
        return 1
