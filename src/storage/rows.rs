//! The projection rows a replay produces (`verify`, `rebuild`, the check on start), held in the
//! shape the projections give them rather than as one map of byte rows, and compared with the
//! live rows in one ordered pass.
//!
//! [`ReplayRows`] answers every `Kv` call exactly as a map of byte rows would, but keeps:
//!
//! - per stream, its head (`h/`), its aggregate decoded (`a/`, encoded once, when compared or
//!   written, instead of decoded and re-encoded for every event) and the positions of its events
//!   (`s/`, versions 1, 2, 3, ... in order) as LEB128 deltas;
//! - per account, the positions of its feed (`e/`, ascending) as LEB128 deltas;
//! - every other row (`i/`, and any `s/` or `e/` row that breaks the pattern, which moves that
//!   stream's or account's rows here) in a plain sorted map.
//!
//! Memory is therefore the number of streams, accounts and index rows times what each holds,
//! plus one to three bytes per event for each of its `s/` and `e/` rows, instead of two full
//! rows per event in a map.
//!
//! [`compare`] hands every difference between the replayed and the live rows (missing,
//! different, extra) to a [`Differences`]: `verify` lists them, `rebuild` writes the replayed row
//! or removes the live one. The live `s/` and `e/` rows are read into the same compact form
//! ([`live_numbered`], on a thread of its own while the log replays), so a stream or account
//! whose two lists are the same bytes is compared with one `memcmp`, and only lists that differ
//! are compared row by row; the other prefixes are walked in key order beside a scan of the live
//! rows. Only the storage module uses this file; it imports no other part of the crate but
//! `projection`'s row codecs and the `Aggregate` trait.

use std::any::Any;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::kv::{Kv, KvRead};
use super::projection::{self, StoredAggregate};
use super::{StoreError, keys};
use crate::es::Aggregate;

/// A strictly increasing sequence of positions, stored as LEB128 deltas from the previous one.
#[derive(Default)]
struct Positions {
    bytes: Vec<u8>,
    last: u64,
    len: u64,
}

impl Positions {
    /// Appends `position`, or answers `false` (changing nothing) when it is not above the last.
    fn push(&mut self, position: u64) -> bool {
        if position <= self.last {
            return false;
        }
        let mut delta = position - self.last;
        while delta >= 0x80 {
            self.bytes.push((delta as u8) | 0x80);
            delta >>= 7;
        }
        self.bytes.push(delta as u8);
        self.last = position;
        self.len += 1;
        true
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = 0;
        let mut position = 0u64;
        std::iter::from_fn(move || {
            let mut delta = 0u64;
            let mut shift = 0;
            loop {
                let byte = *self.bytes.get(at)?;
                at += 1;
                delta |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            position += delta;
            Some(position)
        })
    }
}

/// Where a stream's or account's numbered rows (`s/`, `e/`) are.
enum Numbered {
    /// In the compact list: for `s/`, the positions of versions 1, 2, 3, ...; for `e/`, the
    /// feed's positions.
    Listed(Positions),
    /// In [`ReplayRows::other`], because a row broke the pattern.
    Spilled,
}

impl Default for Numbered {
    fn default() -> Self {
        Self::Listed(Positions::default())
    }
}

/// An aggregate row, decoded or as bytes.
enum Held {
    Row(Vec<u8>),
    Decoded(Box<dyn DecodedAggregate>),
}

impl Held {
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        match self {
            Self::Row(bytes) => Ok(bytes.clone()),
            Self::Decoded(stored) => stored.encode(),
        }
    }
}

