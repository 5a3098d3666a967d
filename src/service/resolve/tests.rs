use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::domain::credential::{CredentialPatch, RegisterRequest};
use crate::es::EventMeta;
use crate::service::clock::SystemClock;
use crate::service::credentials::{Credentials, UpdateRequest};
use crate::service::idempotency::Recording;
use crate::service::ids::Ids;
use crate::storage::Durability;

#[derive(Clone, Debug)]
enum Command {
    Register {
        account: u128,
        provider: &'static str,
        capability: Option<&'static str>,
        models: Vec<String>,
    },
    Disable(usize),
    Enable(usize),
    Revoke(usize),
    Weight(usize, u32),
    Restart,
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (
            1u128..3,
            proptest::sample::select(vec!["openai", "anthropic", "self_hosted"]),
            proptest::option::of(proptest::sample::select(vec!["chat", "embed"])),
            proptest::sample::subsequence(vec!["m1".to_owned(), "m2".into()], 0..=2),
        )
            .prop_map(|(account, provider, capability, models)| Command::Register {
                account,
                provider,
                capability,
                models,
            }),
        1 => any::<usize>().prop_map(Command::Disable),
        1 => any::<usize>().prop_map(Command::Enable),
        1 => any::<usize>().prop_map(Command::Revoke),
        1 => (any::<usize>(), 1u32..1000).prop_map(|(i, w)| Command::Weight(i, w)),
        1 => Just(Command::Restart),
    ]
}

struct Server {
    store: Store,
    credentials: Credentials,
    resolver: Resolver,
}

fn start(dir: &std::path::Path, master: &MasterKey) -> Server {
    // After a restart, sled's own flusher of the closed store may still hold the files' lock for
    // a moment on a busy machine.
    let mut tries = 0;
    let store = loop {
        match Store::open(dir, master, Durability::UnsafeNoSync) {
            Err(crate::storage::StoreError::Locked) if tries < 250 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => break opened.unwrap(),
        }
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let ids = Arc::new(Ids::new(clock.clone()));
    let resolver = Resolver::start(store.clone(), master.clone(), clock.clone(), None).unwrap();
    for _ in 0..500 {
        if resolver.is_caught_up() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(resolver.is_caught_up(), "the follower did not catch up");
    Server {
        credentials: Credentials::new(store.clone(), master.clone(), clock, ids),
        resolver,
        store,
    }
}

fn register(provider: &str, capability: Option<&str>, models: Vec<String>) -> RegisterRequest {
    let self_hosted = provider == "self_hosted";
    let base_url = self_hosted.then(|| "https://llm.example.com/v1".to_owned());
    RegisterRequest {
        provider: provider.into(),
        alias: Some("main".into()),
        api_key: Some("sk-test-0123456789abcdefWXYZ".into()),
        base_url,
        declared_region: self_hosted.then(|| "eu".to_owned()),
        models,
        capability: capability.map(str::to_owned),
        ..RegisterRequest::default()
    }
}

/// Runs the commands against a store, restarting where asked, and after each command checks
/// that the live routing state equals a fresh replay of the log and the projected rows.
async fn run(commands: Vec<Command>) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let mut server = start(dir.path(), &master);
    let meta = EventMeta {
        actor: "test".into(),
        request_id: "req_test".into(),
    };
    let mut registered: Vec<(AccountId, CredentialId)> = Vec::new();
    for command in commands {
        let pick = |i: usize| registered.get(i % registered.len().max(1)).cloned();
        let none = Recording::none();
        // Refusals (a command on a revoked credential) are part of the sequence, not failures.
        match command {
            Command::Register {
                account,
                provider,
                capability,
                models,
            } => {
                let account = AccountId::from_ulid(account);
                let request = register(provider, capability, models);
                let created = server
                    .credentials
                    .register(&account, request, &meta, &none)
                    .await
                    .unwrap();
                registered.push((account, created.credential.byok_id));
            }
            Command::Disable(i) | Command::Enable(i) => {
                if let Some((a, id)) = pick(i) {
                    let enabled = matches!(command, Command::Enable(_));
                    let _ = server
                        .credentials
                        .set_enabled(&a, &id, enabled, None, &meta, &none)
                        .await;
                }
            }
            Command::Revoke(i) => {
                if let Some((a, id)) = pick(i) {
                    let _ = server.credentials.revoke(&a, &id, None, &meta, &none).await;
                }
            }
            Command::Weight(i, weight) => {
                if let Some((a, id)) = pick(i) {
                    let request = UpdateRequest {
                        patch: CredentialPatch {
                            weight: Some(weight),
                            ..CredentialPatch::default()
                        },
                        fields: Default::default(),
                        admin: false,
                    };
                    let _ = server
                        .credentials
                        .update(&a, &id, request, None, &meta, &none)
                        .await;
                }
            }
            Command::Restart => {
                server.store.shutdown();
                server.resolver.join();
                drop(server);
                server = start(dir.path(), &master);
            }
        }
        // Read-your-writes: the mutation answered after the follower applied it.
        let durable = *server.store.positions().borrow();
        assert_eq!(server.resolver.position(), durable);
        let live = server.resolver.routes();
        let clock: SharedClock = Arc::new(SystemClock);
        let fresh = Resolver::replayed(server.store.clone(), master.clone(), clock).unwrap();
        assert_eq!(live, fresh.routes());
        let mut projected = Routes::default();
        for (_, id) in &registered {
            let stream = crate::es::StreamId::new(credential::KIND, id.as_str());
            let row = server.store.load::<Credential>(&stream).unwrap().unwrap();
            projected.put(row.state);
        }
        assert_eq!(live, projected);
    }
    // Every live credential resolves with its own secret, from memory.
    for (account, id) in &registered {
        let routes = server.resolver.routes();
        let credential = routes.get(id).unwrap();
        // Bindings apply to a named credential too: ask for what it is bound to.
        let capability = credential.profile.bindings.first();
        let request = Request {
            byok_id: Some(id.clone()),
            capability: capability.and_then(|b| b.capability.clone()),
            ..Request::default()
        };
        let answer = server.resolver.resolve(account, &request, false).unwrap();
        let state = credential.state;
        match answer.resolved {
            Resolved::Byok(r) => {
                assert_eq!(state, credential::CredentialState::Active);
                assert_eq!(&r.byok_id, id);
                assert_eq!(
                    r.credentials.expose().get("api_key").map(String::as_str),
                    Some("sk-test-0123456789abcdefWXYZ")
                );
            }
            Resolved::Pool(_) | Resolved::Refused(_) => {
                assert_ne!(state, credential::CredentialState::Active);
            }
        }
    }
    server.store.shutdown();
    server.resolver.join();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_routing_state_equals_a_replay_of_the_log(
        commands in proptest::collection::vec(arb_command(), 1..30),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(commands));
    }
}

