#![forbid(unsafe_code)]
//! keyledger: an event-sourced control plane for bring-your-own-key LLM credentials.
//! See docs/architecture.md for how a command travels from a handler to sled and back.

pub mod config;
pub mod crypto;
pub mod domain;
pub mod es;
pub mod http;
pub mod metrics;
pub mod outbound;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