/// A `StoredAggregate<A>` of whichever aggregate its stream holds.
trait DecodedAggregate: Send {
    fn encode(&self) -> Result<Vec<u8>, StoreError>;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<A: Aggregate + Send + 'static> DecodedAggregate for StoredAggregate<A> {
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        projection::encode_aggregate(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A stream's rows: `h/<stream>`, `a/<stream>` and `s/<stream> 0x00 <version>`.
#[derive(Default)]
struct StreamRows {
    head: Option<Vec<u8>>,
    aggregate: Option<Held>,
    events: Numbered,
}

/// Which row a key names, for [`ReplayRows`].
enum Slot<'k> {
    Head(&'k [u8]),
    Aggregate(&'k [u8]),
    /// `s/<stream> 0x00 <version>`, for a stream whose name holds no 0x00.
    StreamEvent(&'k [u8], u64),
    /// `e/<account> 0x00 <position>`, for an account id that holds no 0x00.
    Feed(&'k [u8], u64),
    Other,
}

fn slot(key: &[u8]) -> Slot<'_> {
    if let Some(stream) = key.strip_prefix(keys::HEAD) {
        return Slot::Head(stream);
    }
    if let Some(stream) = key.strip_prefix(keys::AGGREGATE) {
        return Slot::Aggregate(stream);
    }
    // A name holding 0x00 would sort among other names' rows: such rows stay plain.
    if let Some((stream, version)) = keys::split_numbered(key, keys::STREAM_EVENTS)
        && !stream.contains(&0)
    {
        return Slot::StreamEvent(stream, version);
    }
    if let Some((account, position)) = keys::split_numbered(key, keys::ACCOUNT_FEED)
        && !account.contains(&0)
    {
        return Slot::Feed(account, position);
    }
    Slot::Other
}

fn numbered_key(prefix: &[u8], name: &[u8], number: u64) -> Vec<u8> {
    [prefix, name, &[0], &number.to_be_bytes()].concat()
}

/// Values by name (a stream, an account), remembering the last one asked for: the projections
/// ask for the same stream several times per event, and consecutive events often share one.
struct ByName<T> {
    entries: Vec<(Box<[u8]>, T)>,
    index: HashMap<Box<[u8]>, usize, BuildHasherDefault<NameHasher>>,
    last: usize,
}

impl<T> Default for ByName<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::default(),
            last: 0,
        }
    }
}

impl<T: Default> ByName<T> {
    fn get(&self, name: &[u8]) -> Option<&T> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    fn find(&mut self, name: &[u8]) -> Option<&mut T> {
        let at = match self.entries.get(self.last) {
            Some((last, _)) if **last == *name => self.last,
            _ => *self.index.get(name)?,
        };
        self.last = at;
        Some(&mut self.entries[at].1)
    }

    fn entry(&mut self, name: &[u8]) -> &mut T {
        if self.find(name).is_none() {
            self.last = self.entries.len();
            self.index.insert(name.into(), self.last);
            self.entries.push((name.into(), T::default()));
        }
        &mut self.entries[self.last].1
    }

    /// Every entry, ordered by name.
    fn sorted(&self) -> Vec<(&[u8], &T)> {
        let mut sorted: Vec<_> = self.entries.iter().map(|(k, v)| (&**k, v)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted
    }
}

/// FxHash (as rustc uses): names come from the chained log, so there is no flooding to resist,
/// and SipHash was a tenth of the replay.
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What [`ReplayRows::walk`] calls with each row, key and value.
type VisitRow<'v> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'v;

/// The projection rows of a replay. See the module header for the layout.
#[derive(Default)]
pub struct ReplayRows {
    streams: ByName<StreamRows>,
    feeds: ByName<Numbered>,
    other: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl ReplayRows {
    fn stream_mut(&mut self, stream: &[u8]) -> &mut StreamRows {
        self.streams.entry(stream)
    }

    fn feed_mut(&mut self, account: &[u8]) -> &mut Numbered {
        self.feeds.entry(account)
    }

    /// Moves a stream's `s/` rows to `other`.
    fn spill_stream_events(&mut self, stream: &[u8]) {
        let Some(rows) = self.streams.find(stream) else {
            return;
        };
        if let Numbered::Listed(list) = std::mem::replace(&mut rows.events, Numbered::Spilled) {
            for (version, position) in (1u64..).zip(list.iter()) {
                self.other.insert(
                    numbered_key(keys::STREAM_EVENTS, stream, version),
                    position.to_be_bytes().to_vec(),
                );
            }
        }
    }

    /// Moves an account's `e/` rows to `other`.
    fn spill_feed(&mut self, account: &[u8]) {
        let Some(feed) = self.feeds.find(account) else {
            return;
        };
        if let Numbered::Listed(list) = std::mem::replace(feed, Numbered::Spilled) {
            for position in list.iter() {
                self.other.insert(
                    numbered_key(keys::ACCOUNT_FEED, account, position),
                    Vec::new(),
                );
            }
        }
    }

    /// The streams, ordered by name: the order of their `h/`, `a/` and `s/` rows.
    fn sorted_streams(&self) -> Vec<(&[u8], &StreamRows)> {
        self.streams.sorted()
    }

    /// Visits each aggregate of the streams of `kind` (`kind:<id>`) as `A`, ordered by stream.
    pub fn for_each_aggregate<A: Aggregate + Send + 'static>(
        &self,
        kind: &str,
        mut visit: impl FnMut(&StoredAggregate<A>),
    ) -> Result<(), StoreError> {
        let prefix = format!("{kind}:");
        for (stream, rows) in self.sorted_streams() {
            if !stream.starts_with(prefix.as_bytes()) {
                continue;
            }
            let Some(held) = &rows.aggregate else {
                continue;
            };
            if let Held::Decoded(decoded) = held
                && let Some(stored) = decoded.as_any().downcast_ref::<StoredAggregate<A>>()
            {
                visit(stored);
                continue;
            }
            let name = String::from_utf8_lossy(stream);
            visit(&projection::decode_aggregate::<A>(&name, &held.encode()?)?);
        }
        Ok(())
    }