#[test]
fn the_server_draw_stays_in_range_and_spreads() {
    let mut seen = [0usize; 4];
    for _ in 0..4000 {
        let d = draw(4);
        assert!(d < 4);
        seen[d as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    assert_eq!(draw(0), 0);
}

/// Gateway keys (the `resolve` scope) are in the follower's table from minting to revocation,
/// other keys never; a restart replays the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keys_follow_the_log() {
    use crate::service::accounts::Accounts;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let server = start(dir.path(), &master);
    let meta = EventMeta {
        actor: "test".into(),
        request_id: "req_test".into(),
    };
    let accounts = |server: &Server| {
        let clock: SharedClock = Arc::new(SystemClock);
        let admin = server.store.hash_token("kl_admin_test");
        Accounts::new(
            server.store.clone(),
            admin,
            clock.clone(),
            Arc::new(Ids::new(clock)),
        )
    };
    let service = accounts(&server);
    let created = service
        .create_account("ada@example.com", &meta, &Recording::none())
        .await
        .unwrap();
    let account_id = created.account.account_id.clone();
    let none = Recording::none();
    let mint = |scopes: Vec<Scope>| service.mint_key(&account_id, "k", scopes, &meta, &none);
    let gateway = mint(vec![Scope::Resolve]).await.unwrap();
    let admin = mint(vec![Scope::Admin]).await.unwrap();
    let hash = |token: &Redacted<String>| server.store.hash_token(token.expose());
    let held = server.resolver.gateway(&hash(&gateway.token));
    assert!(
        matches!(held, Some(Principal::Key { key_id, .. }) if key_id == gateway.key.key.key_id)
    );
    assert!(server.resolver.gateway(&hash(&admin.token)).is_none());
    assert!(server.resolver.gateway(&hash(&created.token)).is_none());
    drop(service);

    server.store.shutdown();
    server.resolver.join();
    drop(server);
    let server = start(dir.path(), &master);
    let hash = |token: &Redacted<String>| server.store.hash_token(token.expose());
    assert!(server.resolver.gateway(&hash(&gateway.token)).is_some());
    let service = accounts(&server);
    service
        .revoke_key(
            &account_id,
            &gateway.key.key.key_id,
            &meta,
            &Recording::none(),
        )
        .await
        .unwrap();
    assert!(server.resolver.gateway(&hash(&gateway.token)).is_none());
    server.store.shutdown();
    server.resolver.join();
}
