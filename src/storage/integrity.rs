//! Whether the store may be trusted: the check on start (the same as `keyledger verify`: the hash
//! chain, the projections against a replay, every live credential's data key), and the damage
//! found by any read while serving. The store is ready only once the check has passed, and stops
//! being ready for good (until a restart checks it again) when damage is found. Every finding is
//! logged with what it names (an event's position, a row, a key file) and counted in
//! `keyledger_corrupt_records_total`.
//!
//! On a large log the check runs in the background (`Store::check_on_start`): the log up to the
//! position it had on open is walked and replayed on a thread of its own while the server serves
//! (those events never change), and only the rest, the events appended meanwhile, the
//! comparison with the live projections and the data keys, runs on the writer between groups.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::replay::Replay;
use super::verify::{self, VerifyReport};
use super::{Store, StoreError};
use crate::metrics;

/// Whether the server may report itself ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The store passed its check on start and no damage has been found since.
    Ready,
    /// The check on start is still running.
    Checking,
    /// The check on start failed, or a read found a damaged record.
    Damaged,
    /// The writer has stopped: the store takes no more appends.
    Closed,
}

const CHECKING: u8 = 0;
const SOUND: u8 = 1;
const DAMAGED: u8 = 2;

/// How many distinct findings are remembered to log only the first of each at ERROR (later ones
/// at DEBUG, so a client retrying a damaged page cannot flood the error log); each still counts.
const REMEMBERED: usize = 1024;

#[derive(Default)]
pub struct Integrity {
    state: AtomicU8,
    logged: Mutex<HashSet<String>>,
}

impl Integrity {
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// The check passed: ready, unless damage was found meanwhile.
    fn passed(&self) {
        let _ = self
            .state
            .compare_exchange(CHECKING, SOUND, Ordering::AcqRel, Ordering::Acquire);
    }

    fn damaged(&self) {
        self.state.store(DAMAGED, Ordering::Release);
    }

    /// Records one damaged record: readiness lost, logged, counted.
    pub fn found(&self, position: Option<u64>, finding: &str) {
        self.damaged();
        metrics::count(|m| m.corrupt_records.inc());
        let first = self
            .logged
            .lock()
            .map(|mut logged| logged.len() < REMEMBERED && logged.insert(finding.to_owned()))
            .unwrap_or(true);
        match (first, position) {
            (true, Some(position)) => {
                tracing::error!(position, finding, "the store holds a damaged record")
            }
            (true, None) => tracing::error!(finding, "the store holds a damaged record"),
            (false, _) => tracing::debug!(?position, finding, "the damaged record again"),
        }
    }
}

impl Store {
    /// Whether the server may say it is ready.
    pub fn readiness(&self) -> Readiness {
        if !self.is_running() {
            return Readiness::Closed;
        }
        match self.inner.integrity.state() {
            SOUND => Readiness::Ready,
            CHECKING => Readiness::Checking,
            _ => Readiness::Damaged,
        }
    }

    /// Passes `error` on, first recording it as damage found while serving if it is damage.
    /// `position` is the event being read, when there is one.
    pub(super) fn noticed(&self, error: StoreError, position: Option<u64>) -> StoreError {
        if error.is_damage() {
            let position = match &error {
                StoreError::Chain { position, .. } | StoreError::Unreadable { position, .. } => {
                    Some(*position)
                }
                _ => position,
            };
            self.inner.integrity.found(position, &error.to_string());
        }
        error
    }

    /// Checks the store as `keyledger verify` does and settles readiness on the outcome: at
    /// once when the log holds at most `inline_events` events, else in the background while the
    /// server starts (not ready until it passes). Answers the background check's thread, which
    /// nothing needs to wait for.
    pub fn check_on_start(&self, inline_events: u64) -> Option<std::thread::JoinHandle<()>> {
        let tail = *self.inner.positions.borrow();
        if tail <= inline_events {
            let outcome = self.verify();
            self.settle(outcome);
            return None;
        }
        tracing::info!(
            events = tail,
            "checking the store in the background; not ready until the check passes"
        );
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("keyledger-check".into())
            .spawn(move || {
                let outcome = store.check_in_background(tail);
                store.settle(outcome);
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(error) => {
                self.settle(Err(error.into()));
                None
            }
        }
    }

    /// The log up to `tail` replayed here, the rest of `verify` on the writer.
    fn check_in_background(&self, tail: u64) -> Result<VerifyReport, StoreError> {
        let chain = self.inner.chain.clone();
        let mut replay = Replay::default();
        verify::guarded(|| replay.extend(&self.inner.db, &chain, Some(tail)))?;
        let keys = self.inner.keyring.clone();
        let master = self.inner.master.clone();
        self.exclusive(move |tree| verify::report(tree, &chain, replay, &keys, &master))?
    }

    fn settle(&self, outcome: Result<VerifyReport, StoreError>) {
        let integrity = &self.inner.integrity;
        match outcome {
            Ok(report) if report.is_sound() => {
                tracing::info!(
                    events = report.events,
                    projection_rows = report.projection_rows,
                    live_credentials = report.data_keys,
                    "the store passed its check"
                );
                integrity.passed();
            }
            Ok(report) => {
                for mismatch in &report.mismatches {
                    integrity.found(None, &format!("projection row {mismatch}"));
                }
                for problem in &report.key_problems {
                    integrity.found(None, problem);
                }
                tracing::error!(
                    projection_rows = report.mismatches.len(),
                    data_keys = report.key_problems.len(),
                    "the store failed its check: not ready (`keyledger verify` says the same)"
                );
            }
            Err(error) if error.is_damage() => {
                self.noticed(error, None);
                tracing::error!("the store failed its check: not ready");
            }
            Err(error) => {
                integrity.damaged();
                tracing::error!(%error, "the store could not be checked: not ready");
            }
        }
    }
}