    /// Walks the rows under `prefix` (one without numbered rows: `h/`, `a/`, `i/`) in key order.
    fn walk(
        &self,
        prefix: &[u8],
        streams: &[(&[u8], &StreamRows)],
        visit: &mut VisitRow<'_>,
    ) -> Result<(), StoreError> {
        let mut other = self.other_under(prefix).peekable();
        // Each compact row, after the plain rows that sort before it.
        let mut row = |key: &[u8], value: &[u8]| -> Result<(), StoreError> {
            while let Some((k, v)) = other.next_if(|(k, _)| k.as_slice() < key) {
                visit(k, v)?;
            }
            visit(key, value)
        };
        let mut key = Vec::new();
        for (stream, rows) in streams {
            key.clear();
            key.extend_from_slice(prefix);
            key.extend_from_slice(stream);
            if prefix == keys::HEAD
                && let Some(head) = &rows.head
            {
                row(&key, head)?;
            } else if prefix == keys::AGGREGATE
                && let Some(held) = &rows.aggregate
            {
                row(&key, &held.encode()?)?;
            }
        }
        for (k, v) in other {
            visit(k, v)?;
        }
        Ok(())
    }

    /// The plain rows under `prefix`.
    fn other_under<'r>(
        &'r self,
        prefix: &'r [u8],
    ) -> impl Iterator<Item = (&'r Vec<u8>, &'r Vec<u8>)> + 'r {
        self.other
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The numbered rows (`s/` or `e/`, by `prefix`) of one stream or account, by number.
    fn numbered<'r>(
        &'r self,
        prefix: &'r [u8],
        name: &'r [u8],
    ) -> Box<dyn Iterator<Item = (u64, Cow<'r, [u8]>)> + 'r> {
        let listed = if prefix == keys::STREAM_EVENTS {
            self.streams.get(name).map(|rows| &rows.events)
        } else {
            self.feeds.get(name)
        };
        match listed {
            Some(Numbered::Listed(list)) if !name.contains(&0) => {
                if prefix == keys::STREAM_EVENTS {
                    Box::new((1u64..).zip(list.iter()).map(|(version, position)| {
                        (version, Cow::Owned(position.to_be_bytes().to_vec()))
                    }))
                } else {
                    Box::new(
                        list.iter()
                            .map(|position| (position, Cow::Borrowed(&[][..]))),
                    )
                }
            }
            // Spilled, or a name whose rows are always plain: its rows in `other` are those of
            // exactly this name's length (a longer name may share the range).
            _ => {
                let len = prefix.len() + name.len() + 9;
                Box::new(
                    self.other
                        .range(numbered_key(prefix, name, 0)..=numbered_key(prefix, name, u64::MAX))
                        .filter(move |(k, _)| k.len() == len)
                        .filter_map(move |(k, v)| {
                            let (_, number) = keys::split_numbered(k, prefix)?;
                            Some((number, Cow::Borrowed(v.as_slice())))
                        }),
                )
            }
        }
    }

    /// Every name with numbered rows under `prefix`, and every plain row there that names none.
    fn numbered_names<'r>(
        &'r self,
        prefix: &'r [u8],
        names: &mut Vec<&'r [u8]>,
    ) -> Vec<(&'r [u8], &'r [u8])> {
        if prefix == keys::STREAM_EVENTS {
            names.extend(self.streams.entries.iter().map(|(name, _)| &**name));
        } else {
            names.extend(self.feeds.entries.iter().map(|(name, _)| &**name));
        }
        let mut odd = Vec::new();
        for (key, value) in self.other_under(prefix) {
            match keys::split_numbered(key, prefix) {
                Some((name, _)) => names.push(name),
                None => odd.push((key.as_slice(), value.as_slice())),
            }
        }
        odd
    }

