#!/usr/bin/env python3
"""Offline checks of alignd's container and Kubernetes deployment files: no cluster, no Docker.

Run by scripts/validate-deploy.sh inside a venv holding pinned PyPI packages:

* Kubernetes manifests (Deploy/k8s/*.yaml, and the output of `kubectl kustomize Deploy/` where
  kubectl is installed) against the JSON schemas that `kubernetes-validate` ships, for each
  version in K8S_VERSIONS, in strict mode (an unknown field fails); then cross-references the
  schemas cannot see: selectors, ports, probes, names of ConfigMaps/Secrets/claims, the grace
  period against drain_timeout_seconds, configuration keys against Sources/AlignServer.
* Deploy/envoy/envoy.yaml parsed into Envoy's own Bootstrap protobuf (`xds-protos`, generated
  from envoyproxy/data-plane-api): unknown or deprecated fields fail; routes name existing
  clusters; the clusters resolve the headless Service on its ports.
* Deploy/grafana/alignd-dashboard.json: structure, and every metric its queries use must be
  emitted by the Swift sources (a string literal "alignd_..." under Sources/) or be listed in
  PLANNED_METRICS below.
* Dockerfile, parsed by the `dockerfile` package (BuildKit's own parser): every COPY/ADD source
  from the build context exists in the repository and is not excluded by .dockerignore, every
  --from names an earlier stage, the final stage sets a non-root USER, a HEALTHCHECK and the
  ports, and ALIGND_* variables name real configuration keys.

Prints one line per check and a closing "N passed, N failed"; exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

# Schemas of these Kubernetes versions (kubernetes-validate ships 1.25 and later): the oldest
# release the manifests promise to work on, and the current one they are written for.
K8S_VERSIONS = ("1.30.0", "1.34.0")

# Metrics the dashboard may use before the Swift sources emit them (issue 7's exposition work).
# Once a name appears as a string literal under Sources/ it is found there; delete it here then.
PLANNED_METRICS: set[str] = set()
# Configuration keys the manifests may set before Sources/AlignServer/Configuration.swift has them.
PLANNED_CONFIG_KEYS = {"store_url"}
# ALIGND_* variables that are not configuration keys.
EXTRA_ENVIRONMENT = {"ALIGND_CONFIG", "ALIGND_API_KEY"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Report:
    """Collects named checks; each passes or fails with its problems listed."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.notes: list[str] = []

    def check(self, name: str, problems: Iterable[str]) -> bool:
        problems = list(problems)
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"     - {problem}")
        else:
            self.passed += 1
            print(f"PASS {name}")
        return not problems

    def run(self, name: str, body: Callable[[], Iterable[str]]) -> bool:
        """Runs `body` as one check; an exception is a failure of that check, not a crash."""
        try:
            problems = list(body())
        except Exception as error:  # noqa: BLE001 - reported as the check's failure
            problems = [f"{type(error).__name__}: {error}"]
        return self.check(name, problems)

    def note(self, text: str) -> None:
        self.notes.append(text)


# ---------------------------------------------------------------------------------------------
# Facts read from the Swift sources


def known_config_keys(root: Path) -> set[str]:
    """Configuration key names declared in ConfigurationLoader.keys."""
    text = (root / "Sources/AlignServer/Configuration.swift").read_text()
    keys = set(re.findall(r'\b(?:string|int|double|bool|optionalString|enumeration)\(\s*"([a-z0-9_]+)"', text))
    keys |= set(re.findall(r'\bname:\s*"([a-z0-9_]+)"', text))
    if len(keys) < 10:
        raise RuntimeError(f"found only {len(keys)} configuration keys in Configuration.swift; parser out of date?")
    return keys


def emitted_metrics(root: Path) -> set[str]:
    """Metric names written as string literals anywhere under Sources/."""
    names: set[str] = set()
    for path in (root / "Sources").rglob("*.swift"):
        names |= set(re.findall(r'"(alignd_[a-z0-9_]+)"', path.read_text(errors="replace")))
    return names


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_yaml_documents(path: Path) -> list[dict]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict):
            raise ValueError(f"{path.name}: a document is not a mapping")
    return documents


