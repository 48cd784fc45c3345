//! The generated gRPC types of proto/worker.proto, and their conversions to engine types.

#![allow(missing_docs, clippy::all)]
tonic::include_proto!("tandem.worker.v1");