    /// Whether both hold this name's numbered rows compactly, and the same ones.
    fn same_listed(&self, live: &Self, prefix: &[u8], name: &[u8]) -> Option<u64> {
        if name.contains(&0) {
            return None;
        }
        let (ours, theirs) = if prefix == keys::STREAM_EVENTS {
            (
                self.streams.get(name).map(|r| &r.events),
                live.streams.get(name).map(|r| &r.events),
            )
        } else {
            (self.feeds.get(name), live.feeds.get(name))
        };
        match (ours, theirs) {
            (Some(Numbered::Listed(a)), Some(Numbered::Listed(b)))
                if a.len == b.len && a.bytes == b.bytes =>
            {
                Some(a.len)
            }
            _ => None,
        }
    }

    /// Stores one row; `put` and the scan of live numbered rows both come here.
    fn put_row(&mut self, key: Cow<'_, [u8]>, value: Cow<'_, [u8]>) {
        match slot(&key) {
            Slot::Head(stream) => self.stream_mut(stream).head = Some(value.into_owned()),
            Slot::Aggregate(stream) => {
                self.stream_mut(stream).aggregate = Some(Held::Row(value.into_owned()));
            }
            Slot::StreamEvent(stream, version) => {
                let listed = match &mut self.stream_mut(stream).events {
                    Numbered::Listed(list) => {
                        version == list.len + 1
                            && keys::u64_value(&value).is_some_and(|p| list.push(p))
                    }
                    Numbered::Spilled => false,
                };
                if !listed {
                    let stream = stream.to_vec();
                    self.spill_stream_events(&stream);
                    self.other.insert(key.into_owned(), value.into_owned());
                }
            }
            Slot::Feed(account, position) => {
                let listed = match self.feed_mut(account) {
                    Numbered::Listed(list) => value.is_empty() && list.push(position),
                    Numbered::Spilled => false,
                };
                if !listed {
                    let account = account.to_vec();
                    self.spill_feed(&account);
                    self.other.insert(key.into_owned(), value.into_owned());
                }
            }
            Slot::Other => {
                self.other.insert(key.into_owned(), value.into_owned());
            }
        }
    }
}

/// The live `s/` and `e/` rows, the bulk of every store (two per event), read into the same
/// compact form as a replay's so the two compare list by list. `verify` and `rebuild` read them
/// on a thread of their own while the log replays.
pub fn live_numbered(tree: &sled::Tree) -> Result<ReplayRows, StoreError> {
    let mut rows = ReplayRows::default();
    for prefix in [keys::STREAM_EVENTS, keys::ACCOUNT_FEED] {
        for item in tree.scan_prefix(prefix) {
            let (key, value) = item?;
            rows.put_row(Cow::Borrowed(&key), Cow::Borrowed(&value));
        }
    }
    Ok(rows)
}

impl KvRead for ReplayRows {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match slot(key) {
            Slot::Head(stream) => Ok(self.streams.get(stream).and_then(|s| s.head.clone())),
            Slot::Aggregate(stream) => self
                .streams
                .get(stream)
                .and_then(|s| s.aggregate.as_ref())
                .map(Held::encode)
                .transpose(),
            Slot::StreamEvent(stream, version) => {
                match self.streams.get(stream).map(|s| &s.events) {
                    Some(Numbered::Listed(list)) => Ok(version
                        .checked_sub(1)
                        .and_then(|skip| list.iter().nth(usize::try_from(skip).ok()?))
                        .map(|position| position.to_be_bytes().to_vec())),
                    _ => Ok(self.other.get(key).cloned()),
                }
            }
            Slot::Feed(account, position) => match self.feeds.get(account) {
                Some(Numbered::Listed(list)) => {
                    Ok(list.iter().any(|p| p == position).then(Vec::new))
                }
                _ => Ok(self.other.get(key).cloned()),
            },
            Slot::Other => Ok(self.other.get(key).cloned()),
        }
    }
}

