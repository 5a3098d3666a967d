//! Every recorded event shape under fixtures/events still decodes (through the upcasters) and
//! applies.

use std::collections::BTreeMap;

use keyledger::domain::KeyId;
use keyledger::domain::account::{Account, AccountEvent};
use keyledger::domain::account_key::{ApiKey, ApiKeyEvent};
use keyledger::domain::credential::{Credential, CredentialState};
use keyledger::es::{Aggregate, DomainEvent, Envelope};

fn recorded(name: &str) -> Vec<Envelope> {
    let path = format!("{}/fixtures/events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|line| serde_json::from_str(line).expect("an envelope"))
        .collect()
}

/// Decodes every recorded event of `name` and applies it in turn; answers the state they build.
fn replay<A: Aggregate>(name: &str) -> A {
    let state = recorded(name).iter().fold(None, |state, envelope| {
        let event = A::Event::from_envelope(envelope).expect("decodes");
        Some(A::apply(state, &event))
    });
    state.unwrap_or_else(|| panic!("{name} holds no event"))
}

/// The recorded account stream holds the account's creation and, in the layout of stores
/// written before keys had streams of their own, its key events: each decodes as its own
/// aggregate's, schema 1 of a key's creation lifted to name the account of the stream.
#[test]
fn account_events_of_schema_1_decode_and_apply() {
    let events = recorded("account-schema-1.ndjson");
    let (created, keys) = events.split_first().unwrap();
    let account = Account::apply(None, &AccountEvent::from_envelope(created).unwrap());
    assert_eq!(account.email, "ada@example.com");
    let mut by_id: BTreeMap<KeyId, ApiKey> = BTreeMap::new();
    for envelope in keys {
        assert!(ApiKeyEvent::is_key_event(&envelope.event_type));
        let event = ApiKeyEvent::from_envelope(envelope).expect("decodes");
        let before = by_id.remove(event.key_id());
        by_id.insert(event.key_id().clone(), ApiKey::apply(before, &event));
    }
    assert_eq!(by_id.len(), 2);
    assert!(by_id.values().all(|k| k.account_id == account.account_id));
    let revoked = &by_id[&KeyId::parse("key_01M83WT0000000000000000003").unwrap()];
    assert!(revoked.revoked_at.is_some());
}

#[test]
fn key_events_of_schema_2_decode_and_apply() {
    let key: ApiKey = replay("account_key-schema-2.ndjson");
    assert_eq!(key.account_id.as_str(), "acct_01M8SGWHAHDG3Q8EYSMBAD5BGF");
    assert_eq!(key.name, "dashboard");
    assert!(key.revoked_at.is_some());
}

#[test]
fn credential_events_of_schema_1_decode_and_apply() {
    let credential: Credential = replay("byok-schema-1.ndjson");
    assert_eq!(credential.profile.provider, "azure");
    assert_eq!(
        credential.profile.label, None,
        "the update cleared the label"
    );
    assert_eq!(credential.profile.weight, 250);
    assert_eq!(credential.profile.settings["api_version"], "2024-10-21");
    assert_eq!(credential.state, CredentialState::Revoked);
}

#[test]
fn a_schema_newer_than_the_build_is_a_typed_error() {
    let mut envelope = recorded("account-schema-1.ndjson").remove(0);
    envelope.schema = 99;
    assert!(AccountEvent::from_envelope(&envelope).is_err());
}
