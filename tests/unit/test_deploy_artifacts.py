"""The deploy artifacts agree with the code they deploy: every GATEWAY_* variable is a setting
with a valid value, ports agree from the Dockerfile to compose, nginx and Kubernetes, probes
and health checks name real endpoints of the application, the policy they mount is where the
policy setting looks and loads, and the commands they run are real `gateway` commands.

No container runtime on these machines: these files are parsed and checked, not run (nginx and
systemd read theirs in tests/integration/test_deploy_nginx.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from gateway.app import create_app
from gateway.cli import build_parser
from gateway.policy.loader import load_policy
from gateway.settings import Settings, environment_names, load_settings
from tests.deploy_artifacts import (
    DEPLOY,
    KUBERNETES,
    ROOT,
    dockerfile_stages,
    image_command,
    image_env,
    instructions,
    interpolated,
    kubernetes_documents,
    kubernetes_objects,
    nginx_upstream_servers,
    port_of,
    settings_from,
    systemd_unit,
    yaml_file,
)

# Kubernetes versions the manifests must be valid for: the oldest still commonly run, and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def own_get_paths() -> set[str]:
    """Paths the application itself answers GET on (not the policy's catch-all)."""
    app = create_app(Settings())
    return {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET"
        and route.resource is not None
        and "{" not in route.resource.canonical
    }


def assert_gateway_command(argv: list[str], where: str) -> None:
    """`argv` runs the `gateway` command with arguments its parser accepts."""
    assert Path(argv[0]).name == "gateway", f"{where}: {argv[0]!r} is not the gateway command"
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is not a gateway command ({exc})")


# ---- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_builds_in_stages_from_slim_bases_as_a_non_root_user() -> None:
    """A build stage and a slim runtime stage; the runtime runs as a named unprivileged user
    and holds only the runtime install (no dev extra anywhere)."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert "-slim" in stage[0].value[0], stage[0].original
    runtime = stages[-1]
    (user,) = instructions(runtime, "USER")
    assert user.value[0].split(":")[0] not in {"root", "0"}
    assert any(c.flags == ("--from=build",) for c in instructions(runtime, "COPY"))
    runs = " ".join(" ".join(c.value) for stage in stages for c in instructions(stage, "RUN"))
    assert "pip install ." in runs
    assert "[dev]" not in runs


def test_dockerfile_copies_only_what_exists_and_is_in_the_build_context() -> None:
    """Every COPY source exists in the repository (the build context is its root) and is let
    through by deploy/Dockerfile.dockerignore."""
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context filter starts from nothing"
    for stage in dockerfile_stages():
        for copy in instructions(stage, "COPY"):
            if copy.flags:
                continue  # from another stage
            for source in copy.value[:-1]:
                assert (ROOT / source).exists(), copy.original
                assert source.rstrip("/") in allowed, f"{source} is filtered out of the context"
    assert {"pyproject.toml", "README.md", "gateway"} <= allowed  # what `pip install .` reads


def test_dockerfile_settings_port_healthcheck_and_entrypoint(tmp_path: Path) -> None:
    """The image's GATEWAY_* variables are valid settings; it exposes the port it listens on;
    its health check asks /healthz there; it runs `gateway serve` with a policy it holds."""
    runtime = dockerfile_stages()[-1]
    env = image_env(runtime)
    settings = settings_from(env, tmp_path, "Dockerfile")
    (expose,) = instructions(runtime, "EXPOSE")
    assert [int(p.split("/")[0]) for p in expose.value] == [settings.listen_port]

    (check,) = instructions(runtime, "HEALTHCHECK")
    assert check.value[0] == "CMD"
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w./-]*)", " ".join(check.value))
    assert url is not None, check.original
    assert int(url.group(1)) == settings.listen_port
    assert url.group(2) == "/healthz"
    assert url.group(2) in own_get_paths()

    command = image_command(runtime)
    assert command[:2] == ["gateway", "serve"]
    assert_gateway_command(command, "Dockerfile ENTRYPOINT + CMD")

    # The policy named is one the image copies in: policies/ lands in /etc/keygate/policies/.
    (policy,) = settings.policy
    copies = {c.value[-1].rstrip("/"): c.value[0] for c in instructions(runtime, "COPY")}
    source = copies[str(policy.parent)]
    load_policy([ROOT / source / policy.name])


# ---- compose ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml_file(DEPLOY / "compose.yaml")
    assert isinstance(data, dict)
    return data


def keygate_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run `gateway serve` (the image's command, not replaced)."""
    return {
        name: service
        for name, service in spec["services"].items()
        if service.get("image") == "keygate:local" and "entrypoint" not in service
    }


def test_compose_runs_the_whole_deployment() -> None:
    """PostgreSQL, Redis, two Keygate instances, the demo upstream and nginx; every
    dependency names a service; the image is built from the repository with deploy/Dockerfile."""
    spec = compose()
    services = spec["services"]
    assert {"postgres", "redis", "demo", "nginx"} <= set(services)
    assert len(keygate_services(spec)) == 2
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_keygate_settings_agree_with_the_services(tmp_path: Path) -> None:
    """Each instance's variables are valid settings; its database and Redis are the compose
    services; its policy is the mounted file, which loads; its secret is a compose secret;
    it listens on the port the image exposes."""
    spec = compose()
    (expose,) = instructions(dockerfile_stages()[-1], "EXPOSE")
    for name, service in keygate_services(spec).items():
        env = {k: interpolated(str(v)) for k, v in service["environment"].items()}
        settings = settings_from(env, tmp_path, f"compose {name}")
        assert settings.listen_port == int(expose.value[0])
        assert re.search(r"@postgres:5432/", settings.database_url)
        assert settings.redis_url is not None
        assert "//redis:6379/" in settings.redis_url
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        (policy,) = settings.policy
        load_policy([DEPLOY / mounts[str(policy)]])
        secret = env["GATEWAY_SECRET_FILE"]
        assert secret.startswith("/run/secrets/")
        assert secret.rsplit("/", 1)[1] in service["secrets"]
        assert secret.rsplit("/", 1)[1] in spec["secrets"]


def test_compose_demo_upstream_is_where_the_policy_sends_requests() -> None:
    """The demo service runs `python -m gateway.demo` on the host and port the mounted
    policy's upstream names."""
    spec = compose()
    demo = spec["services"]["demo"]
    assert demo["entrypoint"] == ["python", "-m", "gateway.demo"]
    listen = demo["command"][demo["command"].index("--listen") + 1]
    policy = load_policy([DEPLOY / "compose-policy.yaml"])
    (upstream,) = policy.upstreams.values()
    assert upstream.url == f"http://demo:{port_of(listen)}"


def test_compose_nginx_fronts_both_instances() -> None:
    """nginx's config is the mounted deploy/nginx.conf, whose upstream is exactly the two
    instances on the port they listen on; it is published on loopback only."""
    spec = compose()
    nginx = spec["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    servers = nginx_upstream_servers((DEPLOY / "nginx.conf").read_text())
    expected = {
        (name, port_of(service["environment"]["GATEWAY_LISTEN"]))
        for name, service in keygate_services(spec).items()
    }
    assert set(servers) == expected
    listen = re.search(r"^\s*listen\s+(\d+);", (DEPLOY / "nginx.conf").read_text(), re.M)
    assert listen is not None
    assert nginx["ports"] == [f"127.0.0.1:8080:{listen.group(1)}"]


@pytest.mark.parametrize("name", ["nginx.conf", "nginx-tls.conf"])
def test_nginx_configs_pass_websocket_upgrades(name: str) -> None:
    """Both nginx configs speak HTTP/1.1 upstream and pass Upgrade / Connection through a
    map, so WebSocket routes work and other requests keep their upstream connection."""
    conf = (DEPLOY / name).read_text()
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{", conf)
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert 'proxy_set_header Connection "";' not in conf


# ---- Kubernetes ------------------------------------------------------------------------------


def test_kubernetes_manifests_are_valid_and_all_listed() -> None:
    """Every manifest validates against the Kubernetes API schemas (strict: no unknown
    fields), and the kustomization lists every manifest file."""
    kustomization = yaml_file(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files
    kinds = set()
    for path, document in kubernetes_documents():
        if document["kind"] == "Kustomization":
            continue
        kinds.add(document["kind"])
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} (Kubernetes {version}): {exc.message}")
    assert kinds == {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }


def _container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _container_env(
    objects: dict[str, dict[str, Any]], secret_values: dict[str, str]
) -> dict[str, str]:
    """The container's variables; one from a Secret takes `secret_values[key]`, after checking
    that the Secret holds that key."""
    secret = objects["Secret"]
    env = {}
    for item in _container(objects)["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
            env[item["name"]] = secret_values[ref["key"]]
        else:
            env[item["name"]] = item["value"]
    return env


def test_kubernetes_deployment_settings_ports_and_probes(tmp_path: Path) -> None:
    """The container's variables are valid settings; the named port is the listen port the
    image exposes; readiness asks /readyz and liveness /healthz on it, both real endpoints;
    it runs `gateway serve` as the image's user."""
    objects = kubernetes_objects()
    container = _container(objects)
    env = _container_env(objects, {"database-url": "postgresql://keygate@postgres/keygate"})
    settings = settings_from(env, tmp_path, "kubernetes deployment")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (expose,) = instructions(dockerfile_stages()[-1], "EXPOSE")
    assert ports["http"] == settings.listen_port == int(expose.value[0])

    own = own_get_paths()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["path"] in own
        assert get["port"] in ports or get["port"] in ports.values()

    runtime = dockerfile_stages()[-1]
    command = image_command(runtime)
    if "args" in container:
        command = command[: -len(instructions(runtime, "CMD")[0].value)] + container["args"]
    assert command[:2] == ["gateway", "serve"]
    assert_gateway_command(command, "Deployment args")
    uid = re.search(r"--uid (\d+)", " ".join(instructions(runtime, "RUN")[0].value))
    assert uid is not None
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))


def test_kubernetes_admin_port_and_drain(tmp_path: Path) -> None:
    """The admin listener's port is a named container port and the one Prometheus is told to
    scrape; the pod's grace period outlasts the preStop pause plus the shutdown drain."""
    objects = kubernetes_objects()
    container = _container(objects)
    env = {item["name"]: item.get("value", "") for item in _container(objects)["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    admin = port_of(env["GATEWAY_ADMIN_LISTEN"])
    assert ports["admin"] == admin
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == admin
    assert annotations["prometheus.io/path"] in own_get_paths()  # /metrics

    pod = objects["Deployment"]["spec"]["template"]["spec"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(env["GATEWAY_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_kubernetes_policy_and_secret_mounts(tmp_path: Path) -> None:
    """The policy setting names a file of the mounted ConfigMap, and that policy loads; the
    secret file setting names the Secret's `secret` key where it is mounted."""
    objects = kubernetes_objects()
    container = _container(objects)
    env = _container_env(objects, {"database-url": "postgresql://keygate@postgres/keygate"})
    settings = settings_from(env, tmp_path, "kubernetes deployment")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}

    (policy,) = settings.policy
    config = volumes[mounts[str(policy.parent)]]["configMap"]
    assert config["name"] == objects["ConfigMap"]["metadata"]["name"]
    text = objects["ConfigMap"]["data"][policy.name]
    (tmp_path / policy.name).write_text(text)
    load_policy([tmp_path / policy.name])

    secret_file = Path(env["GATEWAY_SECRET_FILE"])
    secret = volumes[mounts[str(secret_file.parent)]]["secret"]
    assert secret["secretName"] == objects["Secret"]["metadata"]["name"]
    assert {"key": "secret", "path": secret_file.name} in secret["items"]
    assert "secret" in objects["Secret"]["stringData"]


def test_kubernetes_service_budget_and_autoscaler_select_the_pods() -> None:
    """The Service, the PodDisruptionBudget and the autoscaler all point at the Deployment's
    pods, and the Service sends traffic to the named listen port."""
    objects = kubernetes_objects()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] in {p["name"] for p in _container(objects)["ports"]}
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2  # with minAvailable: 1, a drain never takes the last one
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]


# ---- systemd ---------------------------------------------------------------------------------


def test_systemd_unit_runs_real_commands_with_real_settings(tmp_path: Path) -> None:
    """The unit's Exec lines that run Keygate are real `gateway` commands, its GATEWAY_*
    variables are settings, the config file it names is deploy/keygate.yaml (which loads),
    and systemd waits longer than the drain before killing."""
    unit = systemd_unit(DEPLOY / "keygate.service")
    service = [(key, value) for section, key, value in unit if section == "Service"]
    commands = [shlex.split(v) for k, v in service if k.startswith("Exec")]
    gateway = [argv for argv in commands if Path(argv[0]).name == "gateway"]
    assert ["serve"] in [argv[1:] for argv in gateway]
    for argv in gateway:
        assert_gateway_command(argv, "keygate.service")

    env = dict(v.split("=", 1) for k, v in service if k == "Environment")
    known = environment_names()
    assert set(env) <= known
    assert Path(env["GATEWAY_CONFIG"]).name == "keygate.yaml"
    config = tmp_path / "keygate.yaml"
    secret = tmp_path / "secret"
    secret.write_text("s" * 64)
    text = (DEPLOY / "keygate.yaml").read_text()
    config.write_text(re.sub(r"(?m)^secret_file: .*$", f"secret_file: {secret}", text))
    settings = load_settings(str(config), environ={})
    drain = settings.shutdown_timeout
    assert float(dict(service)["TimeoutStopSec"]) > drain