impl Kv for ReplayRows {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.put_row(Cow::Owned(key), Cow::Owned(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        match slot(&key) {
            Slot::Head(stream) => {
                if let Some(rows) = self.streams.find(stream) {
                    rows.head = None;
                }
            }
            Slot::Aggregate(stream) => {
                if let Some(rows) = self.streams.find(stream) {
                    rows.aggregate = None;
                }
            }
            Slot::StreamEvent(stream, _) => {
                let stream = stream.to_vec();
                self.spill_stream_events(&stream);
                self.other.remove(&key);
            }
            Slot::Feed(account, _) => {
                let account = account.to_vec();
                self.spill_feed(&account);
                self.other.remove(&key);
            }
            Slot::Other => {
                self.other.remove(&key);
            }
        }
    }

    /// Taken out of the rows (the projection writes it back with [`Kv::put_aggregate`]), still
    /// decoded when the replay put it there.
    fn take_aggregate<A: Aggregate + Send + 'static>(
        &mut self,
        stream: &str,
    ) -> Result<Option<StoredAggregate<A>>, StoreError> {
        let Some(rows) = self.streams.find(stream.as_bytes()) else {
            return Ok(None);
        };
        let bytes = match rows.aggregate.take() {
            None => return Ok(None),
            Some(Held::Decoded(decoded)) if decoded.as_any().is::<StoredAggregate<A>>() => {
                if let Ok(stored) = decoded.into_any().downcast::<StoredAggregate<A>>() {
                    return Ok(Some(*stored));
                }
                return Ok(None);
            }
            // Another aggregate's state under this stream: read as a map of rows would.
            Some(Held::Decoded(decoded)) => decoded.encode()?,
            Some(Held::Row(bytes)) => bytes,
        };
        match projection::decode_aggregate(stream, &bytes) {
            Ok(stored) => Ok(Some(stored)),
            Err(error) => {
                rows.aggregate = Some(Held::Row(bytes));
                Err(error)
            }
        }
    }

    /// Kept decoded: encoded once, when compared or written.
    fn put_aggregate<A: Aggregate + Send + 'static>(
        &mut self,
        stream: &str,
        stored: StoredAggregate<A>,
    ) -> Result<(), StoreError> {
        self.stream_mut(stream.as_bytes()).aggregate = Some(Held::Decoded(Box::new(stored)));
        Ok(())
    }
}

