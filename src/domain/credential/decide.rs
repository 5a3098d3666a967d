//! `decide`: what a command does to a credential, as events. Pure and deterministic; the
//! register profile is validated again here, so a command built any other way than through
//! `prepare_register` cannot put a secret among the settings.
//!
//! Must not import crypto, storage or HTTP.

use chrono::{DateTime, Utc};

use super::command::{CredentialCommand, CredentialPatch, NewCredential};
use super::error::CredentialError;
use super::event::{
    Bound, CredentialEvent, QuotaExceededEvent, Registered, Tested, Unbound, Updated,
};
use super::validate::{
    validate_alias, validate_label, validate_model_map, validate_models, validate_weight,
};
use super::{Binding, Credential, CredentialProfile, CredentialState, MAX_HINT_LEN, rotation};
use crate::domain::providers;
use crate::domain::usage::{Exceedance, Quota};

/// Decides what a command does to the credential, as events. Pure.
pub fn decide(
    state: Option<&Credential>,
    command: CredentialCommand,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    use CredentialCommand as C;
    match (state, command) {
        (Some(_), C::Register(_)) => Err(CredentialError::AlreadyExists),
        (None, C::Register(new)) => decide_register(*new),
        (None, _) => Err(CredentialError::NotFound),
        // Quotas: an exceedance is a fact about usage, recorded only while it can matter.
        (Some(c), C::MarkExceeded { exceeded, at }) => Ok(decide_exceeded(c, exceeded, at)),
        // Retiring what expired is housekeeping, a no-op on a revoked credential.
        (Some(c), C::RetireExpired { at }) => Ok(rotation::decide_sweep(c, at)),
        // Health: evidence about a revoked credential changes nothing.
        (Some(c), C::ObserveHealth { evidence, now }) => Ok(decide_health(c, &evidence, now)),
        // Revoking twice is a no-op: the first revocation stands.
        (Some(c), C::Revoke { .. }) if c.is_revoked() => Ok(vec![]),
        (Some(c), _) if c.is_revoked() => Err(CredentialError::Revoked),
        (Some(c), C::Revoke { at }) => Ok(vec![CredentialEvent::Revoked {
            byok_id: c.byok_id.clone(),
            revoked_at: at,
        }]),
        (Some(c), C::Enable { .. }) if c.state == CredentialState::Active => Ok(vec![]),
        (Some(c), C::Enable { at }) => Ok(vec![CredentialEvent::Enabled {
            byok_id: c.byok_id.clone(),
            enabled_at: at,
        }]),
        (Some(c), C::Disable { .. }) if c.state == CredentialState::Disabled => Ok(vec![]),
        (Some(c), C::Disable { at }) => Ok(vec![CredentialEvent::Disabled {
            byok_id: c.byok_id.clone(),
            disabled_at: at,
        }]),
        (
            Some(c),
            C::Update {
                patch,
                at,
                may_move_address,
            },
        ) => decide_update(c, *patch, at, may_move_address),
        // Bindings.
        (Some(c), C::Bind { binding, at }) => decide_bind(c, binding, at),
        (Some(c), C::Unbind { selector, at }) => decide_unbind(c, selector, at),
        (
            Some(c),
            C::SetQuota {
                quota,
                exceeded,
                at,
            },
        ) => Ok(decide_quota(c, quota, exceeded, at)),
        // Probes: a result about a secret that was replaced meanwhile says nothing of this one.
        (Some(c), C::RecordTest { result }) if result.secret_version != c.secret_version => {
            Ok(vec![])
        }
        (Some(c), C::RecordTest { result }) => {
            Ok(vec![CredentialEvent::Tested(Box::new(Tested {
                byok_id: c.byok_id.clone(),
                result,
            }))])
        }
        // Rotation.
        (
            Some(c),
            C::Rotate {
                secret,
                at,
                rollback_until,
            },
        ) => rotation::decide_rotate(c, secret, at, rollback_until),
        (
            Some(c),
            C::StageRotation {
                stage_id,
                secret,
                probe_result,
                expires_at,
                at,
            },
        ) => rotation::decide_stage(c, stage_id, secret, probe_result, expires_at, at),
        (
            Some(c),
            C::CommitRotation {
                stage_id,
                force,
                at,
                rollback_until,
            },
        ) => rotation::decide_commit(c, &stage_id, force, at, rollback_until),
        (Some(c), C::Rollback { at }) => rotation::decide_rollback(c, at),
    }
}

/// `byok.health_changed` when the evidence changes the credential's health.
fn decide_health(
    c: &Credential,
    evidence: &crate::domain::health::Evidence,
    now: DateTime<Utc>,
) -> Vec<CredentialEvent> {
    use crate::domain::health::{HealthChanged, assess};
    if c.is_revoked() {
        return vec![];
    }
    assess(c.current_health(), evidence, now)
        .map(|change| {
            CredentialEvent::HealthChanged(Box::new(HealthChanged::new(c.byok_id.clone(), change)))
        })
        .into_iter()
        .collect()
}

/// `byok.quota_set` when the quota changes or an exceedance is to be cleared; then
/// `byok.quota_exceeded` when the new quota is reached already.
fn decide_quota(
    c: &Credential,
    quota: Option<Quota>,
    exceeded: Option<Exceedance>,
    at: DateTime<Utc>,
) -> Vec<CredentialEvent> {
    let mut events = Vec::new();
    if quota != c.quota || c.quota_exceeded.is_some() {
        events.push(CredentialEvent::QuotaSet {
            byok_id: c.byok_id.clone(),
            quota: quota.clone(),
            set_at: at,
        });
    }
    if let (Some(quota), Some(exceeded)) = (&quota, exceeded)
        && exceeded.window == quota.window
    {
        events.push(exceeded_event(c, exceeded, at));
    }
    events
}

