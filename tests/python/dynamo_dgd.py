"""Checks a DynamoGraphDeployment against Dynamo's own definitions of one, not against how
deploy/ writes it:

- the CRD's schema above the pod templates (names, types, enums, patterns, bounds, unknown
  fields refused), transcribed from Dynamo's repository with its source in its $comment:
  tests/fixtures/dynamo/dynamographdeployment-v1beta1.schema.json, and the CRD's create-time
  CEL rules on those fields;

and Dynamo 1.6.1's, read from the installed ai-dynamo wheel (the version the tests pin):

- the shape: `dynamo/profiler/utils/config.py` declares the v1beta1 resource Dynamo's
  profiler generates and reads (Config: apiVersion, kind, metadata, spec; Spec: components;
  Component: name, type, replicas, podTemplate, multinode, scalingAdapter,
  runtimeVersionOverride) and that a component's `main` container is Dynamo's;
- the component types: those of the DynamoGraphDeployments the wheel ships
  (`dynamo/profiler/templates/dgd/*/*.yaml`);
- each pod template: the Kubernetes PodTemplateSpec schema (strict), which is what the CRD
  embeds.

The file is parsed (ast), not imported: importing Dynamo's profiler pulls in its planner's
numeric stack, which the bridge does not need.

The CRD file itself (deploy/operator/config/crd/bases in Dynamo's repository, 3 MB, most
of it the embedded pod template schema) is in no package the tests can install.
"""

import ast
import functools
import glob
import importlib.util
import json
import os

import jsonschema
import kubernetes_validate
import yaml

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "dynamo",
                      "dynamographdeployment-v1beta1.schema.json")


def _dynamo_dir():
    spec = importlib.util.find_spec("dynamo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("a DynamoGraphDeployment needs NVIDIA Dynamo installed to be checked")
    return list(spec.submodule_search_locations)[0]


def _classes(path):
    """{class name: {field (its alias where it has one): default or None}} of a module."""
    tree = ast.parse(open(path).read())
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = {}
        for st in node.body:
            if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                name, default = st.target.id, None
                v = st.value
                if isinstance(v, ast.Call) and getattr(v.func, "id", "") == "Field":
                    for kw in v.keywords:
                        if kw.arg == "alias":
                            name = ast.literal_eval(kw.value)
                        if kw.arg == "default":
                            default = ast.literal_eval(kw.value)
                elif isinstance(v, ast.Constant):
                    default = v.value
                fields[name] = default
        out[node.name] = fields
    return out


@functools.cache
def definition():
    """Dynamo 1.6.1's classes and component types, read once per run."""
    d = _dynamo_dir()
    classes = _classes(os.path.join(d, "profiler", "utils", "config.py"))
    types = set()
    for t in glob.glob(os.path.join(d, "profiler", "templates", "dgd", "*", "*.yaml")):
        for doc in yaml.safe_load_all(open(t)):
            for c in (doc or {}).get("spec", {}).get("components", []):
                types.add(c["type"])
    return classes, types


@functools.cache
def _crd_validator():
    with open(SCHEMA) as f:
        return jsonschema.Draft7Validator(json.load(f))


def check(obj, where, k8s_versions):
    classes, types = definition()
    config, spec, component = classes["Config"], classes["Spec"], classes["Component"]

    def fail(msg):
        raise SystemExit(f"{where}: DynamoGraphDeployment {obj['metadata'].get('name')}: {msg}")

    err = jsonschema.exceptions.best_match(_crd_validator().iter_errors(obj))
    if err is not None:
        path = "/".join(str(p) for p in err.absolute_path)
        fail(f"fails the CRD's schema at {path}: {err.message}")
    lowered = [c["name"].lower() for c in obj["spec"]["components"]]
    if len(set(lowered)) != len(lowered):
        fail("component names must be unique case-insensitively (the CRD's rule)")
    for c in obj["spec"]["components"]:
        for field in ("eppConfig", "lpx"):
            if field in c and c.get("type") != field.removesuffix("Config"):
                fail(f"component {c['name']}: {field} only with type "
                     f"{field.removesuffix('Config')} (the CRD's rule)")
    if obj["apiVersion"] != config["apiVersion"] or obj["kind"] != config["kind"]:
        fail(f"{obj['apiVersion']} {obj['kind']}, but Dynamo's is "
             f"{config['apiVersion']} {config['kind']}")
    unknown = set(obj) - set(config)
    if unknown:
        fail(f"unknown top-level fields {sorted(unknown)}")
    unknown = set(obj["spec"]) - set(spec)
    if unknown:
        fail(f"unknown spec fields {sorted(unknown)}")
    names = set()
    for c in obj["spec"]["components"]:
        unknown = set(c) - set(component)
        if unknown:
            fail(f"component {c.get('name')}: unknown fields {sorted(unknown)}")
        if not isinstance(c.get("name"), str) or c["name"] in names:
            fail(f"component names must be distinct strings: {c.get('name')!r}")
        names.add(c["name"])
        if c.get("type") not in types:
            fail(f"component {c['name']}: type {c.get('type')!r} is none of {sorted(types)}")
        r = c.get("replicas", 1)
        if not isinstance(r, int) or r < 0:
            fail(f"component {c['name']}: replicas {r!r}")
        template = {"apiVersion": "v1", "kind": "PodTemplate",
                    "metadata": {"name": c["name"].lower()}, "template": c["podTemplate"]}
        for v in k8s_versions:
            try:
                kubernetes_validate.validate(template, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                fail(f"component {c['name']}: its pod template fails the Kubernetes {v} "
                     f"PodTemplate schema at {path}: {e.message}")
        mains = [x for x in c["podTemplate"]["spec"]["containers"] if x["name"] == "main"]
        if len(mains) != 1:
            fail(f"component {c['name']}: needs one container named main (Dynamo's)")
