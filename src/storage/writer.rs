//! The single writer: one OS thread owns every append. It takes all pending appends at once,
//! checks each stream's expected version against the heads it can see (the tree plus the
//! group's own pending rows), stages events and projection rows, writes the whole group as one
//! atomic batch, makes it durable once (sled flush + fdatasync), and only then acknowledges
//! every append of the group (group commit, docs/design.md §11). No sled transaction is needed:
//! nothing else writes the log or the projections.
//!
//! Everything here is on the one thread all appends wait for, so it does per event only what
//! depends on the log's order: payloads arrive encoded and decoded (`append.rs`), the log value
//! is written in place around its hash, and the aggregates and heads of recent groups stay
//! decoded (`kv::AggregateCache`).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::Receiver;
use tokio::sync::oneshot;

use super::append::{PreparedAppend, PreparedEvent};
use super::head::HeadFile;
use super::keyring::Keyring;
use super::kv::{AggregateCache, Kv, Overlay};
use super::projection::{ProjectionError, project, project_decoded};
use super::webhooks::NewDeliveries;
use super::{AppendError, StoreError, keys, verify};
use crate::crypto::KeyedHasher;
use crate::es::{Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};
use crate::metrics;

/// Most appends committed in one group; bounds the batch size and the latency of the last one.
const MAX_GROUP: usize = 1024;

/// How often the writer measures the store's size for `/metrics`.
const SIZE_EVERY: Duration = Duration::from_secs(5);

/// Room for a log value beside its payload: the hash and the envelope's other fields.
const LOG_VALUE_HEAD: usize = 32 + 320;

pub type AppendResult = Result<Vec<Envelope>, AppendError>;
/// Plain rows to write, and where to acknowledge them.
pub type RowsJob = (
    Vec<(Vec<u8>, Vec<u8>)>,
    oneshot::Sender<Result<(), StoreError>>,
);

/// A job as the writer receives it: with when it was handed over.
pub type Handed = (Instant, Job);

pub enum Job {
    Append(PreparedAppend, oneshot::Sender<AppendResult>),
    /// Rows that are neither events nor projections (the idempotency record of an answer that
    /// appended nothing), written in the next group's batch and acknowledged after the same
    /// flush and fdatasync as its appends. A record that answers for events travels with them
    /// instead (`AppendRequest::idempotency`).
    Rows(RowsJob),
    /// Runs with the log quiet: nothing is appended while it looks.
    Exclusive(Box<dyn FnOnce(&sled::Tree) + Send>),
}

pub struct Writer {
    pub tree: sled::Tree,
    pub db: sled::Db,
    pub chain: KeyedHasher,
    /// The store's `db` file, fdatasync'd after each group so acknowledged writes survive power
    /// loss, not only a process crash. `None` when syncing is turned off.
    pub sync_file: Option<File>,
    /// Where the durable head is recorded after each synced group (`head.rs`); `None` when
    /// syncing is turned off.
    pub head: Option<HeadFile>,
    pub position: u64,
    pub last_hash: [u8; 32],
    /// Per-record data keys, outside sled.
    pub keyring: Arc<Keyring>,
    /// Tells tailing readers the last durable position after every group.
    pub durable: tokio::sync::watch::Sender<u64>,
    /// When the oldest job taken and not yet answered was handed over (`/readyz`).
    pub pending: Arc<Pending>,
    /// Where the outbox rows of each durable group go for the dispatcher (`webhooks.rs`).
    pub new_deliveries: Arc<NewDeliveries>,
}

