"""Reading the deploy artifacts (deploy/) as the tools that run them would: the Dockerfile with
BuildKit's parser, YAML for compose and Kubernetes, nginx's upstream blocks, systemd's unit
syntax; and the settings their GATEWAY_* variables give, through the real settings loader."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dockerfile
import yaml

from gateway.settings import Settings, environment_names, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def settings_from(env: Mapping[str, str], tmp_path: Path, where: str) -> Settings:
    """The settings these GATEWAY_* variables give, read by `load_settings` (which refuses a
    bad value with the setting's name). Every name must be a setting; the hashing secret's
    file is replaced by one made here."""
    known = environment_names()
    given: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith("GATEWAY_"):
            continue
        assert name in known, f"{where}: {name} is not a setting in gateway/settings.py"
        given[name] = value
    if "GATEWAY_SECRET_FILE" in given:
        secret = tmp_path / "secret"
        secret.write_text(secrets.token_hex(32))
        given["GATEWAY_SECRET_FILE"] = str(secret)
    return load_settings(None, environ=given)


def port_of(address: str) -> int:
    """The port of `host:port`."""
    return int(address.rpartition(":")[2])


# ---- Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[dockerfile.Command]]:
    """deploy/Dockerfile's instructions, one list per stage (each starts with its FROM)."""
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DEPLOY / "Dockerfile")):
        if command.cmd == "FROM":
            stages.append([])
        assert stages, "deploy/Dockerfile: an instruction before the first FROM"
        stages[-1].append(command)
    return stages


def instructions(stage: list[dockerfile.Command], name: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == name]


def image_env(stage: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in instructions(stage, "ENV"):
        pairs = command.value
        env.update(zip(pairs[::2], pairs[1::2], strict=True))
    return env


def image_command(stage: list[dockerfile.Command]) -> list[str]:
    """ENTRYPOINT followed by CMD, both in exec (JSON) form."""
    out: list[str] = []
    for name in ("ENTRYPOINT", "CMD"):
        (command,) = instructions(stage, name)
        assert command.json, f"deploy/Dockerfile: {name} not in exec form"
        out.extend(command.value)
    return out


# ---- YAML ------------------------------------------------------------------------------------


def yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolated(text: str) -> str:
    """A compose value with `${VAR:-default}` as compose would give it with VAR unset; a
    variable without a default fails the check (the file must run as shipped)."""

    def default(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"compose: ${{{match.group(1)}}} has no default"
        return match.group(2)

    return _INTERPOLATION.sub(default, text)


def kubernetes_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            yield path, document


def kubernetes_objects() -> dict[str, dict[str, Any]]:
    """The manifests by kind (each kind once), without the Kustomization."""
    out: dict[str, dict[str, Any]] = {}
    for path, document in kubernetes_documents():
        kind = document["kind"]
        assert kind not in out, f"{path.name}: a second {kind}"
        out[kind] = document
    return out


# ---- nginx and systemd -----------------------------------------------------------------------


def nginx_upstream_servers(conf: str) -> list[tuple[str, int]]:
    """host and port of every `server` line in the `upstream keygate` block."""
    block = re.search(r"upstream\s+keygate\s*\{(.*?)\}", conf, re.S)
    assert block is not None, "no `upstream keygate { ... }` block"
    return [
        (host, int(port))
        for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", block.group(1), re.M)
    ]


def systemd_unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys may repeat)."""
    section = ""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        out.append((section, key.strip(), value.strip()))
    return out
