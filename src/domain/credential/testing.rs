//! Given-when-then helpers for the credential's unit tests: a history of events, a register
//! request, a patch.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::{
    Credential, CredentialCommand, CredentialError, CredentialEvent, CredentialPatch,
    NewCredential, RegisterRequest, Registration, decide, prepare_register,
};
use crate::domain::{AccountId, CredentialId};
use crate::es::Aggregate;

pub(super) const SECRET: &str = "sk-proj-0123456789abcdefWXYZ";

/// The credential the tests register, and its account.
pub(super) fn byok() -> CredentialId {
    CredentialId::from_ulid(1)
}

pub(super) fn account() -> AccountId {
    AccountId::from_ulid(1)
}

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

pub(super) fn given(events: &[CredentialEvent]) -> Option<Credential> {
    events
        .iter()
        .fold(None, |state, e| Some(Credential::apply(state, e)))
}

pub(super) fn request(provider: &str) -> RegisterRequest {
    RegisterRequest {
        provider: provider.into(),
        alias: Some("prod-main".into()),
        api_key: Some(SECRET.into()),
        ..RegisterRequest::default()
    }
}

/// Credential fields from `(name, value)` pairs.
pub(super) fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn param_of<T: std::fmt::Debug>(result: Result<T, CredentialError>) -> String {
    match result {
        Err(CredentialError::Invalid { param, .. }) => param,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

pub(super) fn register_command(registration: Registration) -> CredentialCommand {
    CredentialCommand::Register(Box::new(NewCredential {
        byok_id: byok(),
        account_id: account(),
        profile: registration.profile,
        sealed_secret: "c2VhbGVk".into(),
        secret_hint: registration.credentials.hint,
        at: t(0),
        tested: None,
    }))
}

pub(super) fn registered_with(request: RegisterRequest) -> Vec<CredentialEvent> {
    let registration = prepare_register(request).unwrap();
    decide(None, register_command(registration)).unwrap()
}

pub(super) fn registered() -> Vec<CredentialEvent> {
    registered_with(RegisterRequest {
        label: Some("Production".into()),
        models: vec!["gpt-4o-mini".into(), "gpt-4o".into(), "gpt-4o".into()],
        capability: Some("chat".into()),
        ..request("openai")
    })
}

pub(super) fn then(mut history: Vec<CredentialEvent>, new: Vec<CredentialEvent>) -> Credential {
    history.extend(new);
    given(&history).unwrap()
}

pub(super) fn patch(f: impl FnOnce(&mut CredentialPatch)) -> CredentialCommand {
    let mut p = CredentialPatch::default();
    f(&mut p);
    CredentialCommand::Update {
        patch: Box::new(p),
        at: t(60),
        may_move_address: true,
    }
}
