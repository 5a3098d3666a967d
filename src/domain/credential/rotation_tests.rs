//! Rotation's given/when/then tests, and a property test of the credential aggregate against a
//! small reference model over random command sequences.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::testing::{byok, given, registered, t};
use super::{
    Credential, CredentialCommand, CredentialError, CredentialEvent, NewSecret, ProbeError,
    RotationMethod, TestResult, decide, key_record, key_record_owner,
};
use crate::domain::{CredentialId, StageId};
use crate::es::Aggregate;

const TTL: i64 = 10;
const WINDOW: i64 = 20;

fn secret(c: &Credential) -> NewSecret {
    let v = c.next_secret_version();
    NewSecret {
        secret_version: v,
        sealed_secret: format!("sealed-v{v}"),
        secret_hint: format!("h{v}"),
    }
}

fn probe(c: &Credential, ok: bool, at: DateTime<Utc>) -> TestResult {
    let outcome = if ok {
        Ok(())
    } else {
        Err(ProbeError::InvalidCredentials)
    };
    TestResult::new(outcome, 5, c.next_secret_version(), at)
}

fn rotate(c: &Credential, at: i64) -> CredentialCommand {
    CredentialCommand::Rotate {
        secret: secret(c),
        at: t(at),
        rollback_until: t(at + WINDOW),
    }
}

fn stage(c: &Credential, n: u128, ok: bool, at: i64) -> CredentialCommand {
    CredentialCommand::StageRotation {
        stage_id: StageId::from_ulid(n),
        secret: secret(c),
        probe_result: probe(c, ok, t(at)),
        expires_at: t(at + TTL),
        at: t(at),
    }
}

fn commit(n: u128, force: bool, at: i64) -> CredentialCommand {
    CredentialCommand::CommitRotation {
        stage_id: StageId::from_ulid(n),
        force,
        at: t(at),
        rollback_until: t(at + WINDOW),
    }
}

fn step(history: &mut Vec<CredentialEvent>, command: CredentialCommand) -> Vec<CredentialEvent> {
    let events = decide(given(history).as_ref(), command).unwrap();
    history.extend(events.clone());
    events
}

fn retired_versions(events: &[CredentialEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            CredentialEvent::SecretRetired(r) => Some(r.secret_version),
            _ => None,
        })
        .collect()
}

#[test]
fn key_records_name_their_credential_and_version() {
    let id = byok();
    assert_eq!(key_record(&id, 1), id.to_string());
    assert_eq!(key_record(&id, 7), format!("{id}_v7"));
    assert_eq!(key_record_owner(&key_record(&id, 1)), Some((id.clone(), 1)));
    assert_eq!(key_record_owner(&key_record(&id, 7)), Some((id.clone(), 7)));
    for bad in [
        format!("{id}_v1"),
        format!("{id}_v07"),
        format!("{id}_v"),
        format!("{id}_x7"),
        "byok_x_v2".to_owned(),
    ] {
        assert_eq!(key_record_owner(&bad), None, "{bad}");
    }
    let _: CredentialId = id;
}

#[test]
fn rotate_in_place_keeps_the_previous_secret_and_pushes_the_older_one_out() {
    let mut history = registered();
    let c = given(&history).unwrap();
    let events = step(&mut history, rotate(&c, 1));
    assert!(matches!(&events[..], [CredentialEvent::Rotated(r)]
        if r.method == RotationMethod::InPlace && r.secret_version == 2 && r.previous_version == 1));
    let c = given(&history).unwrap();
    assert_eq!(c.secret_version, 2);
    assert_eq!(c.sealed_secret, "sealed-v2");
    assert_eq!(c.previous_secret.as_ref().unwrap().secret_version, 1);
    assert_eq!(c.live_secret_versions(), [2, 1]);
    // A second rotation retires version 1 first.
    let events = step(&mut history, rotate(&c, 2));
    assert_eq!(retired_versions(&events), [1]);
    let c = given(&history).unwrap();
    assert_eq!(c.live_secret_versions(), [3, 2]);
}

