use std::collections::BTreeMap;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::domain::credential::CredentialProfile;
use crate::domain::health::Health;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000, 0).unwrap()
}

fn account(n: u128) -> AccountId {
    AccountId::from_ulid(n)
}

fn id(n: u128) -> CredentialId {
    CredentialId::from_ulid(n)
}

fn binding(capability: Option<&str>, module: Option<&str>, model: Option<&str>) -> Binding {
    Binding {
        capability: capability.map(str::to_owned),
        module: module.map(str::to_owned),
        model: model.map(str::to_owned),
    }
}

fn credential(n: u128, provider: &str, bindings: Vec<Binding>) -> Credential {
    let mut bindings = bindings;
    bindings.sort();
    bindings.dedup();
    Credential {
        byok_id: id(n),
        account_id: account(1),
        profile: CredentialProfile {
            provider: provider.into(),
            alias: format!("c{n}"),
            label: None,
            base_url: None,
            declared_region: None,
            residency: "us".into(),
            models: vec![],
            blacklisted_models: vec![],
            weight: 100,
            bindings,
            model_map: BTreeMap::new(),
            settings: BTreeMap::new(),
        },
        quota: None,
        quota_exceeded: None,
        last_test: None,
        pending_rotation: None,
        previous_secret: None,
        latest_secret_version: 1,
        health: Health::Unknown,
        health_until: None,
        health_changed_at: None,
        health_cause: None,
        health_error: None,
        state: CredentialState::Active,
        secret_version: 1,
        secret_hint: String::new(),
        sealed_secret: String::new(),
        created_at: now(),
        updated_at: now(),
    }
}

fn ask(capability: Option<&str>, module: Option<&str>, model: Option<&str>) -> Request {
    Request {
        capability: capability.map(str::to_owned),
        module: module.map(str::to_owned),
        model: model.map(str::to_owned),
        ..Request::default()
    }
}

fn first(_: u64) -> u64 {
    0
}

#[test]
fn each_filter_has_its_reason() {
    let base = credential(1, "openai", vec![]);
    let r = ask(None, None, Some("gpt-4o"));
    assert_eq!(refusal(&base, &r, now()), None);
    let mut c = base.clone();
    c.state = CredentialState::Disabled;
    assert_eq!(refusal(&c, &r, now()), Some(Reason::Disabled));
    c.state = CredentialState::Revoked;
    assert_eq!(refusal(&c, &r, now()), Some(Reason::Revoked));
    let mut c = base.clone();
    c.profile.blacklisted_models = vec!["gpt-4o".into()];
    c.profile.models = vec!["gpt-4o".into()];
    assert_eq!(refusal(&c, &r, now()), Some(Reason::ModelBlacklisted));
    c.profile.blacklisted_models.clear();
    c.profile.models = vec!["gpt-4o-mini".into()];
    assert_eq!(refusal(&c, &r, now()), Some(Reason::ModelNotAllowed));
    // No model asked: the lists do not filter.
    assert_eq!(refusal(&c, &ask(None, None, None), now()), None);
    let eu = Request {
        residency: Some("eu".into()),
        ..r.clone()
    };
    assert_eq!(refusal(&base, &eu, now()), Some(Reason::ResidencyMismatch));
    let anthropic = Request {
        provider: Some("anthropic".into()),
        ..r.clone()
    };
    assert_eq!(
        refusal(&base, &anthropic, now()),
        Some(Reason::ProviderMismatch)
    );
    let other = Request {
        byok_id: Some(id(9)),
        ..r.clone()
    };
    assert_eq!(refusal(&base, &other, now()), Some(Reason::NotRequested));
    let bound = credential(2, "openai", vec![binding(Some("chat"), None, None)]);
    assert_eq!(
        refusal(&bound, &ask(Some("embed"), None, None), now()),
        Some(Reason::BindingMismatch)
    );
    // Health: failing is out; rate_limited only until its cooldown ends.
    let mut c = base.clone();
    c.health = Health::Failing;
    assert_eq!(refusal(&c, &r, now()), Some(Reason::Unhealthy));
    c.health = Health::RateLimited;
    c.health_until = Some(now() + chrono::TimeDelta::seconds(1));
    assert_eq!(refusal(&c, &r, now()), Some(Reason::CoolingDown));
    c.health_until = Some(now());
    assert_eq!(refusal(&c, &r, now()), None, "the cooldown ends by time");
    c.health = Health::Healthy;
    c.health_until = None;
    assert_eq!(refusal(&c, &r, now()), None);
}

#[test]
fn self_hosted_only_when_named() {
    let c = credential(1, SELF_HOSTED, vec![]);
    assert_eq!(
        refusal(&c, &ask(None, None, None), now()),
        Some(Reason::SelfHostedNotNamed)
    );
    let by_provider = Request {
        provider: Some(SELF_HOSTED.into()),
        ..Request::default()
    };
    assert_eq!(refusal(&c, &by_provider, now()), None);
    let by_id = Request {
        byok_id: Some(id(1)),
        ..Request::default()
    };
    assert_eq!(refusal(&c, &by_id, now()), None);
}