fn decide_exceeded(
    c: &Credential,
    exceeded: Exceedance,
    at: DateTime<Utc>,
) -> Vec<CredentialEvent> {
    let current = c
        .quota
        .as_ref()
        .is_some_and(|q| q.window == exceeded.window);
    let covered = c.quota_exceeded.as_ref().is_some_and(|e| e.covers(at));
    if c.is_revoked() || !current || covered {
        return vec![];
    }
    vec![exceeded_event(c, exceeded, at)]
}

fn exceeded_event(c: &Credential, e: Exceedance, at: DateTime<Utc>) -> CredentialEvent {
    CredentialEvent::QuotaExceeded(Box::new(QuotaExceededEvent {
        byok_id: c.byok_id.clone(),
        window: e.window,
        window_start: e.window_start,
        until: e.until,
        spend_micros: e.totals.spend_micros,
        calls: e.totals.calls,
        exceeded_at: at,
    }))
}

/// Binding what the credential already has changes nothing: the binding is there.
fn decide_bind(
    c: &Credential,
    binding: Binding,
    at: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    let binding = binding.validated()?;
    if c.profile.bindings.contains(&binding) {
        return Ok(vec![]);
    }
    Ok(vec![CredentialEvent::Bound(Box::new(Bound {
        byok_id: c.byok_id.clone(),
        binding,
        bound_at: at,
    }))])
}

/// Removes every binding the selector selects; when none does, nothing changes (the state asked
/// for, no such binding, already holds: docs/adr/0021).
fn decide_unbind(
    c: &Credential,
    selector: Binding,
    at: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    if selector.model.is_some() {
        return Err(CredentialError::invalid(
            "model",
            "unbind selects by capability and module; it removes their bindings whatever the model",
        ));
    }
    let selector = selector.validated()?;
    let removed: Vec<Binding> = c
        .profile
        .bindings
        .iter()
        .filter(|b| selector.selects(b))
        .cloned()
        .collect();
    if removed.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![CredentialEvent::Unbound(Box::new(Unbound {
        byok_id: c.byok_id.clone(),
        binding: selector,
        removed,
        unbound_at: at,
    }))])
}

fn decide_register(new: NewCredential) -> Result<Vec<CredentialEvent>, CredentialError> {
    let profile = new.profile.validated()?;
    if new.secret_hint.chars().count() > MAX_HINT_LEN {
        return Err(CredentialError::invalid(
            "secret_hint",
            format!("a secret hint is at most {MAX_HINT_LEN} characters"),
        ));
    }
    let byok_id = new.byok_id.clone();
    let mut events = vec![CredentialEvent::Registered(Box::new(Registered {
        byok_id: new.byok_id,
        account_id: new.account_id,
        profile,
        sealed_secret: new.sealed_secret,
        secret_hint: new.secret_hint,
        created_at: new.at,
    }))];
    // Only a probe of the secret being registered belongs here.
    if let Some(result) = new
        .tested
        .filter(|r| r.secret_version == super::FIRST_SECRET_VERSION)
    {
        events.push(CredentialEvent::Tested(Box::new(Tested {
            byok_id,
            result,
        })));
    }
    Ok(events)
}

fn decide_update(
    c: &Credential,
    patch: CredentialPatch,
    at: DateTime<Utc>,
    may_move_address: bool,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    let mut changes = Updated::new(c.byok_id.clone(), at);
    // Every field a patch touches is the profile's.
    let c = &c.profile;
    if let Some(alias) = patch.alias {
        let alias = validate_alias(&alias)?;
        changes.alias = (alias != c.alias).then_some(alias);
    }
    // The provider is looked up only for the fields that depend on it, so a credential whose
    // provider left the catalog can still be relabelled, reweighted or disabled.
    let provider = || providers::provider(&c.provider);
    if !patch.credentials.is_empty() {
        for (name, value) in provider()?.validate_settings_patch(&patch.credentials)? {
            if c.settings.get(&name) != value.as_ref() {
                changes.settings.insert(name, value);
            }
        }
    }
    if let Some(base_url) = patch.base_url {
        let base_url = provider()?.validate_base_url(base_url.as_deref())?;
        changes.base_url = (base_url != c.base_url).then_some(base_url);
    }
    if let Some(region) = patch.declared_region {
        let provider = provider()?;
        let region = provider.validate_declared_region(region.as_deref())?;
        if region != c.declared_region {
            let residency = provider.residency_for(region.as_deref());
            changes.residency = (residency != c.residency).then_some(residency);
            changes.declared_region = Some(region);
        }
    }
    if let Some(label) = patch.label {
        let label = validate_label(label.as_deref())?;
        changes.label = (label != c.label).then_some(label);
    }
    if let Some(weight) = patch.weight {
        let weight = validate_weight(Some(weight))?;
        changes.weight = (weight != c.weight).then_some(weight);
    }
    if let Some(models) = patch.models {
        let models = validate_models("models", models)?;
        changes.models = (models != c.models).then_some(models);
    }
    if let Some(models) = patch.blacklisted_models {
        let models = validate_models("blacklisted_models", models)?;
        changes.blacklisted_models = (models != c.blacklisted_models).then_some(models);
    }
    // The map is checked against the deny-list the update leaves, whichever of the two it
    // changes: no mapped model may be denied.
    let blacklisted = changes
        .blacklisted_models
        .as_ref()
        .unwrap_or(&c.blacklisted_models);
    match patch.model_map {
        Some(map) => {
            let map = validate_model_map(map, blacklisted)?;
            changes.model_map = (map != c.model_map).then_some(map);
        }
        None if changes.blacklisted_models.is_some() => {
            if let Some(denied) = c
                .model_map
                .keys()
                .find(|k| blacklisted.binary_search(k).is_ok())
            {
                return Err(CredentialError::invalid(
                    "blacklisted_models",
                    format!("{denied} is in model_map; remove it from the map to deny it"),
                ));
            }
        }
        None => {}
    }
    if !may_move_address {
        refuse_moving_address(c, &changes)?;
    }
    if changes.changes_nothing() {
        return Ok(vec![]);
    }
    Ok(vec![CredentialEvent::Updated(Box::new(changes))])
}