/// What [`compare`] finds, one row at a time, in key order per prefix.
pub trait Differences {
    /// The replay has the row, the live store does not.
    fn missing(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Both have the row, with different values; `value` is the replayed one.
    fn differs(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// The live store has the row, the replay does not.
    fn extra(&mut self, key: &[u8]) -> Result<(), StoreError>;
}

/// Compares the replayed rows with the live rows under every projection prefix and answers how
/// many rows the replay holds. `live_numbered` holds the live `s/` and `e/` rows
/// ([`live_numbered`]); the rest are read from `tree` one at a time, beside the replayed rows in
/// key order. Differences come in key order within each stream or account, not overall.
pub fn compare(
    rows: &ReplayRows,
    live_numbered: &ReplayRows,
    tree: &sled::Tree,
    differences: &mut dyn Differences,
) -> Result<u64, StoreError> {
    let streams = rows.sorted_streams();
    let mut prefixes = keys::PROJECTIONS;
    prefixes.sort_unstable();
    let mut replayed = 0;
    let mut previous_end: Vec<u8> = Vec::new();
    for prefix in prefixes {
        // Rows a projection wrote outside every projection prefix: the live store keeps none.
        for (key, value) in rows.other.range(previous_end.clone()..prefix.to_vec()) {
            replayed += 1;
            differences.missing(key, value)?;
        }
        previous_end = prefix_end(prefix);
        if prefix == keys::STREAM_EVENTS || prefix == keys::ACCOUNT_FEED {
            replayed += compare_numbered(prefix, rows, live_numbered, differences)?;
            continue;
        }
        let mut live = tree.scan_prefix(prefix);
        let mut current = next_row(&mut live)?;
        rows.walk(prefix, &streams, &mut |key, value| {
            replayed += 1;
            loop {
                let Some((live_key, live_value)) = &current else {
                    return differences.missing(key, value);
                };
                match live_key.as_ref().cmp(key) {
                    Ordering::Less => {
                        differences.extra(live_key)?;
                        current = next_row(&mut live)?;
                    }
                    Ordering::Equal => {
                        if live_value.as_ref() != value {
                            differences.differs(key, value)?;
                        }
                        current = next_row(&mut live)?;
                        return Ok(());
                    }
                    Ordering::Greater => return differences.missing(key, value),
                }
            }
        })?;
        while let Some((live_key, _)) = current {
            differences.extra(&live_key)?;
            current = next_row(&mut live)?;
        }
    }
    for (key, value) in rows.other.range(previous_end..) {
        replayed += 1;
        differences.missing(key, value)?;
    }
    Ok(replayed)
}

/// Compares the numbered rows under `prefix` name by name: two compact lists that are the same
/// bytes are the same rows; anything else is compared row by row. Answers how many rows the
/// replay holds there.
fn compare_numbered(
    prefix: &[u8],
    rows: &ReplayRows,
    live: &ReplayRows,
    differences: &mut dyn Differences,
) -> Result<u64, StoreError> {
    let mut names = Vec::new();
    let ours_odd = rows.numbered_names(prefix, &mut names);
    let theirs_odd = live.numbered_names(prefix, &mut names);
    names.sort_unstable();
    names.dedup();
    let mut replayed = 0;
    let mut key = Vec::new();
    for name in names {
        if let Some(len) = rows.same_listed(live, prefix, name) {
            replayed += len;
            continue;
        }
        let mut ours = rows.numbered(prefix, name).peekable();
        let mut theirs = live.numbered(prefix, name).peekable();
        loop {
            let order = match (ours.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            let (number, value) = match order {
                Ordering::Greater => match theirs.next() {
                    Some((number, _)) => (number, None),
                    None => break,
                },
                _ => match ours.next() {
                    Some((number, value)) => (number, Some(value)),
                    None => break,
                },
            };
            key.clear();
            key.extend_from_slice(prefix);
            key.extend_from_slice(name);
            key.push(0);
            key.extend_from_slice(&number.to_be_bytes());
            match (order, value) {
                (Ordering::Greater, _) | (_, None) => differences.extra(&key)?,
                (Ordering::Less, Some(value)) => {
                    replayed += 1;
                    differences.missing(&key, &value)?;
                }
                (Ordering::Equal, Some(value)) => {
                    replayed += 1;
                    if theirs
                        .next()
                        .is_some_and(|(_, live_value)| live_value != value)
                    {
                        differences.differs(&key, &value)?;
                    }
                }
            }
        }
    }
    // Rows under the prefix whose key names no stream or account.
    let mut theirs = theirs_odd.into_iter().peekable();
    for (key, value) in ours_odd {
        replayed += 1;
        while let Some((live_key, _)) = theirs.next_if(|(k, _)| *k < key) {
            differences.extra(live_key)?;
        }
        match theirs.next_if(|(k, _)| *k == key) {
            Some((_, live_value)) if live_value != value => differences.differs(key, value)?,
            Some(_) => {}
            None => differences.missing(key, value)?,
        }
    }
    for (live_key, _) in theirs {
        differences.extra(live_key)?;
    }
    Ok(replayed)
}

/// Every row `rows` holds, as a plain map (for tests that compare a replay with a model).
#[cfg(test)]
pub fn as_map(rows: &ReplayRows) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    struct Collect(BTreeMap<Vec<u8>, Vec<u8>>);
    impl Differences for Collect {
        fn missing(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.0.insert(key.to_vec(), value.to_vec());
            Ok(())
        }
        fn differs(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.missing(key, value)
        }
        fn extra(&mut self, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
    }
    let empty = sled::Config::new().temporary(true).open()?;
    let mut all = Collect(BTreeMap::new());
    compare(rows, &ReplayRows::default(), &empty, &mut all)?;
    Ok(all.0)
}

/// The live row after the last one, once the scan is done `None` for good.
fn next_row(live: &mut sled::Iter) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
    Ok(live.next().transpose()?)
}

/// The first key after every key that starts with `prefix` (a prefix ending in `/`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::kv::MemKv;

    #[test]
    fn positions_round_trip_and_refuse_to_go_back() {
        let mut list = Positions::default();
        for p in [1, 2, 130, 131, 20_000, 1 << 40, u64::MAX] {
            assert!(list.push(p));
        }
        assert!(!list.push(u64::MAX));
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [1, 2, 130, 131, 20_000, 1 << 40, u64::MAX]
        );
        assert_eq!(list.len, 7);
        let mut empty = Positions::default();
        assert!(!empty.push(0), "positions start at 1");
    }