#[test]
fn the_most_specific_binding_wins() {
    let creds = [
        credential(1, "openai", vec![]),
        credential(2, "openai", vec![binding(None, Some("billing"), None)]),
        credential(3, "openai", vec![binding(Some("chat"), None, None)]),
        credential(
            4,
            "openai",
            vec![binding(Some("chat"), None, Some("gpt-4o"))],
        ),
    ];
    let pick = |r: &Request| {
        route(creds.iter(), r, now(), &mut first)
            .winner()
            .map(|v| v.credential.byok_id.clone())
    };
    assert_eq!(
        pick(&ask(Some("chat"), Some("billing"), Some("gpt-4o"))),
        Some(id(4))
    );
    assert_eq!(
        pick(&ask(Some("chat"), Some("billing"), Some("o3"))),
        Some(id(3))
    );
    assert_eq!(
        pick(&ask(Some("embed"), Some("billing"), None)),
        Some(id(2))
    );
    assert_eq!(pick(&ask(Some("embed"), None, None)), Some(id(1)));
    let routed = route(
        creds.iter(),
        &ask(Some("chat"), None, Some("gpt-4o")),
        now(),
        &mut first,
    );
    let reasons: Vec<_> = routed.verdicts.iter().map(|v| v.reason).collect();
    assert_eq!(
        reasons,
        [
            Reason::Outranked,
            Reason::BindingMismatch,
            Reason::Outranked,
            Reason::Picked
        ]
    );
}

#[test]
fn reason_strings_are_stable() {
    let strings: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        strings,
        [
            "not_requested",
            "revoked",
            "disabled",
            "over_quota",
            "unhealthy",
            "cooling_down",
            "provider_mismatch",
            "self_hosted_not_named",
            "residency_mismatch",
            "model_blacklisted",
            "model_not_allowed",
            "binding_mismatch",
            "outranked",
            "not_picked",
            "picked"
        ]
    );
    for r in Reason::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
}

/// A seeded generator for the draws (splitmix64).
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn weighted_pick_within_tolerance() {
    let weights = [1u32, 10, 100, 289, 600];
    let creds: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut c = credential(i as u128 + 1, "openai", vec![]);
            c.profile.weight = *w;
            c
        })
        .collect();
    let total: u32 = weights.iter().sum();
    const DRAWS: usize = 200_000;
    for seed in [1u64, 7, 2026] {
        let mut rng = Seeded(seed);
        let mut counts = [0usize; 5];
        for _ in 0..DRAWS {
            let routed = route(creds.iter(), &Request::default(), now(), &mut |n| {
                rng.next() % n
            });
            let w = routed.winner().unwrap();
            let i = creds
                .iter()
                .position(|c| c.byok_id == w.credential.byok_id)
                .unwrap();
            counts[i] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let p = f64::from(*w) / f64::from(total);
            let expected = p * DRAWS as f64;
            // Five standard deviations of the binomial count.
            let sigma = (DRAWS as f64 * p * (1.0 - p)).sqrt();
            let got = counts[i] as f64;
            assert!(
                (got - expected).abs() <= 5.0 * sigma + 1.0,
                "seed {seed}, weight {w}: {got} picks, expected {expected:.0} ± {:.0}",
                5.0 * sigma
            );
        }
    }
}

// The reference model: the rules of docs/routing.md written as directly as possible, with no
// code shared with the implementation.

fn ref_usable(c: &Credential, r: &Request) -> bool {
    let p = &c.profile;
    let named_self_hosted = r.provider.as_deref() == Some(SELF_HOSTED) || r.byok_id.is_some();
    let cooling = c.health == Health::RateLimited && c.health_until.is_some_and(|u| u > now());
    c.state == CredentialState::Active
        && c.health != Health::Failing
        && !cooling
        && r.byok_id.as_ref().is_none_or(|id| *id == c.byok_id)
        && r.provider.as_ref().is_none_or(|x| *x == p.provider)
        && (p.provider != SELF_HOSTED || named_self_hosted)
        && r.residency.as_ref().is_none_or(|x| *x == p.residency)
        && r.model.as_ref().is_none_or(|m| {
            !p.blacklisted_models.contains(m) && (p.models.is_empty() || p.models.contains(m))
        })
        && ref_rank(c, r).is_some()
}

/// 0 for unbound; otherwise 4·model + 2·capability + 1·module of the best matching binding.
fn ref_rank(c: &Credential, r: &Request) -> Option<u8> {
    if c.profile.bindings.is_empty() {
        return Some(0);
    }
    c.profile
        .bindings
        .iter()
        .filter(|b| {
            (b.capability.is_none() || b.capability == r.capability)
                && (b.module.is_none() || b.module == r.module)
                && (b.model.is_none() || b.model == r.model)
        })
        .map(|b| {
            4 * u8::from(b.model.is_some())
                + 2 * u8::from(b.capability.is_some())
                + u8::from(b.module.is_some())
        })
        .max()
}