/// When the oldest job the writer has taken and not yet answered was handed over, for
/// `/readyz`'s `writer_stuck` and `keyledger_writer_oldest_pending_seconds`. Jobs are taken in
/// the order they were handed over, so that is the first job of the group being committed (or
/// the exclusive work running); between groups, nothing. Only the writer sets it, so a stuck
/// writer leaves it where it was, growing older: what a reader wants to see.
pub struct Pending {
    base: Instant,
    /// Microseconds from `base` to the hand-over, plus one; 0 when nothing is pending.
    since: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl Pending {
    fn publish(&self, handed_over: Instant) {
        let micros = handed_over.saturating_duration_since(self.base).as_micros();
        let micros = u64::try_from(micros).unwrap_or(u64::MAX - 1);
        self.since.store(micros + 1, Ordering::Release);
    }

    fn clear(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// How long the oldest pending job has waited; zero when none is.
    pub fn age(&self) -> Duration {
        match self.since.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => self
                .base
                .elapsed()
                .saturating_sub(Duration::from_micros(since - 1)),
        }
    }
}

impl Writer {
    pub fn run(mut self, jobs: Receiver<Handed>) {
        let mut aggregates = AggregateCache::new(AggregateCache::BUDGET);
        let mut measured = None;
        self.measure(&mut measured);
        while let Ok(first) = jobs.recv() {
            self.pending.publish(first.0);
            let mut group = Vec::new();
            let mut rows = Vec::new();
            let mut next = Some(first);
            while let Some((handed_over, job)) = next.take() {
                match job {
                    Job::Append(request, reply) => group.push((request, reply)),
                    Job::Rows(job) => rows.push(job),
                    Job::Exclusive(work) => {
                        self.commit(
                            std::mem::take(&mut group),
                            std::mem::take(&mut rows),
                            &mut aggregates,
                        );
                        // What came before is answered: this is the oldest job now.
                        self.pending.publish(handed_over);
                        work(&self.tree);
                        // It may have rewritten every projection row (a rebuild).
                        aggregates.clear();
                        self.reload_tail();
                    }
                }
                if group.len() + rows.len() < MAX_GROUP {
                    next = jobs.try_recv().ok();
                }
            }
            self.commit(group, rows, &mut aggregates);
            self.measure(&mut measured);
            // A job queued meanwhile is published as soon as `recv` takes it, at once.
            self.pending.clear();
        }
        if let Err(error) = self.db.flush() {
            tracing::error!(%error, "final flush of the store failed");
        }
    }

    fn commit(
        &mut self,
        group: Vec<(PreparedAppend, oneshot::Sender<AppendResult>)>,
        rows: Vec<RowsJob>,
        aggregates: &mut AggregateCache,
    ) {
        if group.is_empty() && rows.is_empty() {
            return;
        }
        let mut overlay = Overlay::new(&self.tree, aggregates);
        let (mut position, mut hash) = (self.position, self.last_hash);
        let mut outcomes = Vec::with_capacity(group.len());
        let (mut new_keys, mut ended_keys) = (Vec::new(), Vec::new());
        for (mut append, reply) in group {
            let outcome = self.stage_joined(&mut overlay, &mut append, &mut position, &mut hash);
            match outcome {
                Ok(_) => {
                    overlay.commit_stage();
                    if let Some(change) = append.request.data_key {
                        change.split(&mut new_keys, &mut ended_keys);
                    }
                }
                Err(_) => overlay.discard_stage(),
            }
            outcomes.push((reply, outcome));
        }
        let mut written = Vec::with_capacity(rows.len());
        let mut new_head = None;
        for (put, reply) in rows {
            for (key, value) in put {
                overlay.put(key, value);
            }
            written.push(reply);
        }
        overlay.commit_stage();
        if !overlay.is_empty() {
            // Keys before the events that need them (see keyring.rs).
            let durable = new_keys
                .iter()
                .try_for_each(|(record, wrapped)| self.keyring.put(record, wrapped))
                .map_err(StoreError::from)
                .and_then(|()| overlay.write())
                .and_then(|()| self.sync());
            let outbox = overlay.settle(durable.is_ok());
            if let Err(error) = durable {
                tracing::error!(%error, "writing an append group failed");
                // The batch may or may not have reached the tree: take the tail from the tree.
                self.reload_tail();
                for (reply, outcome) in outcomes {
                    let failed = outcome.and(Err(AppendError::Store(StoreError::Io(
                        std::io::Error::other("the store could not persist the write"),
                    ))));
                    let _ = reply.send(failed);
                }
                for reply in written {
                    let _ = reply.send(Err(StoreError::Io(std::io::Error::other(
                        "the store could not persist the write",
                    ))));
                }
                return;
            }
            if position != self.position {
                new_head = Some((position, hash));
            }
            let (events, appends) = (position - self.position, outcomes.len());
            metrics::count(|m| {
                m.events_appended.inc_by(events);
                if appends > 0 {
                    m.group_appends.observe(appends as f64);
                }
            });
            self.position = position;
            self.last_hash = hash;
            // Before the position moves, so that whoever it wakes finds them.
            self.new_deliveries.push(outbox);
            self.durable.send_replace(position);
            // Keys after the events that end them are durable; a failure here leaves a key that
            // the next start destroys.
            for record in ended_keys {
                if let Err(error) = self.keyring.destroy(&record) {
                    tracing::error!(%error, "destroying a data key failed; it is retried on the next start");
                }
            }
        }
        for (reply, outcome) in outcomes {
            // The caller may have gone away (client disconnected); the write stands regardless.
            let _ = reply.send(outcome);
        }
        for reply in written {
            let _ = reply.send(Ok(()));
        }
        // Recorded once the group is durable, and only then: after the acknowledgements, which
        // wait for the `db` file's fdatasync but not for this file (it is not synced: a crash
        // may leave it a group behind either way, which only weakens the check on open).
        if let Some((position, hash)) = new_head
            && let Some(head) = &self.head
            && let Err(error) = head.write(position, &hash)
        {
            // A head left behind only weakens the check on open; the write stands.
            tracing::warn!(%error, "recording the log's durable head failed");
        }
    }

