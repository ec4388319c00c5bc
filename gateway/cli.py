"""The `gateway` command: serve, migrate, users, keys, resources, policy, import, audit.

Every failure prints one line on stderr and exits non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from gateway import cli_output, cli_quota, cli_resources, logs
from gateway.errors import GatewayError
from gateway.importer import command as importer
from gateway.keys import format as keyformat
from gateway.keys import rotation
from gateway.keys.hashing import KeyHasher
from gateway.keys.rehash import rehash_status
from gateway.policy.loader import PolicyError, load_policy
from gateway.services import Services, open_services
from gateway.settings import (
    Settings,
    SettingsError,
    load_settings,
    unknown_environment,
    with_secret,
)
from gateway.store.base import StoreError
from gateway.text import encodable

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
_DURATION = re.compile(r"^(\d{1,6})([smhdw])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Arguments that name files may hold any bytes the filesystem allows; every other argument is
# text bound for the database, where a byte that is not UTF-8 (kept by Python as a lone
# surrogate) would fail inside the driver.
_FILE_ARGUMENTS = frozenset({"config", "policy", "files", "source"})


class CliError(Exception):
    """A failure to report as one line."""


def _say(text: str) -> None:
    print(text, flush=True)


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise CliError(f"--expires: {text!r} is not a duration like 30d, 12h, 90m or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def expiry(text: str) -> datetime:
    """When a key made now with this lifetime expires."""
    try:
        return datetime.now(UTC) + parse_duration(text)
    except OverflowError:  # e.g. 999999w: past the year 9999, which datetime cannot hold
        raise CliError(f"--expires: {text!r} is too long a lifetime") from None


def _leaked_key(args: argparse.Namespace) -> str:
    if args.stdin == (args.key is not None):
        raise CliError("give the key as an argument or with --stdin, not both")
    text = sys.stdin.readline().strip() if args.stdin else args.key.strip()
    if not text:
        raise CliError("--stdin: no key on standard input")
    return str(text)


async def _disclose(s: Services, text: str, url: str) -> None:
    from gateway.keys import disclose
    from gateway.keys.leaks import Finding

    [(_, label, key_id)] = await disclose.respond(
        s, [Finding(text, "cli", url, "")], actor="cli", source="cli"
    )
    if key_id is None:
        # Never echo the text: it may be a real secret of some other system.
        raise CliError("false_positive: not a key of this deployment (nothing was changed)")
    _say(f"{label}: {key_id} ({s.settings.leak_action})")


def _networks(args: argparse.Namespace) -> list[str] | None:
    """The CIDR arguments, or None for --any; one of the two is required."""
    if args.any == bool(args.networks):
        raise CliError("name one or more networks (e.g. 203.0.113.0/24), or --any")
    return None if args.any else list(args.networks)


def _shown(networks: tuple[str, ...] | None) -> str:
    return "any address" if networks is None else " ".join(networks)


def _grace(text: str) -> timedelta:
    try:
        return rotation.parse_grace(text)
    except ValueError as exc:
        raise CliError(f"--grace: {exc}") from None


# -- argument parsing -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"gateway: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="Keygate API-key gateway")
    parser.add_argument("--version", action="version", version=f"keygate {version()}")
    parser.add_argument("--config", help="YAML settings file (or GATEWAY_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--listen", help="host:port (or GATEWAY_LISTEN)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port")
    serve.add_argument("--mode", choices=["development", "production"])
    serve.add_argument("--policy", help="policy file(s) or folder, comma-separated")

    sub.add_parser("migrate", help="apply database migrations")

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    create = users.add_parser("create", help="create a user")
    create.add_argument("email")
    create.add_argument("--admin", action="store_true", help="holds `unrestricted`")
    create.add_argument("--service", action="store_true", help="cannot log in; only owns keys")
    create.add_argument("--grant", action="append", default=[], metavar="PERM")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    ulist = users.add_parser("list", help="list users")
    ulist.add_argument("--json", action="store_true", help="a JSON array (stable field names)")
    for name, text in (
        ("disable", "disable a user (stops all his keys)"),
        ("enable", "enable a user"),
    ):
        users.add_parser(name, help=text).add_argument("email")
    grant = users.add_parser("grant", help="grant permissions to a user")
    grant.add_argument("email")
    grant.add_argument("permissions", nargs="+", metavar="PERM")
    ungrant = users.add_parser("revoke-grant", help="take permissions from a user")
    ungrant.add_argument("email")
    ungrant.add_argument("permissions", nargs="+", metavar="PERM")
    unets = users.add_parser("networks", help="networks every key of a user may be used from")
    unets.add_argument("email")
    unets.add_argument("networks", nargs="*", metavar="CIDR")
    unets.add_argument("--any", action="store_true", help="clear the list: any address")
    passwd = users.add_parser("password", help="set a user's password (keys stay valid)")
    passwd.add_argument("email")
    passwd.add_argument("--password-stdin", action="store_true")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    kcreate = keys.add_parser("create", help="create a key (printed once)")
    kcreate.add_argument("--user", required=True, metavar="EMAIL")
    kcreate.add_argument("--label", default="")
    kcreate.add_argument("--permission", action="append", default=[], metavar="PERM")
    kcreate.add_argument("--path", help="/prefix or =/exact")
    kcreate.add_argument("--expires", help="lifetime, e.g. 30d")
    kcreate.add_argument("--limit", action="append", default=[], metavar="NAME")
    cli_quota.add_arguments(keys)
    kcreate.add_argument(
        "--network",
        action="append",
        metavar="CIDR",
        help="only from this network (IPv4 or IPv6); repeat. Default: any address",
    )
    klist = keys.add_parser("list", help="list a user's keys")
    klist.add_argument("--user", required=True, metavar="EMAIL")
    klist.add_argument("--json", action="store_true", help="a JSON array (stable field names)")
    for name in ("revoke", "disable", "enable"):
        keys.add_parser(name, help=f"{name} a key").add_argument("key_id")
    kdisclose = keys.add_parser(
        "disclose", help="a key was leaked: apply leak_action to it (as secret scanning does)"
    )
    kdisclose.add_argument("key", nargs="?", help="the whole key (or --stdin)")
    kdisclose.add_argument("--stdin", action="store_true", help="read the key from stdin")
    kdisclose.add_argument("--url", default="", help="where it was found (for the audit)")
    knets = keys.add_parser("networks", help="networks a key may be used from")
    knets.add_argument("key_id")
    knets.add_argument("networks", nargs="*", metavar="CIDR")
    knets.add_argument("--any", action="store_true", help="clear the list: any address")
    krotate = keys.add_parser("rotate", help="replace a key by a new one (printed once)")
    krotate.add_argument("key_id")
    krotate.add_argument(
        "--grace",
        default="immediate",
        help="how long the old key keeps working: immediate, "
        "or a duration up to 7d such as 1h (default: immediate)",
    )
    krotate.add_argument(
        "--permission",
        action="append",
        metavar="PERM",
        help="keep only these of the key's permissions (narrow it); repeat",
    )
    keys.add_parser("rehash-status", help="how many keys still depend on each of previous_secrets")

    cli_resources.add_parser(sub, _Parser)
    audit = sub.add_parser("audit", help="read the audit log, newest first")
    audit.add_argument("--actor", help='who acted, e.g. "cli", "user:<id>", "key:<key id>"')
    audit.add_argument("--user", metavar="EMAIL", help="entries about this user or his keys")
    audit.add_argument("--key", metavar="KEY_ID", help="entries about this key")
    audit.add_argument("--action", help="e.g. key.rotate, user.set-networks")
    audit.add_argument("--since", help="ISO 8601 time, or a duration back from now (e.g. 2h)")
    audit.add_argument("--until", help="ISO 8601 time, or a duration back from now")
    audit.add_argument("--limit", default="50", help="entries per page (1-200, default 50)")
    audit.add_argument("--cursor", help="the next page's cursor, printed after a full page")

    policy = sub.add_parser("policy", help="check and explain policies").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    check = policy.add_parser("check", help="validate policy files")
    check.add_argument("files", nargs="*", help="defaults to the configured policy")
    explain = policy.add_parser("explain", help="show the decision for a request")
    explain.add_argument("--key-id", required=True)
    explain.add_argument("method")
    explain.add_argument("target", help="request target, e.g. /api/v1/stores/S1/invoices")
    importer.add_parser(sub)
    return parser


# -- commands ---------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, overrides=overrides)


def check_text_arguments(args: argparse.Namespace) -> None:
    """CliError naming the first text argument that is not valid UTF-8."""
    for name, value in vars(args).items():
        if name in _FILE_ARGUMENTS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not encodable(item):
                raise CliError(f"{name.replace('_', '-')}: not valid UTF-8 text")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            raise CliError("--password-stdin: the password is not valid UTF-8 text") from None
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("--password-stdin: no password on standard input")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for a password; use --password-stdin")
        password = _prompt("Password: ")
        if password != _prompt("Again: "):
            raise CliError("the passwords do not match")
    if not encodable(password):
        raise CliError("the password is not valid UTF-8 text")
    return password


def _prompt(text: str) -> str:
    try:
        return getpass.getpass(text)
    except EOFError:  # Ctrl-D: the prompt's line is left open, so end it first
        print(file=sys.stderr)
        raise CliError("no password given (end of input at the prompt)") from None


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[None]]) -> None:
    async with open_services(settings) as services:
        await work(services)


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _prepared(_settings(args))

    async def run() -> None:
        from gateway.keys.secret_check import check_configured
        from gateway.store import open_store

        store = await open_store(settings.database_url, deadline=settings.database_timeout)
        try:
            applied = await store.migrate()
            await check_configured(store, settings)
        finally:
            await store.close()
        _say(f"applied migrations {applied}" if applied else "database is up to date")

    asyncio.run(run())


def cmd_users(args: argparse.Namespace) -> None:
    settings = _prepared(_settings(args))

    # Asked before anything is opened: nothing waits on the database while a person types,
    # and Ctrl-C at the prompt reaches Python directly, not an event loop's signal handler.
    password = None
    if (args.action == "create" and not args.service) or args.action == "password":
        password = _read_password(args.password_stdin)

    async def work(s: Services) -> None:
        if args.action == "create":
            user = await s.users.create(
                email=args.email,
                password=password,
                actor="cli",
                is_admin=args.admin,
                is_service=args.service,
                grants=args.grant,
            )
            kind = "service user" if user.is_service else ("admin" if user.is_admin else "user")
            _say(f"created {kind} {user.email} (id {user.id})")
        elif args.action == "list":
            users = await s.store.list_users()
            if args.json:
                _say(cli_output.as_json(map(cli_output.user_fields, users)))
            else:
                for u in users:
                    _say(cli_output.user_line(u))
        elif args.action in {"disable", "enable"}:
            user = await s.users.find(args.email)
            await s.users.set_disabled(user, args.action == "disable", actor="cli")
            _say(f"{args.action}d {user.email}")
        elif args.action == "grant":
            user = await s.users.grant(
                await s.users.find(args.email), args.permissions, actor="cli"
            )
            _say(f"{user.email} now holds: {' '.join(user.grants)}")
        elif args.action == "revoke-grant":
            user = await s.users.find(args.email)
            user = await s.users.revoke_grants(user, args.permissions, actor="cli")
            _say(f"{user.email} now holds: {' '.join(user.grants) or 'nothing'}")
        elif args.action == "networks":
            user = await s.users.find(args.email)
            user = await s.users.set_networks(user, _networks(args), actor="cli")
            _say(f"{user.email}'s keys may be used from: {_shown(user.allowed_networks)}")
        elif args.action == "password":
            user = await s.users.find(args.email)
            assert password is not None  # read above for this action
            await s.users.set_password(user, password, actor="cli")
            _say(f"password changed for {user.email} (existing keys stay valid)")

    asyncio.run(_with_services(settings, work))


def cmd_keys(args: argparse.Namespace) -> None:
    settings = _prepared(_settings(args))
    # Checked before the database is touched; the lifetime counts from now.
    expires = expiry(args.expires) if args.action == "create" and args.expires else None
    grace = _grace(args.grace) if args.action == "rotate" else None
    leaked = _leaked_key(args) if args.action == "disclose" else ""

    async def work(s: Services) -> None:
        if args.action == "create":
            owner = await s.users.find(args.user)
            limits = _quota(lambda: cli_quota.limits_for(s, owner, args.limit))
            new = await s.keys.create(
                owner=owner,
                creator=None,
                label=args.label,
                permissions=args.permission,
                path_rule=args.path,
                expires_at=expires,
                allowed_networks=args.network,
            )
            if limits:
                await s.quota.set(new.record.id, actor="cli", limits=limits)
            _say(new.text)
            print(
                f"key id {new.record.id} ({keyformat.mask(new.record.id)}) for {owner.email}; "
                "the key is shown only this once",
                file=sys.stderr,
            )
        elif args.action == "list":
            owner = await s.users.find(args.user)
            listed = await s.keys.list_for(owner.id)
            if args.json:
                _say(cli_output.as_json(map(cli_output.key_fields, listed)))
            else:
                for k in listed:
                    _say(cli_output.key_line(k))
        elif args.action == "quota":
            try:
                await cli_quota.run(s, args, _say)
            except ValueError as exc:
                raise CliError(str(exc)) from None
        elif args.action == "disclose":
            await _disclose(s, leaked, args.url)
        elif args.action == "networks":
            key = await s.keys.get_owned(args.key_id, None)
            key = await s.keys.set_networks(key, _networks(args), actor=None)
            _say(f"{key.id} may be used from: {_shown(key.allowed_networks)}")
        elif args.action == "rotate":
            assert grace is not None
            key = await s.keys.get_owned(args.key_id, None)
            new = await s.keys.rotate(key, grace=grace, actor=None, permissions=args.permission)
            _say(new.text)
            stops = new.previous.expires_at if new.previous else None
            _note(
                f"key id {new.record.id} replaces {key.id}, which stops at "
                f"{stops.isoformat() if stops else 'once'}; the new key is shown only this once"
            )
        elif args.action == "rehash-status":
            previous = [KeyHasher(p) for p in settings.previous_secrets]
            for line in await rehash_status(s.store, s.hasher, previous):
                _say(line)
        else:
            key = await s.keys.get_owned(args.key_id, None)
            if args.action == "revoke":
                await s.keys.revoke(key, actor=None)
            else:
                await s.keys.set_status(
                    key, "active" if args.action == "enable" else "disabled", actor=None
                )
            _say(f"{args.action}d {key.id}")

    asyncio.run(_with_services(settings, work))


def cmd_resources(args: argparse.Namespace) -> None:
    settings = _prepared(_settings(args))
    asyncio.run(_with_services(settings, lambda s: cli_resources.run(s, args, _say)))


def _quota(check: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
    try:
        return check()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_audit(args: argparse.Namespace) -> None:
    from gateway.api.lifecycle_schemas import audit_entry, audit_params
    from gateway.store.base import AuditQuery

    text = {
        name: _audit_time(value) if name in {"since", "until"} else value
        for name in ("actor", "key", "action", "since", "until", "cursor", "limit")
        if (value := getattr(args, name)) is not None
    }
    try:
        params = audit_params(text)
    except GatewayError as exc:
        errors = getattr(exc, "errors", [("filter", exc.message)])
        raise CliError(f"--{errors[0][0]}: {errors[0][1]}") from None
    settings = _prepared(_settings(args))

    async def work(s: Services) -> None:
        subject = (await s.users.find(args.user)).id if args.user else None
        records = await s.store.query_audit(
            AuditQuery(
                actor=params.actor,
                subject_user=subject,
                target=f"key:{params.key}" if params.key else None,
                action=params.action,
                since=params.since,
                until=params.until,
                before=params.cursor,
                limit=params.limit + 1,
            )
        )
        for record in records[: params.limit]:
            entry = audit_entry(record)
            detail = json.dumps(entry["detail"], sort_keys=True, ensure_ascii=False)
            _say(
                f"{entry['id']}  {entry['at']}  {entry['actor']}  {entry['action']}  "
                f"{entry['target']}  {detail}"
            )
        if len(records) > params.limit:
            _note(f"more entries: --cursor {records[params.limit - 1].id}")

    asyncio.run(_with_services(settings, work))


def _audit_time(text: str) -> str:
    """An ISO 8601 time as given, or a duration (2h, 7d) back from now."""
    if _DURATION.match(text.strip()):
        return (datetime.now(UTC) - parse_duration(text)).isoformat()
    return text


def cmd_policy(args: argparse.Namespace) -> None:
    if args.action == "check":
        settings = _settings(args)
        files = [Path(f) for f in args.files] or list(settings.policy)
        policy = load_policy(files)
        routes = sum(1 for _ in policy.routes)
        from gateway.shadowing import own_paths, shadowed

        for warning in shadowed(policy.routes, own_paths(settings)):
            _note(warning)
        _say(
            f"ok: {len(policy.catalog.permissions)} permissions, {len(policy.upstreams)} "
            f"upstreams, {routes} routes from {', '.join(map(str, files))}"
        )
        return
    settings = _prepared(_settings(args))

    async def work(s: Services) -> None:
        from gateway.policy.explain import explain

        for line in await explain(s, args.key_id, args.method, args.target):
            _say(line)

    asyncio.run(_with_services(settings, work))


def cmd_import(args: argparse.Namespace) -> None:
    settings = _prepared(_settings(args))
    try:
        lines = asyncio.run(
            importer.run_import(settings, args.source, dry_run=args.dry_run, json=args.json)
        )
    except importer.ImportFailed as exc:
        raise CliError(str(exc)) from None
    for line in lines:
        _say(line)


def cmd_serve(args: argparse.Namespace) -> None:
    def read() -> Settings:
        return _settings(
            args, listen=args.listen, workers=args.workers, mode=args.mode, policy=args.policy
        )

    settings = _prepared(read(), announce=_say)
    from gateway.server import serve

    # A reload reads the settings again the same way.
    serve(settings, announce=_say, reread=lambda: with_secret(read(), announce=_note))


def _note(text: str) -> None:
    """Side remarks go to stderr, so `KEY=$(gateway keys create ...)` captures only the key."""
    print(text, file=sys.stderr, flush=True)


def _prepared(settings: Settings, *, announce: Callable[[str], None] = _note) -> Settings:
    logs.configure(settings.log_level, settings.log_format)
    return with_secret(settings, announce=announce)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "users": cmd_users,
    "keys": cmd_keys,
    "resources": cmd_resources,
    "policy": cmd_policy,
    "import": cmd_import,
    "audit": cmd_audit,
}


def version() -> str:
    """The installed package's version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("keygate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for line in unknown_environment():
        _note(f"gateway: warning: {line}")
    try:
        check_text_arguments(args)
        COMMANDS[args.command](args)
    except (CliError, SettingsError, PolicyError) as exc:
        return _fail(str(exc))
    except GatewayError as exc:
        return _fail(exc.message)
    except StoreError as exc:
        return _fail(f"database: {exc}")
    except KeyboardInterrupt:
        print(file=sys.stderr)  # after the ^C the terminal echoed, on a line of its own
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}")
    return 0


def _fail(message: str) -> int:
    print(f"gateway: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return EXIT_FAILURE


def run() -> NoReturn:
    # `gateway keys list | head` should end quietly, not with a BrokenPipeError.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