#[test]
fn a_stage_serves_nothing_until_committed_and_a_new_stage_replaces_it() {
    let mut history = registered();
    let c = given(&history).unwrap();
    step(&mut history, stage(&c, 1, true, 1));
    let c = given(&history).unwrap();
    assert_eq!(c.secret_version, 1);
    assert_eq!(c.pending_rotation.as_ref().unwrap().secret_version, 2);
    let events = step(&mut history, stage(&c, 2, true, 2));
    assert_eq!(retired_versions(&events), [2]);
    let c = given(&history).unwrap();
    assert_eq!(
        decide(Some(&c), commit(1, false, 3)),
        Err(CredentialError::StageUnknown)
    );
    let events = step(&mut history, commit(2, false, 3));
    assert!(matches!(&events[..], [CredentialEvent::Rotated(r)]
        if r.method == RotationMethod::Staged && r.secret_version == 3));
    let c = given(&history).unwrap();
    assert_eq!(c.secret_version, 3);
    assert_eq!(c.sealed_secret, "sealed-v3");
    assert!(c.pending_rotation.is_none());
    // Committed once: a second commit of it is a stale stage.
    assert_eq!(
        decide(Some(&c), commit(2, false, 4)),
        Err(CredentialError::StageUnknown)
    );
}

#[test]
fn a_failed_probe_needs_force_and_an_expired_stage_cannot_be_committed() {
    let mut history = registered();
    let c = given(&history).unwrap();
    step(&mut history, stage(&c, 1, false, 0));
    let c = given(&history).unwrap();
    assert_eq!(
        decide(Some(&c), commit(1, false, 1)),
        Err(CredentialError::StageProbeFailed)
    );
    assert_eq!(
        decide(Some(&c), commit(1, true, TTL)),
        Err(CredentialError::StageExpired)
    );
    assert!(decide(Some(&c), commit(1, true, 1)).is_ok());
    // The sweep retires it once expired, not before.
    assert!(
        decide(
            Some(&c),
            CredentialCommand::RetireExpired { at: t(TTL - 1) }
        )
        .unwrap()
        .is_empty()
    );
    let events = step(
        &mut history,
        CredentialCommand::RetireExpired { at: t(TTL) },
    );
    assert_eq!(retired_versions(&events), [2]);
    assert!(given(&history).unwrap().pending_rotation.is_none());
}

#[test]
fn rollback_restores_the_previous_secret_once_within_its_window() {
    let mut history = registered();
    let c = given(&history).unwrap();
    step(&mut history, rotate(&c, 0));
    let c = given(&history).unwrap();
    assert_eq!(
        decide(Some(&c), CredentialCommand::Rollback { at: t(WINDOW) }),
        Err(CredentialError::NothingToRollBack)
    );
    let events = step(&mut history, CredentialCommand::Rollback { at: t(1) });
    assert_eq!(retired_versions(&events), [2]);
    let c = given(&history).unwrap();
    assert_eq!(c.secret_version, 1);
    assert_eq!(c.secret_hint, "WXYZ");
    assert_eq!(c.sealed_secret, "c2VhbGVk");
    assert!(c.previous_secret.is_none());
    // No rollback of a rollback.
    assert_eq!(
        decide(Some(&c), CredentialCommand::Rollback { at: t(2) }),
        Err(CredentialError::NothingToRollBack)
    );
    // The next version is new: 2 is never sealed again.
    assert_eq!(c.next_secret_version(), 3);
}

