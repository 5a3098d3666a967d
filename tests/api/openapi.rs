//! The committed contract (`openapi/openapi.json`) is exactly what the code generates, what the
//! server serves and what `keyledger openapi` prints.

use serde_json::Value;

use crate::helpers::spawn_app;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

#[test]
fn committed_spec_matches_the_code() {
    let generated = keyledger::http::openapi::spec_json();
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(COMMITTED, &generated).expect("write openapi/openapi.json");
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json has drifted from the code: regenerate it with \
         `cargo run -- openapi > openapi/openapi.json` (or UPDATE_OPENAPI=1 cargo test openapi)"
    );
}

#[test]
fn the_cli_prints_the_same_document() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("openapi")
        .output()
        .expect("run keyledger openapi");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        keyledger::http::openapi::spec_json()
    );
}

#[tokio::test]
async fn the_server_serves_it_and_the_docs_ui() {
    let app = spawn_app().await;
    let served: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated: Value = serde_json::from_str(&keyledger::http::openapi::spec_json()).unwrap();
    assert_eq!(served, generated);
    let ui = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await.unwrap().contains("swagger"));
}

#[test]
fn the_document_is_a_usable_contract() {
    let spec: Value = serde_json::from_str(&keyledger::http::openapi::spec_json()).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(spec["info"]["license"]["name"].is_string());
    assert!(spec["webhooks"].is_object(), "the webhooks section exists");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(spec["components"]["schemas"]["ErrorEnvelope"].is_object());
    let mut operation_ids = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            operation_ids.push(id.to_owned());
            assert!(op["tags"].is_array(), "{method} {path} has no tag");
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if secured {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} needs a token but documents no 401"
                );
            }
        }
    }
    let unique: std::collections::BTreeSet<_> = operation_ids.iter().collect();
    assert_eq!(
        unique.len(),
        operation_ids.len(),
        "operation ids are unique"
    );
}
