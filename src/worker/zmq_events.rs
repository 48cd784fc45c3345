//! KV events over ZMQ in vLLM's wire format, for routers that consume vLLM's events (Dynamo's):
//! multipart [topic, 8-byte big-endian sequence, msgpack [ts, [event...], data_parallel_rank]],
//! events as tagged arrays: ["BlockStored", hashes, parent, token_ids, block_size, lora_id,
//! medium, lora_name], ["BlockRemoved", hashes, medium], ["AllBlocksCleared"].

use std::sync::Arc;

use bytes::Bytes;
use rmpv::Value;
use tokio::sync::broadcast::error::RecvError;
use zeromq::{Socket, SocketSend, ZmqMessage};

use super::kv_hub::{EventBatch, KvEventHub};
use crate::error::{Error, Result};
use crate::kv::KvEvent;

fn hashes(h: &[u64]) -> Value {
    Value::Array(h.iter().map(|&x| Value::from(x)).collect())
}

/// The msgpack payload of one batch.
pub fn encode_batch(b: &EventBatch) -> Vec<u8> {
    let events = b
        .events
        .iter()
        .map(|e| match e {
            KvEvent::BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
                medium,
            } => Value::Array(vec![
                Value::from("BlockStored"),
                hashes(block_hashes),
                parent_block_hash.map_or(Value::Nil, Value::from),
                Value::Array(token_ids.iter().map(|&t| Value::from(t)).collect()),
                Value::from(*block_size as u64),
                Value::Nil,
                Value::from(medium.as_str()),
                Value::Nil,
            ]),
            KvEvent::BlockRemoved {
                block_hashes,
                medium,
            } => Value::Array(vec![
                Value::from("BlockRemoved"),
                hashes(block_hashes),
                Value::from(medium.as_str()),
            ]),
            KvEvent::AllBlocksCleared => Value::Array(vec![Value::from("AllBlocksCleared")]),
        })
        .collect();
    let payload = Value::Array(vec![
        Value::from(b.timestamp),
        Value::Array(events),
        Value::from(0),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &payload).expect("writing to a Vec cannot fail");
    out
}

/// A bound ZMQ PUB socket for KV events.
pub struct ZmqPublisher {
    socket: zeromq::PubSocket,
}

impl ZmqPublisher {
    /// Binds `endpoint` (`tcp://*:PORT` or `tcp://HOST:PORT`).
    pub async fn bind(endpoint: &str) -> Result<Self> {
        let endpoint = endpoint.replacen("tcp://*:", "tcp://0.0.0.0:", 1);
        let mut socket = zeromq::PubSocket::new();
        socket.bind(&endpoint).await.map_err(|e| {
            Error::EngineConfig(format!(
                "cannot bind the KV events endpoint {endpoint}: {e}"
            ))
        })?;
        Ok(ZmqPublisher { socket })
    }

    /// Publishes every live batch of `hub` under `topic`, for as long as the hub lives.
    pub async fn run(mut self, hub: Arc<KvEventHub>, topic: String) {
        // vLLM's publisher starts with live events; it sends no snapshot.
        let mut live = hub.subscribe(None).live;
        loop {
            match live.recv().await {
                Ok(b) => {
                    let mut msg = ZmqMessage::from(Bytes::from(topic.clone().into_bytes()));
                    msg.push_back(Bytes::copy_from_slice(&b.sequence.to_be_bytes()));
                    msg.push_back(Bytes::from(encode_batch(&b)));
                    if let Err(e) = self.socket.send(msg).await {
                        tracing::warn!(error = %e, "KV event publish failed");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(batches = n, "ZMQ KV event publisher fell behind")
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
