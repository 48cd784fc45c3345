//! TLS on the workers' gRPC: a prefill and a decode worker that require client certificates
//! from a CA, a frontend that presents one, and a disaggregated request whose KV pull between
//! the workers is TLS too. A frontend without a certificate, or without TLS, never gets in.

mod common;

use std::path::PathBuf;

use common::http::{completion, wait_health};
use common::pki::pki;
use common::procs::spawn;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_serve_and_pull_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, [(wc, wk), (fc, fk)]) = pki(dir.path());
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let tls = [
        "--tls-cert".to_string(),
        s(&wc),
        "--tls-key".into(),
        s(&wk),
        "--tls-ca".into(),
        s(&ca),
        "--tls-domain".into(),
        "localhost".into(),
        "--tls-require-client-cert".into(),
    ];
    let worker = |role: &str| {
        let mut args: Vec<String> = [
            "worker",
            "--role",
            role,
            "--max-model-len",
            "512",
            "--kv-cache-gib",
            "0.05",
            "--block-size",
            "16",
        ]
        .map(String::from)
        .to_vec();
        args.extend(tls.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn(&refs)
    };
    let (p, d) = (worker("prefill"), worker("decode"));
    let front = |extra: &[String]| {
        let mut args: Vec<String> = [
            "frontend",
            "--port",
            "0",
            "--prefill-workers",
            &p.addr,
            "--decode-workers",
            &d.addr,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let fe = spawn(&refs);
        let base = format!("http://{}", fe.addr);
        (fe, base)
    };
    let (_fe, base) = front(&[
        "--worker-tls-ca".into(),
        s(&ca),
        "--worker-tls-cert".into(),
        s(&fc),
        "--worker-tls-key".into(),
        s(&fk),
        "--worker-tls-domain".into(),
        "localhost".into(),
    ]);
    wait_health(&base, 200).await;
    let body = json!({"model": "tandem-demo", "prompt": (0..40).collect::<Vec<u32>>(),
        "max_tokens": 6, "temperature": 0, "ignore_eos": true});
    let v = completion(&base, &body).await;
    assert_eq!(v["usage"]["completion_tokens"], 6, "{v}");
    // The decode worker pulled the prompt's KV from the prefill worker, over TLS.
    let load = |addr: &str| {
        let addr = addr.to_string();
        let (ca, fc, fk) = (ca.clone(), fc.clone(), fk.clone());
        async move {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(ca).unwrap(),
                ))
                .identity(tonic::transport::Identity::from_pem(
                    std::fs::read(fc).unwrap(),
                    std::fs::read(fk).unwrap(),
                ))
                .domain_name("localhost");
            let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            tandem::wire::proto::worker_client::WorkerClient::new(ch)
                .load(tandem::wire::proto::LoadRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(load(&d.addr).await.kv_pulls, 1);
    // Without a client certificate, or without TLS, the workers never answer.
    for extra in [
        vec![
            "--worker-tls-ca".to_string(),
            s(&ca),
            "--worker-tls-domain".into(),
            "localhost".into(),
        ],
        vec![],
    ] {
        let (_fe, base) = front(&extra);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let h: serde_json::Value = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            h["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["healthy"] == false),
            "{extra:?}: {h}"
        );
    }
}
