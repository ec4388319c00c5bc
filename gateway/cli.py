"""The `gateway` command: serve, migrate, users, keys, policy.

Every failure prints one line on stderr and exits non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from gateway import logs
from gateway.errors import GatewayError
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.keys.rehash import rehash_status
from gateway.policy.loader import PolicyError, load_policy
from gateway.services import Services, open_services
from gateway.settings import Settings, SettingsError, load_settings, with_secret
from gateway.store.base import StoreError
from gateway.text import encodable

EXIT_FAILURE = 1
EXIT_USAGE = 2
_DURATION = re.compile(r"^(\d{1,6})([smhdw])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Arguments that name files may hold any bytes the filesystem allows; every other argument is
# text bound for the database, where a byte that is not UTF-8 (kept by Python as a lone
# surrogate) would fail inside the driver.
_FILE_ARGUMENTS = frozenset({"config", "policy", "files"})


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


# -- argument parsing -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"gateway: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="Keygate API-key gateway")
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
    users.add_parser("list", help="list users")
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
    klist = keys.add_parser("list", help="list a user's keys")
    klist.add_argument("--user", required=True, metavar="EMAIL")
    for name in ("revoke", "disable", "enable"):
        keys.add_parser(name, help=f"{name} a key").add_argument("key_id")
    keys.add_parser("rehash-status", help="how many keys still depend on each of previous_secrets")

    policy = sub.add_parser("policy", help="check and explain policies").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    check = policy.add_parser("check", help="validate policy files")
    check.add_argument("files", nargs="*", help="defaults to the configured policy")
    explain = policy.add_parser("explain", help="show the decision for a request")
    explain.add_argument("--key-id", required=True)
    explain.add_argument("method")
    explain.add_argument("target", help="request target, e.g. /api/v1/stores/S1/invoices")
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
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise CliError("the passwords do not match")
    if not encodable(password):
        raise CliError("the password is not valid UTF-8 text")
    return password


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

    async def work(s: Services) -> None:
        if args.action == "create":
            password = None if args.service else _read_password(args.password_stdin)
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
            for u in await s.store.list_users():
                flags = (
                    ",".join(
                        f
                        for f, on in (
                            ("admin", u.is_admin),
                            ("service", u.is_service),
                            ("disabled", u.disabled),
                        )
                        if on
                    )
                    or "-"
                )
                _say(f"{u.id}  {u.email}  {flags}  grants={' '.join(u.grants) or '-'}")
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
        elif args.action == "password":
            user = await s.users.find(args.email)
            await s.users.set_password(user, _read_password(args.password_stdin), actor="cli")
            _say(f"password changed for {user.email} (existing keys stay valid)")

    asyncio.run(_with_services(settings, work))


def cmd_keys(args: argparse.Namespace) -> None:
    settings = _prepared(_settings(args))
    # Checked before the database is touched; the lifetime counts from now.
    expires = expiry(args.expires) if args.action == "create" and args.expires else None

    async def work(s: Services) -> None:
        if args.action == "create":
            owner = await s.users.find(args.user)
            new = await s.keys.create(
                owner=owner,
                creator=None,
                label=args.label,
                permissions=args.permission,
                path_rule=args.path,
                expires_at=expires,
            )
            _say(new.text)
            print(
                f"key id {new.record.id} ({keyformat.mask(new.record.id)}) for {owner.email}; "
                "the key is shown only this once",
                file=sys.stderr,
            )
        elif args.action == "list":
            owner = await s.users.find(args.user)
            for k in await s.keys.list_for(owner.id):
                _say(
                    f"{k.id}  {keyformat.mask(k.id)}  {k.status}  label={k.label!r}  "
                    f"permissions={' '.join(k.permissions) or '-'}  path={k.path_rule or '-'}  "
                    f"expires={k.expires_at.isoformat() if k.expires_at else '-'}  "
                    f"last-used={k.last_used_at.isoformat() if k.last_used_at else '-'}"
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


def cmd_serve(args: argparse.Namespace) -> None:
    settings = _prepared(
        _settings(
            args, listen=args.listen, workers=args.workers, mode=args.mode, policy=args.policy
        ),
        announce=_say,
    )
    from gateway.server import serve

    serve(settings, announce=_say)


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
    "policy": cmd_policy,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        return 130
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
