"""The Helm chart in helm/nango: rendered offline with Helm's own engine (helm-python-sdk), linted,
validated against the Kubernetes 1.30 schemas, and read the way the pods will read it (each pod's
environment is loaded through that service's real settings class)."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from nango.config import DatabaseSettings, ProcessSettings, Settings, load
from nango.jobs.settings import JobsDatabaseSettings, JobsSettings
from nango.orchestrator.settings import OrchestratorDatabaseSettings, OrchestratorSettings
from nango.persist.settings import PersistSettings, RecordsDatabaseSettings
from nango.runner.settings import RunnerSettings
from nango.server.settings import ServerSettings

CHART = Path(__file__).resolve().parents[2] / "helm" / "nango"
RELEASE = "nango"
NAMESPACE = "integrations"
KUBERNETES = "1.30.0"
SERVICES = ("server", "orchestrator", "jobs", "runner", "persist")
SETTINGS: dict[str, type[ProcessSettings]] = {
    "server": ServerSettings,
    "orchestrator": OrchestratorSettings,
    "jobs": JobsSettings,
    "runner": RunnerSettings,
    "persist": PersistSettings,
}
# which service each discovery variable must lead to
SERVICE_URL_VARIABLES = {
    "SERVER_SERVICE_URL": "server",
    "ORCHESTRATOR_SERVICE_URL": "orchestrator",
    "JOBS_SERVICE_URL": "jobs",
    "RUNNER_SERVICE_URL": "runner",
    "PERSIST_SERVICE_URL": "persist",
}
SECRET_VARIABLES = frozenset(
    {
        "NANGO_ENCRYPTION_KEY",
        "NANGO_ENCRYPTION_PREVIOUS_KEYS",
        "NANGO_INTERNAL_TOKEN",
        "NANGO_DATABASE_URL",
        "NANGO_DB_PASSWORD",
        "ORCHESTRATOR_DATABASE_URL",
        "JOBS_DATABASE_URL",
        "RECORDS_DATABASE_URL",
        "NANGO_REDIS_URL",
        "NANGO_REDIS_AUTH",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "NANGO_SECRET_KEY_DEV",
        "NANGO_SECRET_KEY_PROD",
    }
)
# what the Secret named by production-values.yaml's existingSecret holds in this test
EXISTING_SECRET = {
    "NANGO_ENCRYPTION_KEY": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYiE=",
    "NANGO_INTERNAL_TOKEN": "existing-internal-token-0123456789",
    "NANGO_DB_PASSWORD": "existing-db-password",
    "NANGO_REDIS_AUTH": "existing-redis-auth",
}
POD_IP = "10.42.7.19"
POD_NAME = "nango-runner-7d9f8c6b5-x2x4q"

Manifest = dict[str, Any]
S = TypeVar("S", bound=Settings)


@dataclass(frozen=True)
class Release:
    values: dict[str, Any]
    manifests: list[Manifest]
    # the data of the Secret the pods read: the chart's own, or the existingSecret
    secret: dict[str, str]

    def all(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [m for m in self.all(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def deployment(self, service: str) -> Manifest:
        found = [d for d in self.all("Deployment") if component(d) == service]
        assert len(found) == 1, f"expected one Deployment of {service}, found {len(found)}"
        return found[0]

    def config(self) -> dict[str, str]:
        configmaps = self.all("ConfigMap")
        assert len(configmaps) == 1
        data: dict[str, str] = configmaps[0]["data"]
        return data


def component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def container(workload: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def render(values: dict[str, Any]) -> list[Manifest]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def release(values: dict[str, Any]) -> Release:
    manifests = render(values)
    existing = values.get("secrets", {}).get("existingSecret")
    if existing:
        secret = EXISTING_SECRET
    else:
        chart_secret = [m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == RELEASE]
        assert len(chart_secret) == 1
        secret = chart_secret[0]["stringData"]
    return Release(values, manifests, secret)


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    return str(caught.value)


def all_options() -> dict[str, Any]:
    """Every optional part on, none of it from production-values.yaml."""
    return merged(
        values_file("minimal"),
        {
            "server": {"replicas": 2, "connectUI": {"enabled": True}, "publicService": {"enabled": True}},
            "runner": {"advertiseAddress": "podDNS", "replicas": 2},
            "redis": {"url": "redis://redis.example.internal:6379/0"},
            "ingress": {"enabled": True, "api": {"host": "nango.example.com"}},
            "networkPolicy": {"enabled": True},
            "migrations": {"job": {"enabled": False}},
            "serviceAccount": {"create": False, "name": "nango-workloads"},
        },
    )


@pytest.fixture(scope="module")
def minimal() -> Release:
    return release(values_file("minimal"))


@pytest.fixture(scope="module")
def production() -> Release:
    return release(values_file("production"))


@pytest.fixture(scope="module", params=["minimal", "production"])
def both(request: pytest.FixtureRequest) -> Release:
    return release(values_file(request.param))


def pod_env(rel: Release, workload: Manifest, secret: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the container starts with: ConfigMap, then env in order ($(VAR) expanded),
    downward API fields and secret keys resolved as the kubelet would."""
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        configmap = rel.one("ConfigMap", source["configMapRef"]["name"])
        env.update(configmap["data"])
    secret_data = rel.secret if secret is None else secret
    for item in spec.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = {"status.podIP": POD_IP, "metadata.name": POD_NAME}[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["key"] in secret_data:
                env[name] = secret_data[ref["key"]]
            else:
                assert ref.get("optional"), f"{name}: the pod would not start, {ref['key']} is not in the Secret"
        else:
            raise AssertionError(f"unexpected env source {source}")
    return env


def settings_of(cls: type[S], env: dict[str, str]) -> S:
    with mock.patch.dict(os.environ, env, clear=True):
        return load(cls)


def listening_port(rel: Release, service: str) -> int:
    """The gRPC port a service's pods listen on, as the service itself reads it."""
    env = pod_env(rel, rel.deployment(service))
    if service == "server":
        return settings_of(ServerSettings, env).grpc_port
    if service == "orchestrator":
        return settings_of(OrchestratorSettings, env).port
    if service == "jobs":
        return settings_of(JobsSettings, env).port
    if service == "runner":
        return settings_of(RunnerSettings, env).port
    return settings_of(PersistSettings, env).port


def service_behind(rel: Release, url: str) -> tuple[str, int]:
    """(component, containerPort) that a gRPC target "<service>.<namespace>.svc:<port>" reaches."""
    host, port = url.rsplit(":", 1)
    name, namespace, svc = host.split(".")
    assert (namespace, svc) == (NAMESPACE, "svc"), url
    service = rel.one("Service", name)
    [entry] = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    selector = service["spec"]["selector"].items()
    [target] = [d for d in rel.all("Deployment") if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
    [listening] = [p for p in container(target)["ports"] if p["name"] == entry["targetPort"]]
    return component(target), int(listening["containerPort"])


# --- the chart is valid ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["minimal", "production"])
def test_helm_lint_finds_nothing_wrong(values: str) -> None:
    report = helm.lint(CHART, values_file(values), strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == []
    # severity 1 is information ("icon is recommended"), 2 a warning, 3 an error
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", ["minimal", "production", "all-options"])
def test_every_manifest_is_valid_kubernetes_1_30(values: str) -> None:
    manifests = render(all_options() if values == "all-options" else values_file(values))
    assert {"Deployment", "Service", "ConfigMap"} <= {m["kind"] for m in manifests}
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {exc.message}")


def test_the_validator_rejects_what_kubernetes_would(minimal: Release) -> None:
    deployment = copy.deepcopy(minimal.deployment("server"))
    deployment["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_a_misspelt_value_is_refused_not_ignored() -> None:
    message = render_error(merged(values_file("minimal"), {"runner": {"replica": 3}}))
    assert "additional properties 'replica' not allowed" in message


# --- services, ports and how they find each other ---------------------------------------------------


def test_each_service_has_a_deployment_and_a_service_with_its_ports(both: Release) -> None:
    connect_ui = {"connect-ui": 3009} if both.values.get("server", {}).get("connectUI", {}).get("enabled") else {}
    expected = {
        "server": {"http": 3003, "grpc": 3004, **connect_ui},
        "orchestrator": {"grpc": 3008},
        "jobs": {"grpc": 3005},
        "runner": {"grpc": 3006},
        "persist": {"grpc": 3007},
    }
    for service in SERVICES:
        deployment = both.deployment(service)
        assert container(deployment)["args"] == ["serve", service]
        assert {p["name"]: p["containerPort"] for p in container(deployment)["ports"]} == expected[service]
        svc = both.one("Service", f"{RELEASE}-{service}")
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == expected[service]
        assert all(p["targetPort"] == p["name"] for p in svc["spec"]["ports"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        # no other service's pods behind it
        others = [d for d in both.all("Deployment") if d is not deployment]
        assert not any(
            svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in others
        )


def test_each_pod_starts_with_valid_settings(both: Release) -> None:
    for service, cls in SETTINGS.items():
        settings = settings_of(cls, pod_env(both, both.deployment(service)))
        assert settings.mode == "production"
        assert len(settings.internal_token.get_secret_value()) >= 16
        assert settings.shutdown_grace_seconds == 10
    server = settings_of(ServerSettings, pod_env(both, both.deployment("server")))
    persist = settings_of(PersistSettings, pod_env(both, both.deployment("persist")))
    for sealing in (server, persist):
        # production mode never generates a key, so this fails unless the key reached the pod
        sealing.keyring(mode="production", data_dir=Path("/nonexistent"))
    assert server.migrate_at_start is False
    assert server.bucket_name
    jobs = settings_of(JobsSettings, pod_env(both, both.deployment("jobs")))
    assert jobs.database() == server.main_database_url()


def test_production_pods_reach_the_managed_database_and_redis(production: Release) -> None:
    server = settings_of(ServerSettings, pod_env(production, production.deployment("server")))
    host = "nango.cluster-abc.eu-west-1.rds.amazonaws.com"
    assert server.main_database_url() == f"postgresql://nango:existing-db-password@{host}:5432/nango?sslmode=require"
    assert server.resolved_redis_url() == "redis://:existing-redis-auth@nango.abc.cache.amazonaws.com:6379/0"
    jobs = settings_of(JobsSettings, pod_env(production, production.deployment("jobs")))
    assert jobs.resolved_redis_url() == server.resolved_redis_url()


def test_service_urls_lead_to_the_service_listening_there(both: Release) -> None:
    listening = {service: listening_port(both, service) for service in SERVICES}
    for service in SERVICES:
        env = pod_env(both, both.deployment(service))
        for variable, target in SERVICE_URL_VARIABLES.items():
            assert service_behind(both, env[variable]) == (target, listening[target]), f"{service}: {variable}"
    # the public gateway too
    server_env = pod_env(both, both.deployment("server"))
    gateway = both.one("Service", f"{RELEASE}-server")
    [http] = [p for p in gateway["spec"]["ports"] if p["name"] == "http"]
    url = f"{RELEASE}-server.{NAMESPACE}.svc:{http['port']}"
    assert service_behind(both, url) == ("server", settings_of(ServerSettings, server_env).port)


def test_a_public_service_exposes_the_gateway_but_never_internal_grpc() -> None:
    rel = release(all_options())
    public = rel.one("Service", f"{RELEASE}-server-public")
    assert public["spec"]["type"] == "LoadBalancer"
    assert {p["name"] for p in public["spec"]["ports"]} == {"http", "connect-ui"}
    assert rel.one("Service", f"{RELEASE}-server")["spec"]["type"] == "ClusterIP"
    url = f"{RELEASE}-server-public.{NAMESPACE}.svc:3003"
    assert service_behind(rel, url) == (
        "server",
        settings_of(ServerSettings, pod_env(rel, rel.deployment("server"))).port,
    )


def test_kubernetes_service_links_cannot_shadow_settings(both: Release) -> None:
    # a Service named nango-runner would inject NANGO_RUNNER_PORT=tcp://...:3006 into every pod
    for workload in [*both.all("Deployment"), *both.all("Job")]:
        assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_runner_pods_advertise_their_own_pod_ip(both: Release) -> None:
    runner = both.deployment("runner")
    env = container(runner)["env"]
    names = [e["name"] for e in env]
    [pod_ip] = [e for e in env if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # $(POD_IP) expands only when POD_IP is defined earlier in the list
    assert names.index("POD_IP") < names.index("NANGO_RUNNER_ADVERTISED_URL")
    settings = settings_of(RunnerSettings, pod_env(both, runner))
    assert settings.resolved_advertised_url() == f"{POD_IP}:3006"
    assert settings.resolved_node_id() == POD_NAME
    assert settings.port == 3006


def test_runner_pods_can_advertise_a_dns_name_instead() -> None:
    rel = release(all_options())
    runner = rel.deployment("runner")
    headless = rel.one("Service", f"{RELEASE}-runner-pods")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= runner["spec"]["template"]["metadata"]["labels"].items()
    assert runner["spec"]["template"]["spec"]["subdomain"] == headless["metadata"]["name"]
    advertised = settings_of(RunnerSettings, pod_env(rel, runner)).resolved_advertised_url()
    assert advertised == f"{POD_NAME}.{RELEASE}-runner-pods.{NAMESPACE}.svc:3006"


# --- secrets ----------------------------------------------------------------------------------------


def every_secret() -> dict[str, Any]:
    return merged(
        values_file("minimal"),
        {
            "secrets": {
                "previousEncryptionKeys": "b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQtb2xkLW9sZDI=",
                "secretKeyDev": "0b6d8c39-5f1e-4b62-9a0e-6e0c9a7c1d01",
                "secretKeyProd": "9f1e2d3c-4b5a-4968-8776-655443322110",
            },
            "postgres": {
                "password": "pg-password-5d1a",
                "orchestratorUrl": "postgresql://o:orch-pass-77@orch.example.internal/o",
                "jobsUrl": "postgresql://j:jobs-pass-78@jobs.example.internal/j",
                "recordsUrl": "postgresql://r:records-pass-79@records.example.internal/r",
            },
            "redis": {"url": "redis://:redis-pass-80@redis.example.internal:6379/0", "auth": "redis-auth-81"},
            "s3": {"accessKeyId": "AKIAEXAMPLE82", "secretAccessKey": "aws-secret-key-83"},
        },
    )


def test_secrets_never_reach_the_configmap_or_any_other_readable_object() -> None:
    rel = release(every_secret())
    assert set(rel.config()).isdisjoint(SECRET_VARIABLES)
    assert set(rel.secret) == SECRET_VARIABLES
    readable = [yaml.safe_dump(m) for m in rel.manifests if m["kind"] != "Secret"]
    for variable, value in rel.secret.items():
        assert not any(value in text for text in readable), f"the value of {variable} is readable outside a Secret"
    # each pod still receives what it needs
    server = settings_of(ServerSettings, pod_env(rel, rel.deployment("server")))
    assert server.redis_url is not None
    assert server.secret_key_dev is not None
    assert server.secret_key_dev.get_secret_value() == "0b6d8c39-5f1e-4b62-9a0e-6e0c9a7c1d01"
    records = settings_of(RecordsDatabaseSettings, pod_env(rel, rel.deployment("persist")))
    assert records.database() == "postgresql://r:records-pass-79@records.example.internal/r"


def test_the_runner_gets_no_database_or_encryption_key() -> None:
    rel = release(every_secret())
    env = pod_env(rel, rel.deployment("runner"))
    assert SECRET_VARIABLES & set(env) == {"NANGO_INTERNAL_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_an_existing_secret_replaces_the_chart_secret(production: Release) -> None:
    assert production.all("Secret") == []
    for workload in [*production.all("Deployment"), *production.all("Job")]:
        for item in container(workload)["env"]:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == "nango-secrets"
                assert ref["key"] == item["name"]
    # a Secret without the internal token keeps the pods from starting, not a setting deep inside them
    without_token = {k: v for k, v in EXISTING_SECRET.items() if k != "NANGO_INTERNAL_TOKEN"}
    with pytest.raises(AssertionError, match="NANGO_INTERNAL_TOKEN is not in the Secret"):
        pod_env(production, production.deployment("jobs"), without_token)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        pytest.param(
            {"secrets": {"encryptionKey": ""}},
            "secrets.encryptionKey is required (NANGO_ENCRYPTION_KEY: generate one with `openssl rand -base64 32`), "
            "or set secrets.existingSecret",
            id="no-encryption-key",
        ),
        pytest.param(
            {"secrets": {"encryptionKey": "c2hvcnQ="}}, "must be base64 of exactly 32 bytes", id="short-encryption-key"
        ),
        pytest.param({"secrets": {"internalToken": ""}}, "secrets.internalToken is required", id="no-internal-token"),
        pytest.param({"secrets": {"internalToken": "short"}}, "at least 16 characters", id="short-internal-token"),
        pytest.param({"postgres": {"url": ""}}, "postgres.url or postgres.host is required", id="no-database"),
        pytest.param({"s3": {"bucket": ""}}, "s3.bucket is required", id="no-bucket"),
        pytest.param({"jobs": {"replicas": 2}}, "redis.url or redis.host is required", id="replicas-without-redis"),
        pytest.param(
            {"nango": {"config": {"NANGO_DB_PASSWORD": "x"}}},
            "nango.config.NANGO_DB_PASSWORD looks like a secret",
            id="secret-in-configmap",
        ),
        pytest.param(
            {"secrets": {"existingSecret": "mine"}},
            "secrets.existingSecret is set, so these values would be ignored: put NANGO_DATABASE_URL, "
            "NANGO_ENCRYPTION_KEY, NANGO_INTERNAL_TOKEN in the Secret",
            id="existing-secret-and-inline-values",
        ),
        pytest.param(
            {"nango": {"config": {"NANGO_JOBS_PORT": "4005"}}},
            "nango.config.NANGO_JOBS_PORT is derived by the chart from its own values",
            id="wiring-in-configmap",
        ),
        pytest.param(
            {"orchestrator": {"terminationGracePeriodSeconds": 12}},
            "orchestrator.terminationGracePeriodSeconds (12) must exceed",
            id="grace-period-too-short",
        ),
    ],
)
def test_bad_values_fail_rendering_with_a_clear_message(override: dict[str, Any], message: str) -> None:
    assert message in render_error(merged(values_file("minimal"), override))


def test_chart_defaults_alone_ask_for_the_encryption_key() -> None:
    message = render_error({})
    assert "secrets.encryptionKey is required" in message
    assert "openssl rand -base64 32" in message


# --- migrations -------------------------------------------------------------------------------------


def test_migrations_run_in_a_hook_job_before_the_pods(both: Release) -> None:
    [job] = both.all("Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert container(job)["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert both.config()["NANGO_MIGRATE_AT_START"] == "false"
    # at pre-install the release's ConfigMap, Secret and ServiceAccount do not exist yet
    spec = job["spec"]["template"]["spec"]
    assert "envFrom" not in container(job)
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container(job)["env"] if "valueFrom" in e}
    if both.values["secrets"].get("existingSecret"):
        assert refs == {"nango-secrets"}
        job_secret = both.secret
    else:
        [name] = refs
        hook_secret = both.one("Secret", name)
        assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == annotations["helm.sh/hook"]
        assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )
        assert set(hook_secret["stringData"]) <= {
            "NANGO_DATABASE_URL",
            "NANGO_DB_PASSWORD",
            "ORCHESTRATOR_DATABASE_URL",
            "JOBS_DATABASE_URL",
            "RECORDS_DATABASE_URL",
        }
        job_secret = hook_secret["stringData"]
        assert "serviceAccountName" not in spec
    env = pod_env(both, job, job_secret)
    server_env = pod_env(both, both.deployment("server"))
    main = settings_of(DatabaseSettings, server_env).main_database_url()
    # `nango migrate` reaches the same databases as the services
    assert settings_of(DatabaseSettings, env).main_database_url() == main
    assert settings_of(OrchestratorDatabaseSettings, env).database() == main
    assert settings_of(JobsDatabaseSettings, env).database() == main
    assert settings_of(RecordsDatabaseSettings, env).database() == main


def test_without_the_job_each_service_migrates_at_start() -> None:
    rel = release(all_options())
    assert rel.all("Job") == []
    assert settings_of(ServerSettings, pod_env(rel, rel.deployment("server"))).migrate_at_start is True


# --- probes, shutdown, security ---------------------------------------------------------------------


def test_probes_use_grpc_health_and_the_gateway_health_route(both: Release) -> None:
    for service in SERVICES:
        spec = container(both.deployment(service))
        grpc_port = {p["name"]: p["containerPort"] for p in spec["ports"]}["grpc"]
        if service == "server":
            for probe in ("startupProbe", "readinessProbe"):
                assert spec[probe]["httpGet"]["port"] == "http"
                assert spec[probe]["httpGet"]["path"] in ("/health", "/ready")
            assert spec["livenessProbe"]["grpc"] == {"port": grpc_port}
        else:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert spec[probe]["grpc"] == {"port": grpc_port}, f"{service} {probe}"


def test_pods_outlive_their_shutdown_grace(both: Release) -> None:
    grace = float(both.config()["NANGO_SHUTDOWN_GRACE_SECONDS"])
    for service in SERVICES:
        pod = both.deployment(service)["spec"]["template"]["spec"]
        pre_stop = int(container(both.deployment(service))["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + grace


def test_a_longer_shutdown_grace_lengthens_the_grace_period() -> None:
    rel = release(merged(values_file("minimal"), {"nango": {"shutdownGraceSeconds": 90}}))
    for service in SERVICES:
        assert rel.deployment(service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 90


def test_pods_run_unprivileged_on_a_read_only_root(both: Release) -> None:
    for workload in [*both.all("Deployment"), *both.all("Job")]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        spec = container(workload)
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = {m["mountPath"] for m in spec["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
        assert "/tmp" in writable
    # the runner unpacks bundles under NANGO_DATA_DIR
    runner = both.deployment("runner")
    data_dir = settings_of(RunnerSettings, pod_env(both, runner)).resolved_data_dir()
    volumes = {v["name"]: v for v in runner["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container(runner)["volumeMounts"]}
    assert "emptyDir" in mounts[str(data_dir)]


# --- scaling, ingress, network ----------------------------------------------------------------------


def test_production_autoscales_and_protects_every_service(production: Release) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in production.all("HorizontalPodAutoscaler")}
    pdbs = production.all("PodDisruptionBudget")
    for service in SERVICES:
        deployment = production.deployment(service)
        name = deployment["metadata"]["name"]
        assert hpas[name]["apiVersion"] == "autoscaling/v2"
        assert hpas[name]["spec"]["minReplicas"] == 3
        # the autoscaler owns the replica count; a fixed one would fight it on every upgrade
        assert "replicas" not in deployment["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"].items()
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels]
        assert len(covering) == 1, service
    assert len(pdbs) == len(SERVICES)


def test_replicas_without_autoscaling_get_a_pdb(minimal: Release) -> None:
    assert minimal.all("HorizontalPodAutoscaler") == []
    assert minimal.all("PodDisruptionBudget") == []
    rel = release(merged(values_file("minimal"), {"runner": {"replicas": 3}}))
    assert rel.deployment("runner")["spec"]["replicas"] == 3
    [pdb] = rel.all("PodDisruptionBudget")
    assert pdb["metadata"]["name"] == f"{RELEASE}-runner"


def test_the_ingress_routes_the_gateway_and_connect_ui(production: Release) -> None:
    [ingress] = production.all("Ingress")
    server = production.one("Service", f"{RELEASE}-server")
    ports = {p["name"] for p in server["spec"]["ports"]}
    routes = {
        rule["host"]: path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]
    }
    assert routes == {
        "api.nango.example.com": {"name": server["metadata"]["name"], "port": {"name": "http"}},
        "connect.nango.example.com": {"name": server["metadata"]["name"], "port": {"name": "connect-ui"}},
    }
    assert {"http", "connect-ui"} <= ports
    settings = settings_of(ServerSettings, pod_env(production, production.deployment("server")))
    assert settings.server_url == "https://api.nango.example.com"
    assert settings.connect_url() == "https://connect.nango.example.com"
    assert settings.serve_connect_ui is True


def test_network_policies_keep_internal_grpc_to_the_release(production: Release) -> None:
    policies = production.all("NetworkPolicy")
    assert len(policies) == len(SERVICES)
    release_pods = production.deployment("jobs")["spec"]["template"]["metadata"]["labels"]
    for policy in policies:
        [deployment] = [
            d
            for d in production.all("Deployment")
            if policy["spec"]["podSelector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        grpc_rules = [r for r in policy["spec"]["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
        assert len(grpc_rules) == 1, component(deployment)
        [peer] = grpc_rules[0]["from"]
        assert peer["podSelector"]["matchLabels"].items() <= release_pods.items()