#[test]
fn a_revoked_credential_refuses_rotation_and_keeps_nothing() {
    let mut history = registered();
    let c = given(&history).unwrap();
    step(&mut history, rotate(&c, 0));
    let c = given(&history).unwrap();
    step(&mut history, stage(&c, 1, true, 1));
    step(&mut history, CredentialCommand::Revoke { at: t(2) });
    let c = given(&history).unwrap();
    assert!(c.live_secret_versions().is_empty());
    for command in [
        rotate(&c, 3),
        stage(&c, 2, true, 3),
        commit(1, true, 3),
        CredentialCommand::Rollback { at: t(3) },
    ] {
        assert_eq!(decide(Some(&c), command), Err(CredentialError::Revoked));
    }
    assert!(
        decide(Some(&c), CredentialCommand::RetireExpired { at: t(1000) })
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rotation_events_keep_their_type_strings_and_payloads() {
    let mut history = registered();
    let c = given(&history).unwrap();
    let mut events = step(&mut history, stage(&c, 1, true, 1));
    events.extend(step(&mut history, commit(1, false, 2)));
    let c = given(&history).unwrap();
    events.extend(step(&mut history, rotate(&c, 3)));
    let types: Vec<String> = events
        .iter()
        .map(|e| {
            let new = crate::es::DomainEvent::to_new_event(e).unwrap();
            assert!(new.data["byok_id"].is_string());
            let back: CredentialEvent = serde_json::from_value(
                serde_json::json!({"type": new.event_type, "data": new.data}),
            )
            .unwrap();
            assert_eq!(&back, e);
            new.event_type
        })
        .collect();
    assert_eq!(
        types,
        [
            "byok.rotation_staged",
            "byok.rotated",
            "byok.secret_retired",
            "byok.rotated"
        ]
    );
    let staged = crate::es::DomainEvent::to_new_event(&events[0])
        .unwrap()
        .data;
    assert_eq!(staged["probe_result"]["ok"], true);
    assert!(staged["sealed_secret"].is_string());
    let rotated = crate::es::DomainEvent::to_new_event(&events[1])
        .unwrap()
        .data;
    assert_eq!(rotated["method"], "staged");
    assert_eq!(rotated["previous_version"], 1);
}

// ---- the reference model ----

#[derive(Clone, Debug)]
enum Op {
    Rotate,
    Stage { ok: bool },
    Commit { pending: bool, force: bool },
    Rollback,
    Revoke,
    Sweep,
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Rotate),
        3 => any::<bool>().prop_map(|ok| Op::Stage { ok }),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(pending, force)| Op::Commit { pending, force }),
        2 => Just(Op::Rollback),
        1 => Just(Op::Revoke),
        2 => Just(Op::Sweep),
        3 => (1i64..15).prop_map(Op::Wait),
    ]
}

/// What the credential's secrets should be, kept the obvious way.
#[derive(Debug, Default)]
struct Model {
    revoked: bool,
    current: u32,
    /// (version, rollback until)
    previous: Option<(u32, i64)>,
    /// (stage number, version, probe ok, expires at)
    stage: Option<(u128, u32, bool, i64)>,
    issued: u32,
    retired: BTreeSet<u32>,
}