/// Refuses an update that points the credential at a new address (a `base_url`, azure's
/// `endpoint`), where test and resolve would send its secret, unless its caller may (docs/adr/0036).
/// Going back to the provider's default address (`base_url: null`) moves nothing anywhere new.
fn refuse_moving_address(c: &CredentialProfile, changes: &Updated) -> Result<(), CredentialError> {
    let provider = || providers::provider(&c.provider);
    let param = if matches!(changes.base_url, Some(Some(_))) {
        "base_url".to_owned()
    } else if let Some(name) = changes.settings.iter().find_map(|(name, value)| {
        (value.is_some() && provider().is_ok_and(|p| p.is_address_field(name))).then_some(name)
    }) {
        format!("credentials.{name}")
    } else {
        return Ok(());
    };
    let secrets = provider()
        .map(|p| p.secret_field_names())
        .unwrap_or_default();
    Err(CredentialError::AddressNeedsProof {
        message: format!(
            "changing {param} changes where this credential's secret is sent: send the current \
             secret again in credentials ({secrets}) in the same request, or use an API key \
             with the admin scope"
        ),
        param,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::testing::*;
    use crate::domain::credential::{
        Binding, DEFAULT_WEIGHT, RegisterRequest, Registration, prepare_register,
    };

    // ---- register ----

    #[test]
    fn register_records_the_credential_without_its_secret() {
        let events = registered();
        assert_eq!(events.len(), 1);
        let json = serde_json::to_string(&events).unwrap();
        assert!(!json.contains("0123456789abcdef"), "{json}");
        assert!(json.contains("\"type\":\"byok.registered\""));

        let c = given(&events).unwrap();
        assert_eq!(c.byok_id, byok());
        assert_eq!(c.account_id, account());
        assert_eq!(c.profile.provider, "openai");
        assert_eq!(c.profile.alias, "prod-main");
        assert_eq!(c.profile.label.as_deref(), Some("Production"));
        assert_eq!(c.state, CredentialState::Active);
        assert_eq!(c.secret_version, 1);
        assert_eq!(c.secret_hint, "WXYZ");
        assert_eq!(c.sealed_secret, "c2VhbGVk");
        assert_eq!(c.profile.residency, "global");
        assert_eq!(c.profile.models, ["gpt-4o", "gpt-4o-mini"]);
        assert_eq!(c.profile.weight, DEFAULT_WEIGHT);
        assert_eq!(
            c.profile.bindings,
            [Binding {
                capability: Some("chat".into()),
                module: None,
                model: None
            }]
        );
        assert!(c.profile.settings.is_empty());
        assert_eq!((c.created_at, c.updated_at), (t(0), t(0)));
    }

    #[test]
    fn register_keeps_non_secret_fields_in_the_clear() {
        let events = registered_with(RegisterRequest {
            api_key: None,
            credentials: fields(&[
                ("api_key", SECRET),
                ("endpoint", "https://res.openai.azure.com/"),
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o"),
            ]),
            ..request("azure")
        });
        let c = given(&events).unwrap();
        assert_eq!(
            c.profile.settings["endpoint"],
            "https://res.openai.azure.com"
        );
        assert!(!c.profile.settings.contains_key("api_key"));
    }

    #[test]
    fn register_derives_residency() {
        let eu = given(&registered_with(request("mistral"))).unwrap();
        assert_eq!(eu.profile.residency, "eu");
        let india = given(&registered_with(request("sarvam"))).unwrap();
        assert_eq!(india.profile.residency, "india");
        let own = given(&registered_with(RegisterRequest {
            api_key: None,
            base_url: Some("http://192.168.1.20:8000/v1/".into()),
            declared_region: Some("eu-west-1".into()),
            ..request("self_hosted")
        }))
        .unwrap();
        assert_eq!(own.profile.residency, "eu-west-1");
        assert_eq!(
            own.profile.base_url.as_deref(),
            Some("http://192.168.1.20:8000/v1")
        );
        assert_eq!(own.secret_hint, "");
        let declared = given(&registered_with(RegisterRequest {
            declared_region: Some("eu".into()),
            ..request("openai")
        }))
        .unwrap();
        assert_eq!(declared.profile.residency, "eu");
    }

    #[test]
    fn register_on_an_existing_stream_already_exists() {
        let c = given(&registered()).unwrap();
        let again = register_command(prepare_register(request("openai")).unwrap());
        assert_eq!(decide(Some(&c), again), Err(CredentialError::AlreadyExists));
    }

    #[test]
    fn register_refuses_a_hint_that_could_be_a_secret() {
        let Registration { profile, .. } = prepare_register(request("openai")).unwrap();
        let command = CredentialCommand::Register(Box::new(NewCredential {
            byok_id: byok(),
            account_id: account(),
            profile,
            sealed_secret: "x".into(),
            secret_hint: SECRET.into(),
            at: t(0),
            tested: None,
        }));
        assert_eq!(param_of(decide(None, command)), "secret_hint");
    }

    #[test]
    fn register_refuses_a_secret_smuggled_into_settings() {
        let Registration { mut profile, .. } = prepare_register(request("openai")).unwrap();
        profile.settings.insert("api_key".into(), SECRET.into());
        let command = CredentialCommand::Register(Box::new(NewCredential {
            byok_id: byok(),
            account_id: account(),
            profile,
            sealed_secret: "x".into(),
            secret_hint: String::new(),
            at: t(0),
            tested: None,
        }));
        assert_eq!(param_of(decide(None, command)), "credentials.api_key");
    }

    // ---- missing stream ----

    #[test]
    fn anything_but_register_on_a_missing_stream_is_not_found() {
        for command in [
            CredentialCommand::Enable { at: t(1) },
            CredentialCommand::Disable { at: t(1) },
            CredentialCommand::Revoke { at: t(1) },
            patch(|p| p.weight = Some(5)),
        ] {
            assert_eq!(decide(None, command), Err(CredentialError::NotFound));
        }
    }

    // ---- enable / disable / revoke ----

    fn revoked() -> Vec<CredentialEvent> {
        let mut events = registered();
        let c = given(&events).unwrap();
        events.extend(decide(Some(&c), CredentialCommand::Revoke { at: t(10) }).unwrap());
        events
    }

    #[test]
    fn disable_then_enable() {
        let history = registered();
        let c = given(&history).unwrap();
        let disabled = decide(Some(&c), CredentialCommand::Disable { at: t(5) }).unwrap();
        assert_eq!(
            disabled,
            [CredentialEvent::Disabled {
                byok_id: byok(),
                disabled_at: t(5)
            }]
        );
        let mut history = history;
        history.extend(disabled);
        let c = given(&history).unwrap();
        assert_eq!(c.state, CredentialState::Disabled);
        assert_eq!(c.updated_at, t(5));
        let enabled = decide(Some(&c), CredentialCommand::Enable { at: t(6) }).unwrap();
        assert_eq!(enabled.len(), 1);
        let c = then(history, enabled);
        assert_eq!(c.state, CredentialState::Active);
    }

    #[test]
    fn enabling_an_active_or_disabling_a_disabled_credential_changes_nothing() {
        let history = registered();
        let c = given(&history).unwrap();
        assert_eq!(
            decide(Some(&c), CredentialCommand::Enable { at: t(1) }),
            Ok(vec![])
        );
        let disabled = decide(Some(&c), CredentialCommand::Disable { at: t(1) }).unwrap();
        let c = then(history, disabled);
        assert_eq!(
            decide(Some(&c), CredentialCommand::Disable { at: t(2) }),
            Ok(vec![])
        );
    }

    #[test]
    fn revoke_is_final_and_idempotent() {
        let history = revoked();
        let c = given(&history).unwrap();
        assert_eq!(c.state, CredentialState::Revoked);
        assert_eq!(
            decide(Some(&c), CredentialCommand::Revoke { at: t(20) }),
            Ok(vec![])
        );
        for command in [
            CredentialCommand::Enable { at: t(20) },
            CredentialCommand::Disable { at: t(20) },
            patch(|p| p.label = Some(Some("x".into()))),
            patch(|_| {}),
        ] {
            assert_eq!(decide(Some(&c), command), Err(CredentialError::Revoked));
        }
        // A revoked credential can never come back, even if a log says so.
        let c = then(
            history,
            vec![CredentialEvent::Enabled {
                byok_id: byok(),
                enabled_at: t(30),
            }],
        );
        assert_eq!(c.state, CredentialState::Revoked);
    }

    #[test]
    fn a_disabled_credential_can_be_revoked_and_updated() {
        let history = registered();
        let c = given(&history).unwrap();
        let disabled = decide(Some(&c), CredentialCommand::Disable { at: t(1) }).unwrap();
        let c = then(history, disabled);
        assert_eq!(
            decide(Some(&c), patch(|p| p.weight = Some(7)))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            decide(Some(&c), CredentialCommand::Revoke { at: t(2) })
                .unwrap()
                .len(),
            1
        );
    }

    // ---- update ----

    fn only_update(events: Vec<CredentialEvent>) -> Updated {
        match events.as_slice() {
            [CredentialEvent::Updated(u)] => (**u).clone(),
            other => panic!("expected one byok.updated, got {other:?}"),
        }
    }

    /// The one `byok.updated` a patch decides on `c`.
    fn update_of(c: &Credential, f: impl FnOnce(&mut CredentialPatch)) -> Updated {
        only_update(decide(Some(c), patch(f)).unwrap())
    }

    #[test]
    fn update_records_only_what_changed() {
        let history = registered();
        let c = given(&history).unwrap();
        let events = decide(
            Some(&c),
            patch(|p| {
                p.label = Some(Some("Production".into())); // unchanged
                p.models = Some(vec!["gpt-4o".into(), "gpt-4o-mini".into()]); // unchanged
                p.weight = Some(250);
                p.alias = Some("prod-eu".into());
            }),
        )
        .unwrap();
        let update = only_update(events.clone());
        assert_eq!(update.weight, Some(250));
        assert_eq!(update.alias.as_deref(), Some("prod-eu"));
        assert_eq!(update.label, None);
        assert_eq!(update.models, None);
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["type"], "byok.updated");
        assert_eq!(
            json["data"],
            serde_json::json!({"byok_id": byok().as_str(), "alias": "prod-eu", "weight": 250,
                "updated_at": "2023-11-14T22:14:20Z"})
        );
        let c = then(history, events);
        assert_eq!(
            (c.profile.weight, c.profile.alias.as_str()),
            (250, "prod-eu")
        );
        assert_eq!(c.updated_at, t(60));
        assert_eq!(c.created_at, t(0));
    }

    #[test]
    fn an_update_that_changes_nothing_decides_nothing() {
        let c = given(&registered()).unwrap();
        assert_eq!(decide(Some(&c), patch(|_| {})), Ok(vec![]));
        let same = patch(|p| {
            p.alias = Some("prod-main".into());
            p.label = Some(Some(" Production ".into()));
            p.base_url = Some(None);
            p.declared_region = Some(None);
            p.models = Some(vec!["gpt-4o-mini".into(), "gpt-4o".into()]);
            p.blacklisted_models = Some(vec![]);
            p.weight = Some(DEFAULT_WEIGHT);
        });
        assert_eq!(decide(Some(&c), same), Ok(vec![]));
    }

    #[test]
    fn update_clears_optional_fields() {
        let history = registered_with(RegisterRequest {
            label: Some("Old".into()),
            base_url: Some("https://eu.api.openai.com/v1".into()),
            declared_region: Some("eu".into()),
            ..request("openai")
        });
        let c = given(&history).unwrap();
        assert_eq!(c.profile.residency, "eu");
        let events = decide(
            Some(&c),
            patch(|p| {
                p.label = Some(None);
                p.base_url = Some(None);
                p.declared_region = Some(None);
            }),
        )
        .unwrap();
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["data"]["label"], serde_json::Value::Null);
        assert!(json["data"].as_object().unwrap().contains_key("label"));
        assert_eq!(json["data"]["residency"], "global");
        // Cleared (null) and unchanged (absent) survive a round trip through the log.
        let back: CredentialEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[0]);
        let c = then(history, events);
        assert_eq!(c.profile.label, None);
        assert_eq!(c.profile.base_url, None);
        assert_eq!(c.profile.declared_region, None);
        assert_eq!(c.profile.residency, "global");
    }

    #[test]
    fn update_of_declared_region_moves_residency() {
        let history = registered_with(request("mistral"));
        let c = given(&history).unwrap();
        // Declaring what the provider already is changes the declaration, not the residency.
        let same = update_of(&c, |p| p.declared_region = Some(Some("eu".into())));
        assert_eq!(same.declared_region, Some(Some("eu".into())));
        assert_eq!(same.residency, None);
        let moved = decide(
            Some(&c),
            patch(|p| p.declared_region = Some(Some("us".into()))),
        )
        .unwrap();
        let c = then(history, moved);
        assert_eq!(c.profile.residency, "us");
    }

    #[test]
    fn update_changes_non_secret_credential_fields_but_never_secrets() {
        let history = registered_with(RegisterRequest {
            credentials: [("organization".to_owned(), "org-1".to_owned())].into(),
            ..request("openai")
        });
        let c = given(&history).unwrap();
        let events = decide(
            Some(&c),
            patch(|p| {
                p.credentials = [
                    ("organization".to_owned(), "org-1".to_owned()), // unchanged
                    ("project".to_owned(), "proj_2".to_owned()),
                ]
                .into();
            }),
        )
        .unwrap();
        let update = only_update(events.clone());
        assert_eq!(
            update.settings,
            [("project".to_owned(), Some("proj_2".to_owned()))].into()
        );
        let c = then(history.clone(), events);
        assert_eq!(c.profile.settings["project"], "proj_2");
        let removed = decide(
            Some(&c),
            patch(|p| p.credentials = [("organization".to_owned(), String::new())].into()),
        )
        .unwrap();
        let c = then(history, removed);
        assert!(!c.profile.settings.contains_key("organization"));
        assert_eq!(
            param_of(decide(
                Some(&c),
                patch(|p| p.credentials = [("api_key".to_owned(), SECRET.to_owned())].into())
            )),
            "credentials.api_key"
        );
    }

    #[test]
    fn without_the_right_an_update_cannot_move_where_the_secret_is_sent() {
        let openai = given(&registered()).unwrap();
        let azure = given(&registered_with(RegisterRequest {
            credentials: fields(&[
                ("endpoint", "https://res.openai.azure.com"),
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o"),
            ]),
            ..request("azure")
        }))
        .unwrap();
        let unproven = |f: fn(&mut CredentialPatch)| {
            let CredentialCommand::Update { patch, at, .. } = patch(f) else {
                unreachable!("patch builds an update")
            };
            CredentialCommand::Update {
                patch,
                at,
                may_move_address: false,
            }
        };
        let refused = |c: &Credential, command| match decide(Some(c), command) {
            Err(CredentialError::AddressNeedsProof { param, message }) => {
                assert!(message.contains("admin scope"), "{message}");
                param
            }
            other => panic!("expected AddressNeedsProof, got {other:?}"),
        };
        let elsewhere = |p: &mut CredentialPatch| {
            p.base_url = Some(Some("https://collector.example.com/v1".into()));
        };
        assert_eq!(refused(&openai, unproven(elsewhere)), "base_url");
        let endpoint = |p: &mut CredentialPatch| {
            p.credentials = fields(&[("endpoint", "https://other.openai.azure.com")]);
        };
        assert_eq!(refused(&azure, unproven(endpoint)), "credentials.endpoint");
        // Everything else, the same address again, and back to the provider's own address.
        let weight = decide(Some(&openai), unproven(|p| p.weight = Some(7))).unwrap();
        assert_eq!(only_update(weight).weight, Some(7));
        let same = |p: &mut CredentialPatch| {
            p.credentials = fields(&[("endpoint", "https://res.openai.azure.com/")]);
        };
        assert!(decide(Some(&azure), unproven(same)).unwrap().is_empty());
        let moved = then(
            registered(),
            decide(Some(&openai), patch(elsewhere)).unwrap(),
        );
        let back = decide(Some(&moved), unproven(|p| p.base_url = Some(None))).unwrap();
        assert_eq!(only_update(back).base_url, Some(None));
    }

    #[test]
    fn update_validates_what_it_sets() {
        let openai = given(&registered()).unwrap();
        let own = given(&registered_with(RegisterRequest {
            api_key: None,
            base_url: Some("http://localhost:8000/v1".into()),
            declared_region: Some("eu".into()),
            ..request("self_hosted")
        }))
        .unwrap();
        let azure = given(&registered_with(RegisterRequest {
            credentials: fields(&[
                ("endpoint", "https://res.openai.azure.com"),
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o"),
            ]),
            ..request("azure")
        }))
        .unwrap();
        let cases: Vec<(&Credential, CredentialCommand, &str)> = vec![
            (
                &openai,
                patch(|p| p.alias = Some("Bad Alias".into())),
                "alias",
            ),
            (
                &openai,
                patch(|p| p.label = Some(Some("x".repeat(129)))),
                "label",
            ),
            (&openai, patch(|p| p.weight = Some(0)), "weight"),
            (&openai, patch(|p| p.weight = Some(1001)), "weight"),
            (
                &openai,
                patch(|p| p.models = Some(vec!["ok".into(), " ".into()])),
                "models[1]",
            ),
            (
                &openai,
                patch(|p| p.blacklisted_models = Some(vec!["".into()])),
                "blacklisted_models[0]",
            ),
            (
                &openai,
                patch(|p| p.base_url = Some(Some("http://example.com".into()))),
                "base_url",
            ),
            (
                &openai,
                patch(|p| p.declared_region = Some(Some("EU".into()))),
                "declared_region",
            ),
            (
                &azure,
                patch(|p| p.base_url = Some(Some("https://example.com".into()))),
                "base_url",
            ),
            (
                &azure,
                patch(|p| p.credentials = [("endpoint".to_owned(), "ftp://x".to_owned())].into()),
                "credentials.endpoint",
            ),
            (&own, patch(|p| p.base_url = Some(None)), "base_url"),
            (
                &own,
                patch(|p| p.declared_region = Some(None)),
                "declared_region",
            ),
        ];
        for (c, command, expected) in cases {
            let debug = format!("{command:?}");
            assert_eq!(param_of(decide(Some(c), command)), expected, "{debug}");
        }
        // self_hosted can move to another local server.
        let moved = update_of(&own, |p| {
            p.base_url = Some(Some("http://[::1]:9000/v1/".into()))
        });
        assert_eq!(moved.base_url, Some(Some("http://[::1]:9000/v1".into())));
    }

    // ---- bind / unbind ----

    fn binding(capability: Option<&str>, module: Option<&str>, model: Option<&str>) -> Binding {
        Binding {
            capability: capability.map(Into::into),
            module: module.map(Into::into),
            model: model.map(Into::into),
        }
    }

    fn bind(b: Binding) -> CredentialCommand {
        CredentialCommand::Bind {
            binding: b,
            at: t(30),
        }
    }

    fn unbind(capability: Option<&str>, module: Option<&str>) -> CredentialCommand {
        CredentialCommand::Unbind {
            selector: binding(capability, module, None),
            at: t(40),
        }
    }

    #[test]
    fn bind_adds_a_binding_and_binding_it_again_changes_nothing() {
        let history = registered();
        let c = given(&history).unwrap();
        let new = binding(Some("chat"), Some("support"), Some("gpt-4o"));
        let events = decide(Some(&c), bind(new.clone())).unwrap();
        assert_eq!(
            events,
            [CredentialEvent::Bound(Box::new(Bound {
                byok_id: byok(),
                binding: new.clone(),
                bound_at: t(30),
            }))]
        );
        let c = then(history, events);
        assert_eq!(
            c.profile.bindings,
            [binding(Some("chat"), None, None), new.clone()]
        );
        assert_eq!(c.updated_at, t(30));
        assert_eq!(decide(Some(&c), bind(new)), Ok(vec![]));
    }

    #[test]
    fn bind_validates_the_binding() {
        let c = given(&registered()).unwrap();
        let long = "x".repeat(crate::domain::credential::MAX_NAME_LEN + 1);
        for (b, expected) in [
            (binding(None, None, Some("gpt-4o")), "capability"),
            (binding(None, None, None), "capability"),
            (binding(Some("two words"), None, None), "capability"),
            (binding(Some("chat"), Some(""), None), "module"),
            (binding(Some("chat"), None, Some(&long)), "model"),
        ] {
            assert_eq!(param_of(decide(Some(&c), bind(b))), expected);
        }
    }

    #[test]
    fn unbind_removes_every_binding_of_the_capability_and_module_whatever_the_model() {
        let mut history = registered();
        for b in [
            binding(Some("chat"), None, Some("gpt-4o")),
            binding(Some("chat"), Some("support"), None),
            binding(None, Some("support"), None),
        ] {
            let c = given(&history).unwrap();
            history.extend(decide(Some(&c), bind(b)).unwrap());
        }
        let c = given(&history).unwrap();
        let events = decide(Some(&c), unbind(Some("chat"), None)).unwrap();
        assert_eq!(
            events,
            [CredentialEvent::Unbound(Box::new(Unbound {
                byok_id: byok(),
                binding: binding(Some("chat"), None, None),
                removed: vec![
                    binding(Some("chat"), None, None),
                    binding(Some("chat"), None, Some("gpt-4o")),
                ],
                unbound_at: t(40),
            }))]
        );
        let c = then(history, events);
        assert_eq!(
            c.profile.bindings,
            [
                binding(None, Some("support"), None),
                binding(Some("chat"), Some("support"), None),
            ]
        );
        // Nothing left to remove: a no-op, not an error (docs/adr/0021).
        assert_eq!(decide(Some(&c), unbind(Some("chat"), None)), Ok(vec![]));
        assert_eq!(param_of(decide(Some(&c), unbind(None, None))), "capability");
        let with_model = CredentialCommand::Unbind {
            selector: binding(Some("chat"), None, Some("gpt-4o")),
            at: t(41),
        };
        assert_eq!(param_of(decide(Some(&c), with_model)), "model");
    }

    #[test]
    fn bindings_are_refused_on_a_revoked_or_missing_credential() {
        let c = given(&revoked()).unwrap();
        for command in [
            bind(binding(Some("embed"), None, None)),
            unbind(Some("chat"), None),
        ] {
            assert_eq!(decide(Some(&c), command), Err(CredentialError::Revoked));
        }
        assert_eq!(
            decide(None, unbind(Some("chat"), None)),
            Err(CredentialError::NotFound)
        );
    }

    // ---- model map ----

    fn map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        fields(pairs)
    }

    #[test]
    fn register_keeps_the_model_map_and_update_replaces_or_clears_it() {
        let history = registered_with(RegisterRequest {
            model_map: map(&[("gpt-4o", "prod-gpt4o-eu")]),
            ..request("openai")
        });
        let c = given(&history).unwrap();
        assert_eq!(c.profile.model_map, map(&[("gpt-4o", "prod-gpt4o-eu")]));
        let replaced = update_of(&c, |p| p.model_map = Some(map(&[("o1", "o1-ft:acme")])));
        assert_eq!(replaced.model_map, Some(map(&[("o1", "o1-ft:acme")])));
        let cleared = update_of(&c, |p| p.model_map = Some(map(&[])));
        assert_eq!(cleared.model_map, Some(map(&[])));
        let same = patch(|p| p.model_map = Some(map(&[("gpt-4o", "prod-gpt4o-eu")])));
        assert_eq!(decide(Some(&c), same), Ok(vec![]));
        let events = decide(Some(&c), patch(|p| p.model_map = Some(map(&[])))).unwrap();
        assert!(then(history, events).profile.model_map.is_empty());
    }

    #[test]
    fn a_mapped_model_cannot_be_denied() {
        let refused = prepare_register(RegisterRequest {
            blacklisted_models: vec!["gpt-4o".into()],
            model_map: map(&[("gpt-4o", "x")]),
            ..request("openai")
        });
        assert_eq!(param_of(refused), "model_map.gpt-4o");
        let c = given(&registered_with(RegisterRequest {
            model_map: map(&[("gpt-4o", "x")]),
            ..request("openai")
        }))
        .unwrap();
        let deny = patch(|p| p.blacklisted_models = Some(vec!["gpt-4o".into()]));
        assert_eq!(param_of(decide(Some(&c), deny)), "blacklisted_models");
        // Denying it and unmapping it in one update is fine.
        let both = update_of(&c, |p| {
            p.blacklisted_models = Some(vec!["gpt-4o".into()]);
            p.model_map = Some(map(&[]));
        });
        assert_eq!(both.blacklisted_models, Some(vec!["gpt-4o".to_owned()]));
    }

    #[test]
    fn the_model_map_is_bounded() {
        let c = given(&registered()).unwrap();
        let too_many = (0..=crate::domain::credential::MAX_MODEL_MAP)
            .map(|i| (format!("m{i}"), "x".to_owned()))
            .collect();
        let long = "x".repeat(crate::domain::credential::MAX_PROVIDER_MODEL_LEN + 1);
        for (m, expected) in [
            (too_many, "model_map"),
            (map(&[("two words", "x")]), "model_map"),
            (map(&[("gpt-4o", "")]), "model_map.gpt-4o"),
            (map(&[("gpt-4o", "a b")]), "model_map.gpt-4o"),
            (map(&[("gpt-4o", &long)]), "model_map.gpt-4o"),
        ] {
            let command = patch(|p| p.model_map = Some(m));
            assert_eq!(param_of(decide(Some(&c), command)), expected);
        }
    }

    // Quotas.

    fn quota(calls: u64) -> Quota {
        Quota::new(None, Some(calls), crate::domain::usage::QuotaWindow::Mtd).unwrap()
    }

    fn exceedance(until: i64) -> Exceedance {
        Exceedance {
            window: crate::domain::usage::QuotaWindow::Mtd,
            window_start: t(0),
            until: t(until),
            totals: crate::domain::usage::Totals {
                spend_micros: 0,
                calls: 10,
            },
        }
    }

    fn set(
        history: &[CredentialEvent],
        q: Option<Quota>,
        e: Option<Exceedance>,
    ) -> Vec<CredentialEvent> {
        let command = CredentialCommand::SetQuota {
            quota: q,
            exceeded: e,
            at: t(5),
        };
        decide(given(history).as_ref(), command).unwrap()
    }

    #[test]
    fn a_quota_is_set_once_and_an_exceedance_is_recorded_once_while_it_covers() {
        let history = registered();
        let events = set(&history, Some(quota(10)), None);
        assert!(matches!(&events[..], [CredentialEvent::QuotaSet { .. }]));
        let history = [history, events].concat();
        // The same quota again changes nothing.
        assert!(set(&history, Some(quota(10)), None).is_empty());
        let mark = |history: &[CredentialEvent], at: i64| {
            let command = CredentialCommand::MarkExceeded {
                exceeded: exceedance(100),
                at: t(at),
            };
            decide(given(history).as_ref(), command).unwrap()
        };
        let exceeded = mark(&history, 6);
        assert!(matches!(&exceeded[..], [CredentialEvent::QuotaExceeded(_)]));
        let history = [history, exceeded].concat();
        let c = given(&history).unwrap();
        assert_eq!(c.quota_exceeded.as_ref().unwrap().until, t(100));
        // Covered: nothing more, until `until` has passed.
        assert!(mark(&history, 99).is_empty());
        assert_eq!(mark(&history, 100).len(), 1);
        // Setting the quota clears it; a quota already reached is exceeded with it.
        let again = set(&history, Some(quota(10)), None);
        assert!(matches!(&again[..], [CredentialEvent::QuotaSet { .. }]));
        assert_eq!(then(history.clone(), again).quota_exceeded, None);
        let lowered = set(&history, Some(quota(5)), Some(exceedance(200)));
        assert!(matches!(
            &lowered[..],
            [
                CredentialEvent::QuotaSet { .. },
                CredentialEvent::QuotaExceeded(_)
            ]
        ));
        // Removed: no exceedance is recorded for it.
        let removal = set(&history, None, None);
        let removed = [history, removal].concat();
        let c = given(&removed).unwrap();
        assert_eq!(c.quota, None);
        assert!(mark(&removed, 150).is_empty());
    }

    #[test]
    fn a_revoked_credential_records_no_exceedance_and_refuses_a_quota() {
        let history = [
            registered(),
            set(&registered(), Some(quota(1)), None),
            vec![CredentialEvent::Revoked {
                byok_id: byok(),
                revoked_at: t(3),
            }],
        ]
        .concat();
        let command = CredentialCommand::MarkExceeded {
            exceeded: exceedance(100),
            at: t(4),
        };
        assert!(
            decide(given(&history).as_ref(), command)
                .unwrap()
                .is_empty()
        );
        let command = CredentialCommand::SetQuota {
            quota: None,
            exceeded: None,
            at: t(5),
        };
        assert_eq!(
            decide(given(&history).as_ref(), command),
            Err(CredentialError::Revoked)
        );
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use crate::domain::credential::testing::*;
    use crate::domain::credential::{ProbeError, TestResult, prepare_register};
    use crate::es::Aggregate;

    fn result(secret_version: u32) -> TestResult {
        TestResult::new(Err(ProbeError::InvalidCredentials), 7, secret_version, t(2))
    }

    #[test]
    fn a_probe_is_recorded_and_shown_as_last_test() {
        let c = given(&registered()).unwrap();
        let events = decide(
            Some(&c),
            CredentialCommand::RecordTest { result: result(1) },
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        let after = Credential::apply(Some(c.clone()), &events[0]);
        assert_eq!(after.last_test, Some(result(1)));
        // A probe is not a change of the credential's settings.
        assert_eq!(after.updated_at, c.updated_at);
    }

    #[test]
    fn a_probe_of_another_secret_version_records_nothing() {
        let c = given(&registered()).unwrap();
        let events = decide(
            Some(&c),
            CredentialCommand::RecordTest { result: result(2) },
        );
        assert_eq!(events, Ok(vec![]));
    }

    #[test]
    fn a_revoked_credential_records_no_probe() {
        let mut history = registered();
        history.push(CredentialEvent::Revoked {
            byok_id: byok(),
            revoked_at: t(1),
        });
        let c = given(&history).unwrap();
        let events = decide(
            Some(&c),
            CredentialCommand::RecordTest { result: result(1) },
        );
        assert_eq!(events, Err(CredentialError::Revoked));
    }

    #[test]
    fn register_with_a_probe_appends_it_after_the_registration() {
        let registration = prepare_register(request("openai")).unwrap();
        let CredentialCommand::Register(mut new) = register_command(registration) else {
            panic!("a register command");
        };
        new.tested = Some(result(1));
        let events = decide(None, CredentialCommand::Register(new)).unwrap();
        assert!(matches!(events[0], CredentialEvent::Registered(_)));
        assert!(matches!(&events[1], CredentialEvent::Tested(t) if t.result == result(1)));
        assert_eq!(given(&events).unwrap().last_test, Some(result(1)));
    }
}

#[cfg(test)]
mod health_tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::credential::ProbeError;
    use crate::domain::credential::testing::*;
    use crate::domain::health::{Evidence, Health, HealthCause};
    use crate::domain::usage::Outcome;

    fn observe(outcome: Outcome, at: i64) -> CredentialCommand {
        CredentialCommand::ObserveHealth {
            evidence: Evidence::from_usage(outcome, t(at), TimeDelta::seconds(60)).unwrap(),
            now: t(at),
        }
    }

    #[test]
    fn a_refused_call_records_the_change_once() {
        let history = registered();
        let c = given(&history).unwrap();
        assert_eq!(c.health, Health::Unknown);
        let events = decide(Some(&c), observe(Outcome::InvalidCredentials, 5)).unwrap();
        let [CredentialEvent::HealthChanged(h)] = events.as_slice() else {
            panic!("one byok.health_changed: {events:?}");
        };
        assert_eq!((h.previous, h.health), (Health::Unknown, Health::Failing));
        assert_eq!(h.cause, HealthCause::Usage);
        let c = then(history, events.clone());
        assert_eq!(c.health, Health::Failing);
        assert_eq!(c.health_changed_at, Some(t(5)));
        assert_eq!(c.health_cause, Some(HealthCause::Usage));
        assert_eq!(c.health_error, Some(ProbeError::InvalidCredentials));
        // The same evidence again: nothing new.
        assert_eq!(
            decide(Some(&c), observe(Outcome::InvalidCredentials, 6)).unwrap(),
            []
        );
        // Health is no change of configuration.
        assert_eq!(c.updated_at, t(0));
    }

    #[test]
    fn a_rate_limit_records_its_cooldown_end() {
        let mut history = registered();
        let c = given(&history).unwrap();
        history.extend(decide(Some(&c), observe(Outcome::RateLimited, 5)).unwrap());
        let c = given(&history).unwrap();
        assert_eq!(c.health, Health::RateLimited);
        assert_eq!(c.health_until, Some(t(65)));
        // A success clears the cooldown.
        let events = decide(Some(&c), observe(Outcome::Ok, 6)).unwrap();
        let c = then(history, events);
        assert_eq!(c.health, Health::Healthy);
        assert_eq!(c.health_until, None);
        assert_eq!(c.health_error, None);
    }

    #[test]
    fn a_revoked_credential_changes_no_health() {
        let mut history = registered();
        history.push(CredentialEvent::Revoked {
            byok_id: byok(),
            revoked_at: t(1),
        });
        let c = given(&history).unwrap();
        assert_eq!(
            decide(Some(&c), observe(Outcome::InvalidCredentials, 5)).unwrap(),
            []
        );
        assert!(matches!(
            decide(None, observe(Outcome::Ok, 5)),
            Err(CredentialError::NotFound)
        ));
    }
}
