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

/// Every operation of the document, as (method, path, operation).
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => spec
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {reference}")),
        None => value,
    }
}

#[test]
fn the_contract_states_what_the_server_checks() {
    let spec: Value = serde_json::from_str(&keyledger::http::openapi::spec_json()).unwrap();
    let schemas = &spec["components"]["schemas"];
    assert!(spec["servers"][0]["url"].is_string(), "a servers block");
    assert_eq!(spec["security"], serde_json::json!([{"bearer": []}]));

    // Operation ids are verb_noun; the public ones say so with `security: []`.
    let verbs = [
        "get", "list", "create", "register", "update", "enable", "disable", "revoke", "stream",
        "bind", "unbind", "set", "report", "resolve", "test", "rotate", "stage", "commit",
        "rollback",
    ];
    let verbs: Vec<&str> = verbs
        .into_iter()
        .chain(["delete", "rotate", "redeliver"])
        .collect();
    let public = [
        "get_openapi",
        "list_providers",
        "get_liveness",
        "get_readiness",
        "get_metrics",
    ];
    for (method, path, op) in operations(&spec) {
        let id = op["operationId"].as_str().unwrap();
        let (verb, noun) = id.split_once('_').unwrap_or((id, ""));
        assert!(
            verbs.contains(&verb)
                && !noun.is_empty()
                && id.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{method} {path}: operation id {id} is not verb_noun"
        );
        if public.contains(&id) {
            assert_eq!(op["security"], serde_json::json!([]), "{id} is public");
        } else if id == "create_account" {
            assert_eq!(op["security"], serde_json::json!([{}, {"bearer": []}]));
        } else {
            assert_eq!(op["security"], serde_json::json!([{"bearer": []}]), "{id}");
        }
        // Every response carries X-Request-ID.
        for (status, response) in op["responses"].as_object().unwrap() {
            let response = resolve(&spec, response);
            assert_eq!(
                response["headers"]["X-Request-ID"]["$ref"], "#/components/headers/X-Request-ID",
                "{id} {status} does not declare X-Request-ID"
            );
        }
        // The shared headers and path ids state their syntax.
        for param in op["parameters"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let name = param["name"].as_str().unwrap();
            if ["If-Match", "Idempotency-Key", "Last-Event-ID", "id"].contains(&name) {
                assert!(
                    param["schema"]["pattern"].is_string(),
                    "{id}: {name} has no pattern"
                );
                assert!(
                    param["description"].is_string(),
                    "{id}: {name} has no description"
                );
            }
        }
        // Every JSON body takes idempotency_key.
        if let Some(body) = op.get("requestBody") {
            let schema = resolve(&spec, &body["content"]["application/json"]["schema"]);
            let variants: Vec<&Value> = match schema["oneOf"].as_array() {
                Some(items) => items.iter().map(|v| resolve(&spec, v)).collect(),
                None => vec![schema],
            };
            for variant in variants {
                assert!(
                    variant["properties"]["idempotency_key"]["maxLength"] == 255,
                    "{id}: the body has no idempotency_key"
                );
                assert_eq!(variant["additionalProperties"], false, "{id}");
            }
        }
    }
    let header = &spec["components"]["headers"]["X-Request-ID"]["schema"];
    assert!(header["pattern"].is_string());

    // The optional bodies of the commands without input.
    for (path, method) in [
        ("/v1/byok/enable/{id}", "post"),
        ("/v1/byok/disable/{id}", "post"),
        ("/v1/byok/revoke/{id}", "delete"),
        ("/v1/account/keys/{id}", "delete"),
    ] {
        let body = &spec["paths"][path][method]["requestBody"];
        assert_eq!(body["required"], false, "{method} {path}");
        assert_eq!(
            body["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/IdempotencyOptions"
        );
    }

    // Field rules: lengths, patterns, enums, minItems, format.
    let email = &schemas["AccountCreate"]["properties"]["email"];
    assert_eq!(email["maxLength"], 254);
    assert!(email["pattern"].is_string());
    let key = &schemas["ApiKeyCreate"]["properties"];
    assert_eq!(key["name"]["maxLength"], 128);
    assert_eq!(key["scopes"]["minItems"], 1);
    assert_eq!(
        schemas["Scope"]["enum"],
        serde_json::json!(["admin", "write", "read", "resolve"])
    );
    assert_eq!(
        schemas["CredentialState"]["enum"],
        serde_json::json!(["active", "disabled", "revoked"])
    );
    assert_eq!(schemas["Alias"]["pattern"], "^[a-z0-9][a-z0-9_-]{0,63}$");
    assert!(schemas["Label"]["pattern"].is_string());
    assert_eq!(schemas["BaseUrl"]["format"], "uri");
    assert_eq!(schemas["BaseUrl"]["maxLength"], 2048);
    assert_eq!(schemas["Weight"]["minimum"], 1);
    assert_eq!(schemas["Weight"]["maximum"], 1000);

    // The register body has a variant for each shape of provider, chosen by `provider`.
    let register = &schemas["ByokRegister"];
    let mapping = register["discriminator"]["mapping"].as_object().unwrap();
    let ids: Vec<&str> = keyledger::domain::providers::catalog()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(mapping.len(), ids.len());
    for id in &ids {
        let reference = serde_json::json!({"$ref": mapping[*id]});
        let variant = resolve(&spec, &reference);
        let providers = variant["properties"]["provider"]["enum"]
            .as_array()
            .unwrap();
        assert!(providers.contains(&Value::from(*id)), "{id}'s variant");
    }
    let self_hosted = &schemas["ByokRegisterSelfHosted"];
    let required = self_hosted["required"].as_array().unwrap();
    assert!(required.contains(&Value::from("base_url")));
    assert!(required.contains(&Value::from("declared_region")));
    assert!(schemas["ByokRegisterAzure"]["properties"]["base_url"].is_null());
    assert!(
        schemas["ByokRegisterAzure"]["properties"]["credentials"]["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("endpoint"))
    );

    // Links chain the lifecycle from registration.
    let links = &spec["paths"]["/v1/byok/register"]["post"]["responses"]["201"]["links"];
    for target in [
        "get_credential",
        "update_credential",
        "disable_credential",
        "enable_credential",
        "revoke_credential",
        "list_credential_events",
    ] {
        assert_eq!(
            links[target]["operationId"], target,
            "register links to {target}"
        );
        assert_eq!(links[target]["parameters"]["id"], "$response.body#/byok_id");
    }

    // The event stream describes its events.
    let stream = &spec["paths"]["/v1/events/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(
        stream["properties"]["data"]["contentSchema"]["$ref"],
        "#/components/schemas/Event"
    );

    // Schema names say what they are and leave generators' operation types alone: no schema is
    // named like typescript-fetch's `<OperationId>Request`, and the stored event is an `Event`.
    for (_, _, op) in operations(&spec) {
        let id = op["operationId"].as_str().unwrap();
        let pascal: String = id
            .split('_')
            .map(|w| w[..1].to_uppercase() + &w[1..])
            .collect();
        assert!(
            schemas.get(format!("{pascal}Request")).is_none(),
            "schema {pascal}Request collides with a generated operation type"
        );
    }
    assert!(schemas.get("Envelope").is_none() && schemas["Event"].is_object());
}