    /// Every difference, as a model of the two row sets sees them.
    #[derive(Default, Debug, PartialEq, Eq)]
    struct Found {
        missing: BTreeMap<Vec<u8>, Vec<u8>>,
        differs: BTreeMap<Vec<u8>, Vec<u8>>,
        extra: Vec<Vec<u8>>,
    }

    impl Differences for Found {
        fn missing(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            assert!(self.missing.insert(key.to_vec(), value.to_vec()).is_none());
            Ok(())
        }
        fn differs(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            assert!(self.differs.insert(key.to_vec(), value.to_vec()).is_none());
            Ok(())
        }
        fn extra(&mut self, key: &[u8]) -> Result<(), StoreError> {
            self.extra.push(key.to_vec());
            Ok(())
        }
    }

    /// What comparing the plain maps finds.
    fn model(replayed: &MemKv, live: &MemKv) -> Found {
        let mut found = Found::default();
        for (k, v) in &replayed.0 {
            match live.0.get(k) {
                None => drop(found.missing.insert(k.clone(), v.clone())),
                Some(l) if l != v => drop(found.differs.insert(k.clone(), v.clone())),
                Some(_) => {}
            }
        }
        found.extra = live
            .0
            .keys()
            .filter(|k| !replayed.0.contains_key(*k))
            .cloned()
            .collect();
        found
    }

    /// Compares `replayed` with a tree holding `live`, through the compact form of both.
    fn compared(replayed: &ReplayRows, live: &MemKv) -> (u64, Found) {
        let tree = sled::Config::new().temporary(true).open().unwrap();
        for (k, v) in &live.0 {
            tree.insert(k, v.as_slice()).unwrap();
        }
        let numbered = live_numbered(&tree).unwrap();
        let mut found = Found::default();
        let rows = compare(replayed, &numbered, &tree, &mut found).unwrap();
        found.extra.sort();
        (rows, found)
    }

    fn s(stream: &str, v: u64) -> Vec<u8> {
        numbered_key(b"s/", stream.as_bytes(), v)
    }

    fn e(account: &str, p: u64) -> Vec<u8> {
        numbered_key(b"e/", account.as_bytes(), p)
    }

    fn pos(p: u64) -> Vec<u8> {
        p.to_be_bytes().to_vec()
    }