def resource_name(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def schema_problems(docs: list[tuple[str, dict]], version: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate import utils as kv

    problems = []
    for origin, doc in docs:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                problems.append(f"{origin}: {resource_name(doc)} has no {field}")
        if any(field not in doc for field in ("apiVersion", "kind")):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kv.ValidationError as error:
            path = ".".join(str(part) for part in error.path) or "(top)"
            problems.append(f"{origin}: {resource_name(doc)}: {path}: {error.message}")
        except kv.SchemaNotFoundError as error:
            problems.append(f"{origin}: {resource_name(doc)}: {error.message}")
    return problems


def kustomization_problems(deploy: Path) -> list[str]:
    """Every listed file exists, and every manifest under k8s/ is listed."""
    kustomization = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    problems = []
    listed = set()
    for entry in kustomization.get("resources", []):
        listed.add(os.path.normpath(entry))
        if not (deploy / entry).exists():
            problems.append(f"resources: {entry} does not exist")
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
        for item in generator.get("files", []) + generator.get("envs", []):
            source = item.split("=", 1)[-1]
            if source.startswith("secrets/"):
                continue  # made by the operator, never committed
            if not (deploy / source).exists():
                problems.append(f"{generator.get('name')}: {source} does not exist")
    for path in sorted((deploy / "k8s").glob("*.y*ml")):
        relative = os.path.normpath(path.relative_to(deploy).as_posix())
        if relative not in listed:
            problems.append(f"{relative} is not listed in kustomization.yaml resources")
    return problems


def render_kustomization(deploy: Path) -> list[dict]:
    """`kubectl kustomize` on a copy of Deploy/ with throwaway secrets (never the real ones)."""
    with tempfile.TemporaryDirectory(prefix="alignd-deploy-") as tmp:
        copy = Path(tmp) / "Deploy"
        shutil.copytree(deploy, copy, ignore=shutil.ignore_patterns("secrets"))
        (copy / "secrets").mkdir()
        # A keys file line as `alignctl keys add` writes it: role, SHA-256 of a random key, name.
        digest = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
        (copy / "secrets/keys.txt").write_text(f"admin {digest} validate-deploy\n")
        (copy / "secrets/postgres.env").write_text(f"password={secrets.token_hex(24)}\n")
        environment = dict(os.environ, KUBECONFIG=os.devnull)
        result = subprocess.run(
            ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, timeout=60, env=environment)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl kustomize failed: {result.stderr.strip()}")
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def template_labels(doc: dict) -> dict:
    return doc["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def grace_and_prestop(spec: dict, container: dict) -> tuple[float, float]:
    grace = float(spec.get("terminationGracePeriodSeconds", 30))
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    sleep = 0.0
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    elif "exec" in pre_stop:
        command = pre_stop["exec"].get("command", [])
        if len(command) == 2 and command[0].endswith("sleep"):
            sleep = float(command[1])
    return grace, sleep


def generated_names(deploy: Path) -> tuple[set[str], set[str]]:
    kustomization = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    config_maps = {entry["name"] for entry in kustomization.get("configMapGenerator", [])}
    secrets_ = {entry["name"] for entry in kustomization.get("secretGenerator", [])}
    return config_maps, secrets_


def alignd_config(deploy: Path, docs: list[dict]) -> tuple[dict, str]:
    """The alignd JSON config: from the rendered ConfigMap when rendered, else the source file."""
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and "alignd.json" in (doc.get("data") or {}):
            return json.loads(doc["data"]["alignd.json"]), f"ConfigMap/{doc['metadata']['name']}"
    return json.loads((deploy / "config/alignd.json").read_text()), "config/alignd.json"


class Inventory:
    """The resources of one deployment, by kind and name, with the names kustomize will generate."""

    def __init__(self, deploy: Path, docs: list[dict], rendered: bool) -> None:
        self.deploy = deploy
        self.docs = docs
        self.by_kind: dict[str, dict[str, dict]] = {}
        for doc in docs:
            self.by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        self.workloads = [doc for doc in docs if pod_spec(doc) is not None]
        self.names = {kind: set(self.by_kind.get(kind, {})) for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim")}
        if not rendered:  # generated objects exist only after kustomize runs
            generated_config_maps, generated_secrets = generated_names(deploy)
            self.names["ConfigMap"] |= generated_config_maps
            self.names["Secret"] |= generated_secrets

    def defined(self, kind: str, name: str) -> bool:
        return name in self.names[kind]

    def get(self, kind: str, name: str) -> dict | None:
        return self.by_kind.get(kind, {}).get(name)


def workload_problems(inventory: Inventory) -> list[str]:
    """Pod templates: selectors, Pod Security (restricted), resources, probes, referenced objects."""
    problems: list[str] = []
    by_kind, defined = inventory.by_kind, inventory.defined
    for workload in inventory.workloads:
        where = resource_name(workload)
        spec = pod_spec(workload)
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        if not selects(selector, template_labels(workload)):
            problems.append(f"{where}: selector {selector} does not match its pod template labels")
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        # The namespace enforces the "restricted" Pod Security Standard; these are the parts a
        # manifest can get wrong (runAsNonRoot and allowPrivilegeEscalation are checked too).
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where}: {flag} is not allowed under the restricted Pod Security level")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{where}: hostPath volume {volume['name']} is not allowed under restricted")
        pod_seccomp = spec.get("securityContext", {}).get("seccompProfile", {}).get("type")
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            context = container.get("securityContext", {})
            if context.get("seccompProfile", {}).get("type", pod_seccomp) not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where} container {container['name']}: no RuntimeDefault seccomp profile")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f"{where} container {container['name']}: capabilities.drop does not hold ALL")
            if context.get("privileged"):
                problems.append(f"{where} container {container['name']}: privileged")
        claim_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume and not defined("ConfigMap", volume["configMap"]["name"]):
                problems.append(f"{where}: volume {volume['name']} uses missing ConfigMap {volume['configMap']['name']}")
            if "secret" in volume and not defined("Secret", volume["secret"]["secretName"]):
                problems.append(f"{where}: volume {volume['name']} uses missing Secret {volume['secret']['secretName']}")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and not defined("PersistentVolumeClaim", claim):
                problems.append(f"{where}: volume {volume['name']} uses missing claim {claim}")
        for container in spec.get("containers", []):
            name = f"{where} container {container['name']}"
            resources = container.get("resources", {})
            for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                for key in keys:
                    if key not in resources.get(part, {}):
                        problems.append(f"{name}: resources.{part}.{key} is not set")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{name}: no {probe}")
            if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: securityContext.allowPrivilegeEscalation is not false")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in claim_templates:
                    problems.append(f"{name}: mounts undefined volume {mount['name']}")
            earlier: set[str] = set()
            for variable in container.get("env", []):
                for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    target = variable.get("valueFrom", {}).get(ref)
                    if not target or target.get("optional"):
                        continue
                    if not defined(kind, target["name"]):
                        problems.append(f"{name}: env {variable['name']} uses missing {kind} {target['name']}")
                    elif (obj := by_kind.get(kind, {}).get(target["name"])) is not None and \
                            target["key"] not in {**obj.get("data", {}), **obj.get("stringData", {})}:
                        problems.append(f"{name}: env {variable['name']}: {kind} {target['name']} has no key {target['key']}")
                # $(NAME) expands only variables defined earlier in the list.
                for reference in re.findall(r"(?<!\$)\$\((\w+)\)", variable.get("value", "")):
                    if reference not in earlier:
                        problems.append(f"{name}: env {variable['name']} refers to $({reference}) before it is defined")
                earlier.add(variable["name"])
            port_names = {port.get("name") for port in container.get("ports", [])}
            port_numbers = {port["containerPort"] for port in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    port = container.get(probe, {}).get(handler, {}).get("port")
                    if port is not None and port not in port_names | port_numbers:
                        problems.append(f"{name}: {probe} port {port} is not a container port")
        if workload["kind"] == "StatefulSet":
            service = by_kind.get("Service", {}).get(workload["spec"]["serviceName"])
            if service is None or service["spec"].get("clusterIP") != "None":
                problems.append(f"{where}: serviceName {workload['spec']['serviceName']} is not a headless Service")

    return problems


def service_problems(inventory: Inventory) -> list[str]:
    """Services, autoscalers and disruption budgets select existing pods and ports."""
    problems: list[str] = []
    by_kind, workloads = inventory.by_kind, inventory.workloads
    for service in by_kind.get("Service", {}).values():
        where = resource_name(service)
        matched = [w for w in workloads if selects(service["spec"].get("selector", {}), template_labels(w))]
        if not matched:
            problems.append(f"{where}: selector matches no workload")
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload in matched:
                container_ports = [p for c in pod_spec(workload)["containers"] for p in c.get("ports", [])]
                if not any(target in (p.get("name"), p["containerPort"]) for p in container_ports):
                    problems.append(f"{where}: targetPort {target} is not a port of {resource_name(workload)}")

    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        workload = by_kind.get(target["kind"], {}).get(target["name"])
        if workload is None:
            problems.append(f"{resource_name(hpa)}: target {target['kind']}/{target['name']} does not exist")
            continue
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] == "Resource":
                resource = metric["resource"]["name"]
                for container in pod_spec(workload)["containers"]:
                    if resource not in container.get("resources", {}).get("requests", {}):
                        problems.append(f"{resource_name(hpa)}: scales on {resource} but {container['name']} requests none")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        matched = [w for w in workloads if selects(selector, template_labels(w))]
        if not matched:
            problems.append(f"{resource_name(pdb)}: selector matches no workload")
        for workload in matched:
            replicas = workload["spec"].get("replicas", 1)
            for hpa in hpas.values():
                if hpa["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]:
                    replicas = hpa["spec"].get("minReplicas", 1)
            min_available = pdb["spec"].get("minAvailable")
            if isinstance(min_available, int) and min_available >= replicas:
                problems.append(f"{resource_name(pdb)}: minAvailable {min_available} blocks every eviction at {replicas} replicas")
            if pdb["spec"].get("maxUnavailable") == 0:
                problems.append(f"{resource_name(pdb)}: maxUnavailable 0 blocks every eviction")

    return problems


def alignd_problems(inventory: Inventory, config_keys: set[str]) -> list[str]:
    """The alignd Deployment against its config: keys, ports, probes, drain, mounted files."""
    problems: list[str] = []
    alignd = inventory.get("Deployment", "alignd")
    if alignd is None:
        return ["Deployment/alignd is missing"]
    config, config_source = alignd_config(inventory.deploy, inventory.docs)
    known = config_keys | PLANNED_CONFIG_KEYS
    for key in sorted(set(config) - known):
        problems.append(f"{config_source}: unknown configuration key '{key}' (alignd would exit 78)")
    spec = pod_spec(alignd)
    container = next(c for c in spec["containers"] if c["name"] == "alignd")
    for variable in container.get("env", []):
        name = variable["name"]
        if name.startswith("ALIGND_") and name not in EXTRA_ENVIRONMENT and name[7:].lower() not in known:
            problems.append(f"Deployment/alignd: env {name} is no configuration key")
    grpc_port = config.get("port", 50051)
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports.get("grpc") != grpc_port:
        problems.append(f"Deployment/alignd: container port grpc is {ports.get('grpc')}, config port is {grpc_port}")
    if ports.get("http") != config.get("http_port", 8080):
        problems.append(f"Deployment/alignd: container port http is {ports.get('http')}, config http_port is {config.get('http_port', 8080)}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = container.get(probe, {}).get("grpc", {}).get("port")
        if port != grpc_port:
            problems.append(f"Deployment/alignd: {probe} is not a gRPC probe on port {grpc_port}")
    drain = float(config.get("drain_timeout_seconds", 30))
    grace, sleep = grace_and_prestop(spec, container)
    if sleep <= 0:
        problems.append("Deployment/alignd: no preStop sleep before SIGTERM")
    if grace <= sleep + drain:
        problems.append(
            f"Deployment/alignd: terminationGracePeriodSeconds {grace:g} must exceed preStop {sleep:g} s + "
            f"drain_timeout_seconds {drain:g} s")
    liveness = container.get("livenessProbe", {})
    tolerated = liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
    if tolerated <= grace:
        problems.append(
            f"Deployment/alignd: liveness tolerates {tolerated} s of NOT_SERVING, less than the {grace:g} s grace period "
            "(a drain would count as dead)")
    if config.get("host") not in (None, "127.0.0.1", "::1", "localhost") and not config.get("keys_file") \
            and not config.get("allow_unauthenticated"):
        problems.append(f"{config_source}: binds {config.get('host')} without keys_file (alignd refuses to start)")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    if config.get("keys_file"):
        directory = os.path.dirname(config["keys_file"])
        volume = volumes.get(mounts.get(directory, ""), {})
        if "secret" not in volume:
            problems.append(f"{config_source}: keys_file {config['keys_file']} is not in a mounted Secret")
        elif (items := volume["secret"].get("items")) and os.path.basename(config["keys_file"]) not in [i["path"] for i in items]:
            problems.append(f"{config_source}: keys_file {config['keys_file']} is not among the Secret's items")
    config_path = next((v.get("value") for v in container.get("env", []) if v["name"] == "ALIGND_CONFIG"), None)
    if config_path is None:
        problems.append("Deployment/alignd: ALIGND_CONFIG is not set (the mounted config file is not read)")
    elif "configMap" not in volumes.get(mounts.get(os.path.dirname(config_path), ""), {}):
        problems.append(f"Deployment/alignd: ALIGND_CONFIG {config_path} is not in a mounted ConfigMap")
    # Several replicas share one store: a PostgreSQL URL naming a Service of this deployment.
    store_url = next((v.get("value") for v in container.get("env", []) if v["name"] == "ALIGND_STORE_URL"),
                     config.get("store_url", ""))
    match = re.fullmatch(r"postgres(?:ql)?://[^@/]+@([a-z0-9.-]+?)(?::(\d+))?/\w+(?:\?.*)?", store_url or "")
    if not match:
        problems.append(f"Deployment/alignd: store_url '{store_url}' is not a postgres:// URL (replicas would not share feedback)")
    else:
        service = inventory.get("Service", match.group(1).split(".")[0])
        port = int(match.group(2) or 5432)
        if service is None or port not in [p["port"] for p in service["spec"]["ports"]]:
            problems.append(f"Deployment/alignd: store_url host {match.group(1)}:{port} is no Service port here")
    data_volume = volumes.get(mounts.get(config.get("data_dir", ""), ""), {})
    if "persistentVolumeClaim" not in data_volume:
        problems.append(f"{config_source}: data_dir {config.get('data_dir')} is not a mounted PersistentVolumeClaim")
    return problems


# ---------------------------------------------------------------------------------------------
# Envoy


def any_type_urls(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "@type" and isinstance(value, str):
                yield value
            else:
                yield from any_type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from any_type_urls(value)


def import_envoy_types(type_urls: Iterable[str]) -> None:
    """Loads the generated modules of each package an Any names, so the parser can resolve it."""
    import envoy

    root = Path(envoy.__file__).parent.parent
    for url in set(type_urls):
        package = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        directory = root.joinpath(*package.split("."))
        modules = sorted(directory.glob("*_pb2.py"))
        if not modules:
            raise RuntimeError(f"no generated protobuf module for {url}")
        for module in modules:
            importlib.import_module(f"{package}.{module.stem}")


def deprecated_fields(message: Any, path: str) -> Iterable[str]:
    from google.protobuf import any_pb2, descriptor_pool, message_factory

    for field, value in message.ListFields():
        here = f"{path}.{field.name}"
        if field.GetOptions().deprecated:
            yield here
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values()) if field.message_type.fields_by_name["value"].message_type else []
        else:
            values = list(value) if field.is_repeated else [value]
        for item in values:
            if isinstance(item, any_pb2.Any):
                descriptor = descriptor_pool.Default().FindMessageTypeByName(item.TypeName())
                inner = message_factory.GetMessageClass(descriptor)()
                item.Unpack(inner)
                yield from deprecated_fields(inner, f"{here}<{item.TypeName().rsplit('.', 1)[-1]}>")
            else:
                yield from deprecated_fields(item, here)


def envoy_problems(envoy_file: Path) -> list[str]:
    from google.protobuf import json_format
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    config = yaml.safe_load(envoy_file.read_text())
    import_envoy_types(any_type_urls(config))
    bootstrap = bootstrap_pb2.Bootstrap()
    try:
        json_format.ParseDict(config, bootstrap)
    except json_format.ParseError as error:
        return [f"not a valid envoy.config.bootstrap.v3.Bootstrap: {str(error).splitlines()[0]}"]
    return [f"deprecated field {path}" for path in deprecated_fields(bootstrap, "bootstrap")]


def envoy_cross_problems(envoy_file: Path, deploy: Path, docs: list[dict]) -> list[str]:
    """Routes name clusters; clusters resolve the headless Service; listeners match the pod's ports."""
    config = yaml.safe_load(envoy_file.read_text())
    namespace = yaml.safe_load((deploy / "kustomization.yaml").read_text()).get("namespace", "default")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    problems = []
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for cluster in clusters.values():
        if not cluster.get("health_checks"):
            problems.append(f"cluster {cluster['name']}: no active health checks")
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                socket = endpoint["endpoint"]["address"]["socket_address"]
                host, port = socket["address"], socket["port_value"]
                match = re.fullmatch(rf"([a-z0-9-]+)\.{re.escape(namespace)}\.svc\.cluster\.local", host)
                service = services.get(match.group(1)) if match else None
                if service is None:
                    problems.append(f"cluster {cluster['name']}: {host} is not <service>.{namespace}.svc.cluster.local of a Service here")
                    continue
                if service["spec"].get("clusterIP") != "None":
                    problems.append(f"cluster {cluster['name']}: Service {match.group(1)} is not headless (one virtual IP defeats per-request balancing)")
                if port not in [p["port"] for p in service["spec"]["ports"]]:
                    problems.append(f"cluster {cluster['name']}: port {port} is not a port of Service {match.group(1)}")
    grpc_cluster = clusters.get("alignd_grpc")
    if grpc_cluster is None:
        problems.append("no cluster alignd_grpc")
    else:
        options = grpc_cluster.get("typed_extension_protocol_options", {}).get(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
        if "http2_protocol_options" not in options.get("explicit_http_config", {}):
            problems.append("cluster alignd_grpc: upstream is not HTTP/2 (gRPC needs it)")
        if not any("grpc_health_check" in h for h in grpc_cluster.get("health_checks", [])):
            problems.append("cluster alignd_grpc: no gRPC health check")
    listener_ports = set()
    for listener in config["static_resources"]["listeners"]:
        listener_ports.add(listener["address"]["socket_address"]["port_value"])
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                route_config = network_filter.get("typed_config", {}).get("route_config", {})
                for host in route_config.get("virtual_hosts", []):
                    for route in host.get("routes", []):
                        cluster = route.get("route", {}).get("cluster")
                        if cluster is not None and cluster not in clusters:
                            problems.append(f"listener {listener['name']}: route to undefined cluster {cluster}")
    gateway = next((d for d in docs if d["kind"] == "Deployment" and any(
        c["name"] == "envoy" for c in pod_spec(d)["containers"])), None)
    if gateway is None:
        problems.append("no Deployment runs the envoy container")
    else:
        container_ports = {p["containerPort"] for c in pod_spec(gateway)["containers"] for p in c.get("ports", [])}
        for port in sorted(container_ports - listener_ports):
            problems.append(f"{resource_name(gateway)}: container port {port} has no Envoy listener")
    return problems


# ---------------------------------------------------------------------------------------------
# Grafana


def grafana_problems(dashboard_file: Path, known_metrics: set[str]) -> tuple[list[str], set[str]]:
    dashboard = json.loads(dashboard_file.read_text())
    problems = []
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dashboard:
            problems.append(f"no '{key}'")
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    ids: set[int] = set()
    used: set[str] = set()

    def panels(items: list[dict]) -> Iterable[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    expressions = []
    for panel in panels(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            problems.append(f"panel '{title}': duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"panel '{title}': bad gridPos {grid}")
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"panel '{title}': no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append(f"panel '{title}': refIds missing or repeated")
        expressions += [(title, t.get("expr", "")) for t in targets]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query", "")
        query = query.get("query", "") if isinstance(query, dict) else query
        if variable.get("type") == "query":
            expressions += [(f"variable {variable.get('name')}", query), (f"variable {variable.get('name')}", variable.get("definition", ""))]
    expressions += [(f"annotation {a.get('name')}", a.get("expr", "")) for a in dashboard.get("annotations", {}).get("list", [])]
    for where, expression in expressions:
        if expression.count("(") != expression.count(")") or expression.count("{") != expression.count("}"):
            problems.append(f"{where}: unbalanced brackets in {expression}")
        for variable in re.findall(r"\$(?!__)(\w+)", expression):
            if variable not in variables:
                problems.append(f"{where}: uses undefined variable ${variable}")
        for metric in re.findall(r"\balignd_[a-z0-9_]+", expression):
            base = metric
            if metric not in known_metrics:
                for suffix in HISTOGRAM_SUFFIXES:
                    if metric.endswith(suffix) and metric[: -len(suffix)] in known_metrics:
                        base = metric[: -len(suffix)]
            if base not in known_metrics:
                problems.append(f"{where}: metric {metric} is neither emitted under Sources/ nor in PLANNED_METRICS")
            used.add(base)
    return problems, used


# ---------------------------------------------------------------------------------------------
# Dockerfile


class DockerIgnore:
    """The .dockerignore rules as BuildKit applies them (moby/patternmatcher): a path is excluded
    when the last pattern matching it or one of its parent folders is not a `!` exception."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[re.Pattern[str], bool]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if exclusion else line).lstrip("/")
            self.rules.append((re.compile(self._regex(pattern)), exclusion))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            char = pattern[i]
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
                continue
            if pattern.startswith("**", i):
                out += ".*"
                i += 2
                continue
            if char == "*":
                out += "[^/]*"
            elif char == "?":
                out += "[^/]"
            elif char == "[":
                end = pattern.find("]", i)
                if end < 0:
                    out += re.escape(char)
                else:
                    out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
                    i = end
            elif char == "\\" and i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            else:
                out += re.escape(char)
            i += 1
        return out

    def excluded(self, path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for regex, exclusion in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                result = not exclusion
        return result


def context_files(root: Path) -> list[str]:
    """Files a clean checkout has: tracked plus untracked-but-not-ignored (or every file, without git)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            capture_output=True, check=True)
        files = [f for f in result.stdout.decode().split("\0") if f]
        return sorted(f for f in files if (root / f).is_file())
    except (OSError, subprocess.CalledProcessError):
        # No git: every file outside hidden folders (.git, .build, caches).
        return sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1]))


def substitute(text: str, arguments: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)",
                  lambda m: arguments.get(m.group(1) or m.group(3), m.group(2) or ""), text)


def dockerfile_problems(root: Path, dockerfile: Path, config_keys: set[str]) -> list[str]:
    import dockerfile as parser

    commands = parser.parse_file(str(dockerfile))
    ignore_file = root / ".dockerignore"
    ignore = DockerIgnore(ignore_file.read_text() if ignore_file.exists() else "")
    included = [f for f in context_files(root) if not ignore.excluded(f)]
    problems = []
    global_arguments: dict[str, str] = {}
    stages: list[dict] = []
    for command in commands:
        where = f"line {command.start_line}"
        name = command.cmd.upper()
        if name == "ARG" and not stages:
            for value in command.value:
                key, _, default = value.partition("=")
                global_arguments[key] = default
            continue
        if name == "FROM":
            values = list(command.value)
            image = substitute(values[0], global_arguments)
            alias = values[2].lower() if len(values) >= 3 and values[1].upper() == "AS" else None
            if alias and any(stage["alias"] == alias for stage in stages):
                problems.append(f"{where}: stage name {alias} used twice")
            if not image:
                problems.append(f"{where}: FROM {values[0]} has no value (undefined ARG?)")
            stages.append({"alias": alias, "image": image, "commands": []})
            continue
        if not stages:
            problems.append(f"{where}: {name} before the first FROM")
            continue
        stages[-1]["commands"].append(command)
        if name not in ("COPY", "ADD"):
            continue
        flags = dict(flag.lstrip("-").partition("=")[::2] for flag in command.flags)
        sources = list(command.value[:-1])
        if "from" in flags:
            reference = flags["from"].lower()
            earlier = [stage["alias"] for stage in stages[:-1]]
            if not (reference in earlier or (reference.isdigit() and int(reference) < len(stages) - 1)):
                problems.append(f"{where}: --from={flags['from']} is not an earlier stage (earlier: {', '.join(filter(None, earlier)) or 'none'})")
            continue
        if command.heredocs:
            continue
        for source in sources:
            if name == "ADD" and re.match(r"^(https?://|git@)", source):
                continue
            pattern = os.path.normpath(source).lstrip("/")
            if pattern in (".", ""):
                matches = included
            else:
                matches = [f for f in included if fnmatch.fnmatchcase(f, pattern) or f.startswith(pattern + "/")]
            if not matches:
                exists = (root / pattern).exists()
                reason = "excluded by .dockerignore" if exists else "not in the repository"
                problems.append(f"{where}: {name} source {source} is {reason}")
    if not stages:
        return problems + ["no FROM"]
    final = stages[-1]["commands"]

    def last(instruction: str) -> Any:
        found = [c for c in final if c.cmd.upper() == instruction]
        return found[-1] if found else None

    user = last("USER")
    if user is None:
        problems.append("final stage sets no USER (runs as root)")
    else:
        account = user.value[0].split(":")[0]
        if account in ("root", "0") or "$" in account:
            problems.append(f"final stage USER {user.value[0]} is not a fixed non-root user")
    healthcheck = last("HEALTHCHECK")
    if healthcheck is None or healthcheck.value[0].upper() == "NONE":
        problems.append("final stage has no HEALTHCHECK")
    exposed = {value.split("/")[0] for c in final if c.cmd.upper() == "EXPOSE" for value in c.value}
    for port in ("50051", "8080"):
        if port not in exposed:
            problems.append(f"final stage does not EXPOSE {port}")
    entrypoint = last("ENTRYPOINT")
    if entrypoint is None or "alignd" not in entrypoint.value[0]:
        problems.append("final stage ENTRYPOINT is not alignd")
    # The environment outranks the config file, so an ALIGND_<KEY> baked into the image would
    # silently override the same key in a mounted config file.
    for command in final:
        if command.cmd.upper() != "ENV":
            continue
        for key in list(command.value)[0::2]:
            if key.startswith("ALIGND_") and key not in EXTRA_ENVIRONMENT:
                problems.append(f"line {command.start_line}: ENV {key} would override every config file; "
                                "put the default in the image's config file")
    # Config files copied into the image: known keys, and models_dir where the models are copied.
    destinations = [os.path.normpath(c.value[-1]) for c in final if c.cmd.upper() in ("COPY", "ADD")]
    for command in final:
        if command.cmd.upper() != "COPY" or any(f.startswith("--from") for f in command.flags):
            continue
        for source in command.value[:-1]:
            if source.endswith(".json") and (root / source).is_file():
                problems += [f"{source}: {p}" for p in config_file_problems(root / source, config_keys, destinations)]
    return problems


def image_destinations(dockerfile: Path) -> list[str]:
    """Paths the Dockerfile's final stage copies files to."""
    import dockerfile as parser

    commands = parser.parse_file(str(dockerfile))
    last_from = max(i for i, c in enumerate(commands) if c.cmd.upper() == "FROM")
    return [os.path.normpath(c.value[-1]) for c in commands[last_from:] if c.cmd.upper() in ("COPY", "ADD")]


def config_file_problems(path: Path, config_keys: set[str], model_destinations: list[str]) -> list[str]:
    """An alignd JSON config: scalar values of known keys; models_dir is where the image has models."""
    config = json.loads(path.read_text())
    if not isinstance(config, dict):
        return ["not a JSON object"]
    problems = [f"unknown configuration key '{key}' (alignd would exit 78)"
                for key in sorted(set(config) - config_keys - PLANNED_CONFIG_KEYS)]
    problems += [f"'{key}' must be a string, number or boolean"
                 for key, value in config.items() if isinstance(value, (dict, list))]
    if "models_dir" in config and os.path.normpath(config["models_dir"]) not in model_destinations:
        problems.append(f"models_dir {config['models_dir']} is not where the Dockerfile copies files "
                        f"({', '.join(model_destinations)})")
    return problems


# ---------------------------------------------------------------------------------------------


def main() -> int:
    root_default = Path(__file__).resolve().parent.parent
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--root", type=Path, default=root_default, help="repository root")
    arguments.add_argument("--deploy-dir", type=Path, help="Deploy folder (default ROOT/Deploy)")
    arguments.add_argument("--dockerfile", type=Path, help="Dockerfile (default ROOT/Dockerfile)")
    options = arguments.parse_args()
    root = options.root.resolve()
    deploy = (options.deploy_dir or root / "Deploy").resolve()
    dockerfile = (options.dockerfile or root / "Dockerfile").resolve()
    report = Report()

    config_keys = known_config_keys(root)
    metrics = emitted_metrics(root)

    raw: list[tuple[str, dict]] = []

    def load_raw() -> Iterable[str]:
        for path in sorted((deploy / "k8s").glob("*.y*ml")):
            raw.extend((path.name, doc) for doc in load_yaml_documents(path))
        if not raw:
            yield f"no manifests under {deploy / 'k8s'}"

    report.run("k8s: manifests parse", load_raw)
    report.run("k8s: kustomization lists every manifest and file", lambda: kustomization_problems(deploy))
    rendered: list[dict] = []
    if shutil.which("kubectl"):
        def render() -> Iterable[str]:
            rendered.extend(render_kustomization(deploy))
            return []
        report.run("k8s: kubectl kustomize renders", render)
    else:
        report.note("kubectl not found: the kustomize rendering (generated ConfigMaps and Secrets) was not checked")
    for version in K8S_VERSIONS:
        report.run(f"k8s: manifests match Kubernetes {version} schemas (strict)", lambda v=version: schema_problems(raw, v))
        if rendered:
            report.run(f"k8s: rendered kustomization matches Kubernetes {version} schemas (strict)",
                       lambda v=version: schema_problems([("kustomize", d) for d in rendered], v))
    documents = rendered or [doc for _, doc in raw]
    inventory = Inventory(deploy, documents, bool(rendered))
    report.run("k8s: pods: selectors, Pod Security, resources, probes, references", lambda: workload_problems(inventory))
    report.run("k8s: services, autoscaler and disruption budgets match pods and ports", lambda: service_problems(inventory))
    report.run("k8s: alignd: config keys, ports, gRPC probes, drain, mounted files",
               lambda: alignd_problems(inventory, config_keys))

    envoy_file = deploy / "envoy/envoy.yaml"
    report.run("envoy: envoy.yaml is a valid v3 Bootstrap (strict, no deprecated fields)", lambda: envoy_problems(envoy_file))
    report.run("envoy: routes, clusters and ports agree with the manifests",
               lambda: envoy_cross_problems(envoy_file, deploy, documents))

    used: set[str] = set()

    def grafana() -> Iterable[str]:
        problems, names = grafana_problems(deploy / "grafana/alignd-dashboard.json", metrics | PLANNED_METRICS)
        used.update(names)
        return problems

    report.run("grafana: dashboard structure and metric names", grafana)
    report.run("docker: Dockerfile sources, stages, user, health check", lambda: dockerfile_problems(root, dockerfile, config_keys))

    def deploy_configs() -> Iterable[str]:
        destinations = image_destinations(dockerfile)
        for path in sorted((deploy / "config").glob("*.json")):
            yield from (f"{path.name}: {p}" for p in config_file_problems(path, config_keys, destinations))

    report.run("config: Deploy/config files use known keys and the image's model folder", deploy_configs)

    planned_only = sorted(PLANNED_METRICS - metrics)
    if planned_only:
        report.note("dashboard metrics not yet emitted by Sources/ (PLANNED_METRICS): " + ", ".join(planned_only))
    unused = sorted(metrics - used)
    if unused:
        report.note("metrics emitted by Sources/ but not on the dashboard: " + ", ".join(unused))
    if PLANNED_CONFIG_KEYS - config_keys:
        report.note("configuration keys not yet in Configuration.swift (PLANNED_CONFIG_KEYS): "
                    + ", ".join(sorted(PLANNED_CONFIG_KEYS - config_keys)))
    for note in report.notes:
        print(f"note: {note}")
    print(f"validate-deploy: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
