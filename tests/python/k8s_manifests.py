"""Validates deploy/ against the Kubernetes API schemas and renders its kustomizations.

Usage: k8s_manifests.py DEPLOY_DIR K8S_VERSION...

Every YAML document under DEPLOY_DIR is parsed; every Kubernetes object (all but the
Kustomization files) is validated strictly (unknown fields are errors) against the OpenAPI
schemas that the kubernetes-validate package bundles, for each K8S_VERSION. Each directory
with a kustomization.yaml that is not only a base is rendered the way `kubectl kustomize` does
for the fields these kustomizations use (resources, namespace, labels without selectors,
images by name); any
other field is refused, so the rendering here cannot silently differ from kustomize's.
Prints JSON: {"files": {path: [objects]}, "overlays": {name: [rendered objects]}}.
"""

import copy
import json
import os
import sys

import kubernetes_validate
import yaml

# Kinds that live outside namespaces (kustomize's namespace transformer leaves them alone).
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "CustomResourceDefinition"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images"}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    """The objects `kubectl kustomize directory` prints (for the supported fields)."""
    k = load(os.path.join(directory, "kustomization.yaml"))[0]
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise SystemExit(f"{directory}: kustomization fields not rendered here: {sorted(unknown)}")
    objects = []
    for r in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, r))
        if os.path.isdir(path):
            objects.extend(render(path))
        elif os.path.isfile(path):
            objects.extend(copy.deepcopy(load(path)))
        else:
            raise SystemExit(f"{directory}: resource {r} does not exist")
    for entry in k.get("labels", []):
        if set(entry) - {"pairs"}:
            raise SystemExit(f"{directory}: only labels[].pairs is rendered here: {entry}")
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for img in k.get("images", []):
        if set(img) - {"name", "newName", "newTag"}:
            raise SystemExit(f"{directory}: only images[].name/newName/newTag is rendered here")
        for o in objects:
            spec = o.get("spec", {}).get("template", {}).get("spec") or o.get("spec", {})
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = img.get("newName", name) + ":" + img.get("newTag", tag)
    ns = k.get("namespace")
    if ns:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = ns
    seen = set()
    for o in objects:
        key = (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        if key in seen:
            raise SystemExit(f"{directory}: {key} is defined twice")
        seen.add(key)
    return objects


def validate(obj, where, versions):
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
