//! The operator's own routes under `/v1/admin/`: `GET /v1/admin/export`, the whole store as
//! NDJSON at one durable position, streamed while the server goes on serving (docs/operations.md,
//! ADR 0030). Only the admin token may call them. Not in the OpenAPI document, which describes
//! the API of accounts and their keys.

use std::io::Write;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use tokio::sync::mpsc;

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;

/// Bytes per streamed chunk.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight between the exporting thread and the connection: a slow client holds the
/// export back rather than memory filling up.
const IN_FLIGHT: usize = 8;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/v1/admin/export").get(export));
}

/// The export's bytes, handed to the connection a chunk at a time. A client that went away
/// ends the export with an error at its next chunk.
struct Chunks {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The store as `keyledger export` writes it. The snapshot is taken between two groups of the
/// writer; the events up to it are read beside the running writer on a thread of its own. A
/// failure part-way ends the response without its closing line, which `keyledger import`
/// refuses as truncated.
pub async fn export(state: web::Data<AppState>, _: Operator) -> Result<HttpResponse, ApiError> {
    let store = state.accounts.store().clone();
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let mut out = Chunks {
        tx: tx.clone(),
        buffer: Vec::with_capacity(CHUNK),
    };
    std::thread::Builder::new()
        .name("keyledger-export".into())
        .spawn(move || match store.export(&mut out) {
            Ok(report) => tracing::info!(
                events = report.positions,
                rows = report.rows,
                keys = report.keys,
                "exported the store"
            ),
            Err(error) => {
                tracing::error!(%error, "the export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other("the export failed")));
            }
        })
        .map_err(|error| {
            tracing::error!(%error, "the export could not start");
            ApiError::internal()
        })?;
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}