    /// Stages an append and the streams joined to it (`AppendRequest::also`), all or nothing,
    /// with its idempotency record: a refusal of any part leaves the counters where they were,
    /// and the caller discards the whole stage.
    fn stage_joined(
        &self,
        overlay: &mut Overlay<'_>,
        append: &mut PreparedAppend,
        position: &mut u64,
        hash: &mut [u8; 32],
    ) -> AppendResult {
        let (start, start_hash) = (*position, *hash);
        // Every event of one append shares its time, whichever stream it goes to.
        let occurred_at = Utc::now();
        let PreparedAppend { request, events } = append;
        let mut prepared = events.drain(..);
        let mut staged = Stage {
            overlay,
            meta: &request.meta,
            occurred_at,
            position,
            hash,
        };
        let mut appended = self.stage(
            &mut staged,
            &request.stream,
            request.expected,
            &mut request.events,
            &mut prepared,
        );
        for part in &mut request.also {
            let Ok(so_far) = &mut appended else { break };
            match self.stage(
                &mut staged,
                &part.stream,
                part.expected,
                &mut part.events,
                &mut prepared,
            ) {
                Ok(more) => so_far.extend(more),
                Err(refused) => appended = Err(refused),
            }
        }
        if appended.is_err() {
            (*position, *hash) = (start, start_hash);
            return appended;
        }
        if let Some(record) = request.idempotency.take() {
            let (key, value) = record.into_row();
            overlay.put(key, value);
        }
        appended
    }

    /// Stages the events of one stream. The request is spent once staged, so its payloads move
    /// into the envelopes.
    fn stage(
        &self,
        staged: &mut Stage<'_, '_>,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: &mut [NewEvent],
        prepared: &mut impl Iterator<Item = PreparedEvent>,
    ) -> AppendResult {
        let stream = stream_id.as_str();
        let overlay = &mut *staged.overlay;
        let current = overlay.head(stream)?;
        if !expected.admits(current) {
            return Err(AppendError::Conflict {
                stream: stream.to_owned(),
                expected,
                actual: current,
            });
        }
        let (mut p, mut h) = (*staged.position, *staged.hash);
        let mut appended = Vec::with_capacity(events.len());
        for (offset, event) in (1u64..).zip(events.iter_mut()) {
            p += 1;
            let (data_json, decoded) = match prepared.next() {
                Some(PreparedEvent { data_json, decoded }) => (data_json, decoded),
                // Not prepared (never the case through `Store::append`): encoded here.
                None => (
                    serde_json::to_vec(&event.data).map_err(StoreError::from)?,
                    None,
                ),
            };
            let envelope = Envelope {
                event_id: ulid::Ulid::new().to_string(),
                position: p,
                stream: stream.to_owned(),
                stream_version: current + offset,
                event_type: std::mem::take(&mut event.event_type),
                schema: event.schema,
                occurred_at: staged.occurred_at,
                actor: staged.meta.actor.clone(),
                request_id: staged.meta.request_id.clone(),
                data: std::mem::take(&mut event.data),
            };
            // `hmac ‖ envelope JSON`, the hash filled in once the JSON after it is written.
            let mut value = Vec::with_capacity(LOG_VALUE_HEAD + data_json.len());
            value.extend_from_slice(&[0; 32]);
            envelope
                .write_json(&data_json, &mut value)
                .map_err(StoreError::from)?;
            h = verify::chain_hash(&self.chain, &h, &value[32..]);
            value[..32].copy_from_slice(&h);
            overlay.put(keys::log(p), value);
            let projected = match decoded {
                Some(decoded) => project_decoded(overlay, &envelope, decoded),
                None => project(overlay, &envelope),
            };
            projected.map_err(|e| match e {
                ProjectionError::Unique { index, value } => AppendError::Unique { index, value },
                ProjectionError::Store(e) => AppendError::Store(e),
                other => AppendError::Invalid(other.to_string()),
            })?;
            appended.push(envelope);
        }
        *staged.position = p;
        *staged.hash = h;
        Ok(appended)
    }

