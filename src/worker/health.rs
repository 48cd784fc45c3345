//! The standard gRPC health service (grpc.health.v1) of a worker, which Kubernetes' `grpc`
//! probes and grpc_health_probe call. It says SERVING while the engine thread runs and
//! NOT_SERVING for good once it has stopped (a worker without an engine should be restarted).

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::engine::EngineHandle;

/// How often the engine thread is checked.
pub const ENGINE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The health service, and a task that keeps its overall ("") status in line with `engine`;
/// the reporter sets NOT_SERVING when the worker drains. Call within a tokio runtime.
pub fn health_service(engine: Arc<EngineHandle>) -> (HealthServer<impl Health>, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(watch_engine(engine, reporter.clone()));
    (service, reporter)
}

async fn watch_engine(engine: Arc<EngineHandle>, reporter: HealthReporter) {
    loop {
        if !engine.is_running() {
            tracing::error!("the engine thread has stopped: reporting NOT_SERVING");
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            return;
        }
        tokio::time::sleep(ENGINE_CHECK_INTERVAL).await;
    }
}
