//! The OpenAI frontend process (`tandem frontend`, and the front of `tandem serve`): the HTTP
//! API, each request's dispatch through the router to workers with failover, the chat
//! template, the reasoning and tool-call parsers, response bodies, and its metrics.

pub mod chat;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod openai;
pub mod reasoning;
pub mod response;
pub mod tool_calls;