    fn sync(&self) -> Result<(), StoreError> {
        if let Some(file) = &self.sync_file {
            let started = Instant::now();
            self.db.flush()?;
            file.sync_data()?;
            metrics::count(|m| m.flush_seconds.observe(started.elapsed().as_secs_f64()));
        }
        Ok(())
    }

    /// Measures the store's files for `keyledger_store_size_bytes`, at most every
    /// [`SIZE_EVERY`]: sled sums its files' sizes, too slow for every group.
    fn measure(&self, last: &mut Option<Instant>) {
        if last.is_some_and(|at| at.elapsed() < SIZE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        match self.db.size_on_disk() {
            Ok(bytes) => {
                metrics::count(|m| m.store_size.set(i64::try_from(bytes).unwrap_or(i64::MAX)))
            }
            Err(error) => tracing::debug!(%error, "could not measure the store's size"),
        }
    }

    fn reload_tail(&mut self) {
        match verify::tail(&self.tree) {
            Ok((position, hash)) => {
                self.position = position;
                self.last_hash = hash;
            }
            Err(error) => tracing::error!(%error, "could not read the log's tail"),
        }
    }
}

/// What every stream of one append is staged with.
struct Stage<'o, 'a> {
    overlay: &'o mut Overlay<'a>,
    meta: &'o EventMeta,
    occurred_at: DateTime<Utc>,
    position: &'o mut u64,
    hash: &'o mut [u8; 32],
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use crate::crypto::MasterKey;
    use crate::domain::account_key::{ApiKey, ApiKeyEvent};
    use crate::domain::{AccountId, KeyId, Scope};
    use crate::es::{Aggregate, DomainEvent, EventMeta, ExpectedVersion, StreamId};
    use crate::storage::{AppendError, AppendRequest, Durability, Store, StreamAppend};

    fn created(n: u128) -> ApiKeyEvent {
        ApiKeyEvent::Created {
            key_id: KeyId::from_ulid(n),
            account_id: AccountId::from_ulid(1),
            name: format!("key {n}"),
            prefix: "kl_000000000".into(),
            scopes: Scope::DEFAULT.to_vec(),
            token_hash: hex::encode([n as u8; 32]),
            created_at: Utc::now(),
        }
    }

    fn revoked(n: u128) -> ApiKeyEvent {
        ApiKeyEvent::Revoked {
            key_id: KeyId::from_ulid(n),
            revoked_at: Utc::now(),
        }
    }

    fn stream(n: u128) -> StreamId {
        StreamId::new(ApiKey::KIND, KeyId::from_ulid(n).as_str())
    }

    fn request(n: u128, expected: ExpectedVersion, event: ApiKeyEvent) -> AppendRequest {
        AppendRequest {
            stream: stream(n),
            expected,
            events: vec![event.to_new_event().unwrap()],
            meta: EventMeta::default(),
            data_key: None,
            also: Vec::new(),
            idempotency: None,
        }
    }

    /// The writer keeps the state and head of a stream it has just written; an append refused
    /// after that state was taken and staged must leave them as the log has them.
    #[test]
    fn a_request_refused_after_staging_a_state_leaves_the_stream_as_the_log_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).unwrap();
        for n in [1, 2] {
            store
                .append_blocking(request(n, ExpectedVersion::NoStream, created(n)))
                .unwrap();
        }
        // Key 1's revocation is staged (its state taken from what the writer kept), then the
        // joined part is refused: key 2's stream exists already.
        let mut refused = request(1, ExpectedVersion::Exact(1), revoked(1));
        refused.also.push(StreamAppend {
            stream: stream(2),
            expected: ExpectedVersion::NoStream,
            events: vec![created(2).to_new_event().unwrap()],
        });
        let outcome = store.append_blocking(refused);
        assert!(
            matches!(outcome, Err(AppendError::Conflict { actual: 1, .. })),
            "{outcome:?}"
        );
        let key = store.load::<ApiKey>(&stream(1)).unwrap().unwrap();
        assert_eq!((key.stream_version, key.state.revoked_at), (1, None));

        let next = store
            .append_blocking(request(1, ExpectedVersion::Exact(1), revoked(1)))
            .unwrap();
        assert_eq!(next[0].stream_version, 2);
        let key = store.load::<ApiKey>(&stream(1)).unwrap().unwrap();
        assert_eq!(key.stream_version, 2);
        assert!(key.state.revoked_at.is_some());
        // And the same again: the state kept from the last group is the revoked one.
        let again = store.append_blocking(request(1, ExpectedVersion::Exact(1), revoked(1)));
        assert!(matches!(
            again,
            Err(AppendError::Conflict { actual: 2, .. })
        ));
        assert!(store.verify().unwrap().is_sound());
        store.shutdown();
    }
}