    /// Puts and deletes that follow the compact patterns and break them: a version out of
    /// order, a position going back, a value that is not a position, a feed row with a value, a
    /// name holding 0x00, a key of no known shape, deletes, rows outside every prefix.
    fn ops() -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        vec![
            (b"h/byok:b".to_vec(), Some(pos(1))),
            (s("byok:b", 1), Some(pos(3))),
            (s("byok:b", 2), Some(pos(7))),
            (s("byok:a", 1), Some(pos(2))),
            (s("byok:ab", 1), Some(pos(4))),
            (e("acct_1", 2), Some(vec![])),
            (e("acct_1", 3), Some(vec![])),
            (e("acct_10", 4), Some(vec![])),
            (b"i/email/x".to_vec(), Some(b"acct_1".to_vec())),
            (b"a/byok:b".to_vec(), Some(b"{}".to_vec())),
            (s("byok:c", 2), Some(pos(9))),
            (s("byok:d", 1), Some(pos(9))),
            (s("byok:d", 2), Some(pos(8))),
            (s("byok:f", 1), Some(b"x".to_vec())),
            (e("acct_2", 5), Some(b"v".to_vec())),
            (e("acct_3", 6), Some(vec![])),
            (e("acct_3", 6), Some(vec![])),
            (s("byok:\0z", 1), Some(pos(11))),
            (s("byok:\0z", 2), Some(pos(12))),
            (e("acct_\0", 14), Some(vec![])),
            (b"s/odd".to_vec(), Some(b"1".to_vec())),
            (b"e/odd\0".to_vec(), Some(vec![])),
            (s("byok:b", 1), None),
            (e("acct_1", 3), None),
            (b"h/byok:b".to_vec(), None),
            (b"z/outside".to_vec(), Some(b"1".to_vec())),
            (s("byok:b", 3), Some(pos(12))),
            (e("acct_1", 13), Some(vec![])),
            (b"h/byok:g".to_vec(), Some(pos(2))),
        ]
    }

    fn apply(ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> (MemKv, ReplayRows) {
        let mut map = MemKv::default();
        let mut rows = ReplayRows::default();
        for (key, value) in ops {
            match value {
                Some(v) => {
                    map.put(key.clone(), v.clone());
                    rows.put(key.clone(), v.clone());
                }
                None => {
                    map.delete(key.clone());
                    rows.delete(key.clone());
                }
            }
        }
        (map, rows)
    }

    /// The same puts and deletes on a plain map and on the compact rows read back the same,
    /// row by row, and compared with an empty store report every row as missing.
    #[test]
    fn the_compact_rows_answer_as_a_map_of_rows_does() {
        let (map, rows) = apply(&ops());
        for key in map.0.keys() {
            assert_eq!(rows.get(key).unwrap(), map.get(key).unwrap(), "{key:?}");
        }
        for absent in [s("byok:b", 9), e("acct_1", 99), b"h/none".to_vec()] {
            assert_eq!(rows.get(&absent).unwrap(), None);
        }
        let (count, found) = compared(&rows, &MemKv::default());
        assert_eq!(found.missing, map.0);
        assert_eq!(count, map.0.len() as u64);
        assert!(found.differs.is_empty() && found.extra.is_empty());
        // And with a store holding exactly those rows, nothing but the row outside every
        // projection prefix, which the live store is never read for.
        let (count, found) = compared(&rows, &map);
        let outside = BTreeMap::from([(b"z/outside".to_vec(), b"1".to_vec())]);
        assert_eq!(found.missing, outside);
        assert!(found.differs.is_empty() && found.extra.is_empty());
        assert_eq!(count, map.0.len() as u64);
    }

    /// Against a live store that differs in every way, the comparison finds what comparing the
    /// plain maps finds.
    #[test]
    fn the_comparison_finds_what_comparing_maps_finds() {
        let (replayed_map, replayed) = apply(&ops());
        let mut live = replayed_map.0.clone();
        live.remove(&s("byok:b", 2));
        live.insert(s("byok:b", 3), pos(13));
        live.insert(s("byok:b", 4), pos(14));
        live.remove(&s("byok:a", 1));
        live.insert(s("byok:new", 1), pos(20));
        live.remove(&e("acct_10", 4));
        live.insert(e("acct_1", 5), vec![]);
        live.insert(e("acct_1", 13), b"x".to_vec());
        live.insert(e("acct_9", 1), vec![]);
        live.remove(&s("byok:\0z", 2));
        live.insert(s("byok:\0y", 1), pos(1));
        live.remove(b"s/odd".as_slice());
        live.insert(b"s/odder".to_vec(), vec![]);
        live.insert(b"h/byok:g".to_vec(), pos(3));
        live.remove(b"a/byok:b".as_slice());
        live.insert(b"i/email/y".to_vec(), b"acct_2".to_vec());
        live.remove(b"z/outside".as_slice());
        let live = MemKv(live);
        let mut expected = model(&replayed_map, &live);
        // Rows outside every prefix are never read from the live store.
        expected
            .missing
            .insert(b"z/outside".to_vec(), b"1".to_vec());
        let (count, found) = compared(&replayed, &live);
        assert_eq!(found, expected);
        assert_eq!(count, replayed_map.0.len() as u64);
    }
}