impl Model {
    fn retire(&mut self, v: u32) {
        assert!(self.retired.insert(v), "version {v} retired twice");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_aggregate_follows_the_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut history = registered();
        let mut model = Model { current: 1, issued: 1, ..Model::default() };
        let mut now = 0i64;
        let mut stages = 0u128;
        let mut retired = BTreeSet::new();
        for op in ops {
            let c = given(&history).unwrap();
            let result = match &op {
                Op::Wait(d) => { now += d; continue; }
                Op::Rotate => decide(Some(&c), rotate(&c, now)),
                Op::Stage { ok } => {
                    stages += 1;
                    decide(Some(&c), stage(&c, stages, *ok, now))
                }
                Op::Commit { pending, force } => {
                    let n = if *pending { stages } else { stages + 1000 };
                    decide(Some(&c), commit(n, *force, now))
                }
                Op::Rollback => decide(Some(&c), CredentialCommand::Rollback { at: t(now) }),
                Op::Revoke => decide(Some(&c), CredentialCommand::Revoke { at: t(now) }),
                Op::Sweep => decide(Some(&c), CredentialCommand::RetireExpired { at: t(now) }),
            };
            // The model's verdict.
            let expected: Result<(), CredentialError> = match &op {
                Op::Revoke => { model.revoked = true; model.previous = None; model.stage = None; Ok(()) }
                Op::Sweep => {
                    if !model.revoked {
                        if let Some((v, until)) = model.previous && until <= now {
                            model.retire(v); model.previous = None;
                        }
                        if let Some((_, v, _, exp)) = model.stage && exp <= now {
                            model.retire(v); model.stage = None;
                        }
                    }
                    Ok(())
                }
                _ if model.revoked => Err(CredentialError::Revoked),
                Op::Rotate => {
                    if let Some((v, _)) = model.previous.take() { model.retire(v); }
                    if let Some((_, v, _, _)) = model.stage.take() { model.retire(v); }
                    model.issued += 1;
                    model.previous = Some((model.current, now + WINDOW));
                    model.current = model.issued;
                    Ok(())
                }
                Op::Stage { ok } => {
                    if let Some((_, v, _, _)) = model.stage.take() { model.retire(v); }
                    model.issued += 1;
                    model.stage = Some((stages, model.issued, *ok, now + TTL));
                    Ok(())
                }
                Op::Commit { pending, force } => match model.stage {
                    Some((n, v, ok, exp)) if *pending && n == stages => {
                        if exp <= now { Err(CredentialError::StageExpired) }
                        else if !ok && !force { Err(CredentialError::StageProbeFailed) }
                        else {
                            if let Some((p, _)) = model.previous.take() { model.retire(p); }
                            model.previous = Some((model.current, now + WINDOW));
                            model.current = v;
                            model.stage = None;
                            Ok(())
                        }
                    }
                    _ => Err(CredentialError::StageUnknown),
                },
                Op::Rollback => match model.previous {
                    Some((v, until)) if until > now => {
                        let from = model.current;
                        model.retire(from);
                        model.current = v;
                        model.previous = None;
                        Ok(())
                    }
                    _ => Err(CredentialError::NothingToRollBack),
                },
                Op::Wait(_) => Ok(()),
            };
            match result {
                Ok(events) => {
                    prop_assert_eq!(expected, Ok(()), "{:?}", op);
                    for v in retired_versions(&events) {
                        prop_assert!(retired.insert(v), "version {} retired twice", v);
                    }
                    history.extend(events);
                }
                Err(error) => prop_assert_eq!(expected, Err(error), "{:?}", op),
            }
            let c = given(&history).unwrap();
            prop_assert_eq!(&retired, &model.retired);
            prop_assert_eq!(c.is_revoked(), model.revoked);
            if !model.revoked {
                prop_assert_eq!(c.secret_version, model.current);
                prop_assert_eq!(c.sealed_secret.clone(), if model.current == 1 {
                    "c2VhbGVk".to_owned()
                } else {
                    format!("sealed-v{}", model.current)
                });
            }
            prop_assert_eq!(c.previous_secret.as_ref().map(|p| p.secret_version), model.previous.map(|p| p.0));
            prop_assert_eq!(c.pending_rotation.as_ref().map(|s| s.secret_version), model.stage.map(|s| s.1));
            // A live version is never one retired, and every version is issued once.
            for v in c.live_secret_versions() {
                prop_assert!(!retired.contains(&v));
            }
            prop_assert_eq!(c.next_secret_version(), model.issued + 1);
        }
        let _ = Credential::apply(None, &history[0]);
    }
}

#[test]
fn a_rotation_forgets_the_health_of_the_old_secret() {
    use crate::domain::health::{Health, HealthCause, HealthChanged};
    let mut history = registered();
    let c = given(&history).unwrap();
    history.push(CredentialEvent::HealthChanged(Box::new(HealthChanged {
        byok_id: c.byok_id.clone(),
        health: Health::Failing,
        previous: Health::Unknown,
        cause: HealthCause::Usage,
        until: None,
        error: Some(ProbeError::InvalidCredentials),
        changed_at: t(1),
    })));
    let c = given(&history).unwrap();
    assert_eq!(c.health, Health::Failing);
    step(&mut history, rotate(&c, 2));
    let c = given(&history).unwrap();
    assert_eq!(c.health, Health::Unknown);
    assert_eq!(c.health_error, None);
    // Evidence from before the rotation is stale now.
    assert_eq!(c.health_changed_at, Some(t(2)));
}
