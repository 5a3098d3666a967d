//! Crypto-shredding on revoke: the data key is destroyed, on disk too, the log keeps only
//! ciphertext, and keys left without a live credential are destroyed when the store opens.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyledger::domain::{AccountId, CredentialId};
use keyledger::es::StreamId;

use super::{KEY, credentials, get_config, open_secrets, random_hex, secrets};
use crate::helpers::{Tenant, TestApp, files, openai, register_id, revoke, spawn_app};

/// A server with Ada's account and one credential holding a fresh random secret; answers the
/// secret and the credential's id too.
async fn a_fresh_secret() -> (TestApp, Tenant, String, String) {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let secret = format!("sk-shred-{}", random_hex::<16>());
    let id = register_id(&app, &ada.token, &openai("prod", &secret)).await;
    (app, ada, secret, id)
}

#[tokio::test]
async fn revoke_shreds_the_data_key_and_the_log_keeps_only_ciphertext() {
    let (app, ada, secret, id) = a_fresh_secret().await;
    let stream = StreamId::new("byok", &id);

    let wrapped = app
        .store
        .data_key(&id)
        .unwrap()
        .expect("a data key at registration");
    assert_eq!(
        open_secrets(&app, &ada.account_id, &id),
        Some(secrets(&[("api_key", &secret)]))
    );
    let registered = app.store.stream_events(&stream).unwrap();
    assert_eq!(registered[0].event_type, "byok.registered");
    let sealed_b64 = registered[0].data["sealed_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let sealed = STANDARD.decode(&sealed_b64).unwrap();
    // The sealed secret opens with the data key the master key unwraps, and with nothing else.
    let master = app.settings.master_key.clone();
    let master_bytes = STANDARD.decode(master.to_base64().expose()).unwrap();
    let secret_ad = format!("keyledger/byok/{}/{id}/v1", ada.account_id);
    let dek_ad = format!("keyledger/dek/{}/{id}", ada.account_id);
    let dek = master
        .unwrap_key(&wrapped, dek_ad.as_bytes())
        .expect("the DEK unwraps");
    let plaintext = dek
        .open(secret_ad.as_bytes(), &sealed)
        .expect("the DEK opens the secret");
    assert!(String::from_utf8(plaintext).unwrap().contains(&secret));

    revoke(&app, &ada.token, &id).await;

    let check = |app: &TestApp| {
        let events = app.store.stream_events(&stream).unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["byok.registered", "byok.revoked"]);
        // The ciphertext stays in the immutable log...
        assert_eq!(events[0].data["sealed_secret"], sealed_b64.as_str());
        // ...but the key that opened it is gone.
        assert_eq!(app.store.data_key(&id).unwrap(), None);
        assert!(
            credentials(app)
                .open_secrets(
                    &AccountId::parse(&ada.account_id).unwrap(),
                    &CredentialId::parse(&id).unwrap()
                )
                .is_err(),
            "a revoked secret opened"
        );
        for ad in [secret_ad.as_bytes(), dek_ad.as_bytes(), b"".as_slice()] {
            assert!(
                keyledger::crypto::open(&master_bytes, ad, &sealed).is_err(),
                "the master key alone opened the sealed secret"
            );
        }
    };
    check(&app);
    let app = app.restart().await;
    check(&app);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["state"], "revoked");
}

#[tokio::test]
async fn a_revoked_data_key_is_gone_from_the_disk() {
    let (app, ada, _, id) = a_fresh_secret().await;
    let wrapped = app.store.data_key(&id).unwrap().expect("a data key");
    revoke(&app, &ada.token, &id).await;
    // Some more writes and a restart, as a running server would see.
    let app = app.restart().await;
    for i in 0..20 {
        register_id(&app, &ada.token, &openai(&format!("later{i}"), KEY)).await;
    }
    let (_, dir) = app.stop_and_release().await;
    for file in files(&dir.path().join("data")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(wrapped.len())
                .any(|w| w == wrapped.as_slice()),
            "the revoked credential's wrapped data key is still in {}",
            file.display()
        );
    }
}

#[tokio::test]
async fn keys_left_without_a_live_credential_are_destroyed_on_start() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let live = register_id(&app, &ada.token, &openai("live", KEY)).await;
    let (settings, dir) = app.stop_and_release().await;
    // What a crash between a key's file and its registration leaves behind.
    let keys = settings.data_dir.join("keys");
    std::fs::write(keys.join("byok_01ORPHANED00000000000000"), b"wrapped").unwrap();
    let app = crate::helpers::start(settings, dir).await;
    assert!(!keys.join("byok_01ORPHANED00000000000000").exists());
    assert!(app.store.data_key(&live).unwrap().is_some());
}
