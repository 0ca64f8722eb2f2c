"""Render the zeroboot chart offline (Helm v4's SDK) for each values
combination, lint it, validate each manifest against the Kubernetes
schemas (strict: unknown fields fail), and check what the fleet depends
on: probes, the KVM device, the drain grace, the PDB, the headless
Service that keeps draining nodes resolvable, no RBAC. Bad values must be
refused by values.schema.json."""

from __future__ import annotations

import sys

import helm_python as helm
import kubernetes_validate
import yaml

K8S = "1.37.0"

COMBOS = {
    "defaults": {},
    "hostPath fallback, keys, monitor": {
        "node": {"kvm": {"mode": "hostPath"}, "drainGraceSeconds": 600},
        "apiKeys": {"keys": ["k1", "k2"]},
        "serviceMonitor": {"enabled": True},
        "gateway": {"replicas": 3, "service": {"type": "LoadBalancer"}},
    },
    "generic-device-plugin, existing secret": {
        "node": {"kvm": {"mode": "devicePlugin", "resourceName": "squat.ai/kvm"}},
        "apiKeys": {"existingSecret": "my-keys"},
        "image": {"repository": "registry.example/zeroboot", "tag": "v1"},
    },
}

BAD = {
    "one gateway": {"gateway": {"replicas": 1}},
    "unknown kvm mode": {"node": {"kvm": {"mode": "magic"}}},
    "unknown key": {"nod": {}},
    "unknown language": {"node": {"languages": ["cobol"]}},
}


def merged(chart, values):
    return chart.merge_values(values)


def docs(rendered):
    out = []
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                out.append(d)
    return out


def by_kind(ds, kind):
    return [d for d in ds if d["kind"] == kind]


def check(name, chart, values):
    vals = merged(chart, values)
    chart.validate_schema(vals)
    report = helm.lint(chart_dir, values, strict=True, kube_version="v1.30.0")
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not errors, (name, errors)
    ds = docs(chart.render(values, name="zb", namespace="sandboxes", is_install=True))
    for d in ds:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: not in the core schemas (checked below)
        kubernetes_validate.validate(d, K8S, strict=True)

    # No RBAC: discovery is DNS, nothing reads the API.
    assert not [d for d in ds if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    (sa,) = by_kind(ds, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False

    (ds_node,) = by_kind(ds, "DaemonSet")
    pod = ds_node["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == vals["node"]["nodeSelector"]
    assert pod["terminationGracePeriodSeconds"] == vals["node"]["drainGraceSeconds"] + 30
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert "--node-key=auto" in c["args"]
    assert "--drain-grace=%d" % vals["node"]["drainGraceSeconds"] in c["args"]
    assert c["resources"]["requests"]["cpu"]
    kvm = vals["node"]["kvm"]
    if kvm["mode"] == "devicePlugin":
        assert c["resources"]["limits"][kvm["resourceName"]] == "1"
        assert not c["securityContext"].get("privileged")
        assert not any(v.get("hostPath", {}).get("path") == "/dev/kvm" for v in pod["volumes"])
    else:
        assert c["securityContext"]["privileged"] is True
        assert any(v.get("hostPath", {}).get("path") == "/dev/kvm" for v in pod["volumes"])
    keys_on = bool(vals["apiKeys"].get("keys") or vals["apiKeys"].get("existingSecret"))
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert ("ZEROBOOT_API_KEYS_FILE" in env) == keys_on
    secrets = by_kind(ds, "Secret")
    assert len(secrets) == (1 if vals["apiKeys"].get("keys") else 0)
    if keys_on:
        (vol,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
        want = vals["apiKeys"].get("existingSecret") or secrets[0]["metadata"]["name"]
        assert vol["secret"]["secretName"] == want

    services = {s["metadata"]["name"]: s for s in by_kind(ds, "Service")}
    headless = services["zb-zeroboot-nodes"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True

    (gw,) = by_kind(ds, "Deployment")
    assert gw["spec"]["replicas"] == vals["gateway"]["replicas"] >= 2
    (g,) = gw["spec"]["template"]["spec"]["containers"]
    assert "--nodes-dns=zb-zeroboot-nodes.sandboxes.svc.cluster.local:8080" in g["args"], g["args"]
    assert g["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert g["securityContext"]["readOnlyRootFilesystem"] is True
    (pdb,) = by_kind(ds, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == vals["gateway"]["pdb"]["minAvailable"]
    assert pdb["spec"]["selector"]["matchLabels"] == gw["spec"]["selector"]["matchLabels"]
    assert services["zb-zeroboot"]["spec"]["type"] == vals["gateway"]["service"]["type"]

    mons = [d for d in ds if d["kind"] == "ServiceMonitor"]
    assert len(mons) == (1 if vals["serviceMonitor"]["enabled"] else 0)
    for m in mons:
        assert m["spec"]["endpoints"][0]["path"] == "/v1/metrics"
        assert m["spec"]["endpoints"][0]["port"] == "http"
    print("ok  %-40s %d manifests" % (name, len(ds)))


def refused(name, chart, values):
    try:
        chart.validate_schema(merged(chart, values))
    except helm.HelmError as e:
        print("ok  refused %-32s %s" % (name, " ".join(str(e).split())[:100]))
        return
    raise AssertionError("values.schema.json accepted bad values: %s" % name)


chart_dir = sys.argv[1]
chart = helm.Chart.load(chart_dir)
for n, v in COMBOS.items():
    check(n, chart, v)
for n, v in BAD.items():
    refused(n, chart, v)
print("chart check passed (Helm SDK %s, Kubernetes schemas %s)" % (helm.helm_sdk_version(), K8S))