fn small(names: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(names).prop_map(str::to_owned))
}

fn arb_binding() -> impl Strategy<Value = Binding> {
    (
        small(&["chat", "embed"]),
        small(&["billing", "search"]),
        small(&["m1", "m2"]),
    )
        .prop_filter("a capability or a module", |(c, m, _)| {
            c.is_some() || m.is_some()
        })
        .prop_map(|(capability, module, model)| Binding {
            capability,
            module,
            model,
        })
}

fn arb_models() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(vec!["m1".to_owned(), "m2".into(), "m3".into()], 0..=2)
}

fn arb_credential(n: u128) -> impl Strategy<Value = Credential> {
    (
        proptest::sample::select(vec!["openai", "anthropic", SELF_HOSTED]),
        proptest::sample::select(vec!["us", "eu"]),
        proptest::collection::vec(arb_binding(), 0..3),
        arb_models(),
        arb_models(),
        proptest::sample::select(vec![
            CredentialState::Active,
            CredentialState::Active,
            CredentialState::Disabled,
            CredentialState::Revoked,
        ]),
        1u32..=1000,
        0u128..2,
        (
            proptest::sample::select(vec![
                Health::Unknown,
                Health::Healthy,
                Health::Failing,
                Health::RateLimited,
            ]),
            proptest::option::of(-2i64..2),
        ),
    )
        .prop_map(
            move |(
                provider,
                residency,
                bindings,
                models,
                blacklisted,
                state,
                weight,
                acct,
                (health, until),
            )| {
                let mut c = credential(n, provider, bindings);
                c.health = health;
                c.health_until = until.map(|s| now() + chrono::TimeDelta::seconds(s));
                c.account_id = account(1 + acct);
                c.profile.residency = residency.into();
                c.profile.models = models;
                c.profile.blacklisted_models = blacklisted;
                c.profile.weight = weight;
                c.state = state;
                c
            },
        )
}

fn arb_credentials() -> impl Strategy<Value = Vec<Credential>> {
    (1usize..10).prop_flat_map(|n| (1..=n as u128).map(arb_credential).collect::<Vec<_>>())
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        small(&["chat", "embed", "other"]),
        small(&["billing", "search"]),
        small(&["m1", "m2", "m3"]),
        small(&["openai", "anthropic", SELF_HOSTED]),
        small(&["us", "eu"]),
        proptest::option::weighted(0.2, 1u128..10),
    )
        .prop_map(
            |(capability, module, model, provider, residency, byok)| Request {
                capability,
                module,
                model,
                provider,
                residency,
                byok_id: byok.map(id),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn precedence_matches_the_reference_model(
        creds in arb_credentials(),
        request in arb_request(),
        draw in any::<u64>(),
    ) {
        let mine: Vec<_> = creds.iter().filter(|c| c.account_id == account(1)).collect();
        let routed = route(mine.iter().copied(), &request, now(), &mut |n| draw % n);
        let usable: Vec<_> = mine.iter().filter(|c| ref_usable(c, &request)).collect();
        let best = usable.iter().filter_map(|c| ref_rank(c, &request)).max();
        for v in &routed.verdicts {
            let c = v.credential;
            let ok = ref_usable(c, &request);
            let top = ok && ref_rank(c, &request) == best;
            match v.reason {
                Reason::Picked | Reason::NotPicked => prop_assert!(top, "{:?}", v),
                Reason::Outranked => prop_assert!(ok && !top, "{:?}", v),
                _ => prop_assert!(!ok, "{:?}", v),
            }
        }
        prop_assert_eq!(routed.verdicts.len(), mine.len());
        prop_assert_eq!(routed.chosen.is_some(), !usable.is_empty());
        // The index answers what a scan of the whole account answers, with the same draw.
        let mut routes = Routes::default();
        for c in &creds {
            routes.put(c.clone());
        }
        let scanned = routed.winner().map(|v| v.credential.byok_id.clone());
        for explain in [false, true] {
            let indexed = routes.resolve(&account(1), &request, now(), explain, &mut |n| draw % n);
            let picked = match indexed {
                Ok(r) => r.winner().map(|v| v.credential.byok_id.clone()),
                Err(_) => None,
            };
            prop_assert_eq!(&picked, &scanned);
        }
    }

    #[test]
    fn routes_equal_the_last_state_of_each_credential(
        history in proptest::collection::vec(arb_credential(0).prop_flat_map(|c| (Just(c), 1u128..6)), 0..40),
    ) {
        let mut routes = Routes::default();
        let mut last = BTreeMap::new();
        for (mut c, n) in history {
            c.byok_id = id(n);
            last.insert(n, c.clone());
            routes.put(c);
        }
        let mut fresh = Routes::default();
        for c in last.into_values() {
            fresh.put(c);
        }
        prop_assert_eq!(routes, fresh);
    }
}
