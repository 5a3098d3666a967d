//! Secret rotation, `/v1/byok/rotate/...` (docs/rotation.md): rotate in place, stage, commit,
//! rollback, and the views of a pending stage and a previous secret that `ByokConfig` shows.
//! Every operation honours `If-Match` and an idempotency key and needs a write-scoped key.
//! Declares its part of the OpenAPI document.

use std::collections::BTreeMap;

use actix_web::http::header::ETAG;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use super::auth::{Authed, Write};
use super::byok::{
    ChangeErrors, Changed, ConditionalHeaders, IfMatch, TestResultView, config_response,
};
use super::error::{ApiError, AuthErrors, BodyErrors};
use super::idempotency::{KeyOnlyBody, KeyScope, idempotent};
use super::json::Json;
use crate::domain::StageId;
use crate::domain::credential::{PreviousSecret, Stage};
use crate::service::rotation::{RotateSecret, Staged};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/byok/rotate/stage/{id}").post(stage))
        .service(resource("/v1/byok/rotate/commit/{id}").post(commit))
        .service(resource("/v1/byok/rotate/rollback/{id}").post(rollback))
        .service(resource("/v1/byok/rotate/{id}").post(rotate));
}

/// The rotation operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(rotate, stage, commit, rollback),
    components(schemas(RotatedEventData, RotationStagedEventData, SecretRetiredEventData))
)]
pub struct RotationApi;

/// How a rotation happened (`byok.rotated`'s `method`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RotationMethod)]
#[allow(dead_code)]
pub enum RotationMethodView {
    InPlace,
    Staged,
    Rollback,
}

/// The `data` of a `byok.rotated` event as feeds and webhooks show it (without
/// `sealed_secret`, a private field).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "method": "staged",
    "secret_version": 2, "previous_version": 1, "secret_hint": "QRST",
    "stage_id": "stage_01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "rollback_until": "2026-11-30T10:00:00Z",
    "rotated_at": "2026-11-23T10:00:00Z"}))]
#[allow(dead_code)]
pub struct RotatedEventData {
    pub byok_id: String,
    pub method: RotationMethodView,
    /// The version now current.
    pub secret_version: u32,
    /// The version current before.
    pub previous_version: u32,
    pub secret_hint: String,
    /// The stage committed (`staged` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<String>,
    /// Until when `previous_version` can be rolled back to (absent for `rollback`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_until: Option<DateTime<Utc>>,
    pub rotated_at: DateTime<Utc>,
}

/// The `data` of a `byok.rotation_staged` event as feeds and webhooks show it (without
/// `sealed_secret`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "stage_id": "stage_01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "secret_version": 2, "secret_hint": "QRST",
    "probe_result": {"ok": true, "latency_ms": 143, "secret_version": 2,
    "tested_at": "2026-11-23T10:00:00Z"}, "expires_at": "2026-11-24T10:00:00Z",
    "staged_at": "2026-11-23T10:00:00Z"}))]
#[allow(dead_code)]
pub struct RotationStagedEventData {
    pub byok_id: String,
    pub stage_id: String,
    pub secret_version: u32,
    pub secret_hint: String,
    pub probe_result: TestResultView,
    pub expires_at: DateTime<Utc>,
    pub staged_at: DateTime<Utc>,
}

/// The `data` of a `byok.secret_retired` event: the version's data key is destroyed.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "secret_version": 1,
    "retired_at": "2026-11-30T10:00:00Z"}))]
#[allow(dead_code)]
pub struct SecretRetiredEventData {
    pub byok_id: String,
    pub secret_version: u32,
    pub retired_at: DateTime<Utc>,
}

/// The new secret: the provider's secret fields only (its settings stay; change them with
/// update), checked as register checks them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ByokRotate, example = json!({"credentials": {"api_key": "sk-proj-new-0123456789abcdefQRST"}}))]
pub struct RotateBody {
    /// The provider's secret fields (`api_key`; Bedrock's `access_key`, `secret_key` and
    /// `session_token`; Vertex's `service_account_json`…). Sealed, never shown again.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// Shorthand for `credentials.api_key`.
    pub api_key: Option<String>,
}

impl From<RotateBody> for RotateSecret {
    fn from(b: RotateBody) -> Self {
        Self {
            credentials: b.credentials,
            api_key: b.api_key,
        }
    }
}

/// Which stage to promote.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ByokRotateCommit, example = json!({"stage_id": "stage_01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "force": false}))]
pub struct CommitBody {
    /// The `stage_id` `rotate/stage` answered.
    pub stage_id: String,
    /// Promote even though the stage's probe failed.
    #[serde(default)]
    pub force: bool,
}

/// A candidate secret waiting for `rotate/commit`: never its ciphertext.
#[derive(Serialize, ToSchema)]
#[schema(as = PendingRotation, example = json!({"stage_id": "stage_01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "secret_version": 2,
    "secret_hint": "QRST", "probe_result": {"ok": true, "latency_ms": 143, "secret_version": 2,
    "tested_at": "2026-11-23T10:00:00Z"}, "expires_at": "2026-11-24T10:00:00Z",
    "staged_at": "2026-11-23T10:00:00Z"}))]
pub struct PendingRotationView {
    pub stage_id: String,
    /// The version the candidate becomes when committed.
    pub secret_version: u32,
    pub secret_hint: String,
    /// The probe made of the candidate when it was staged.
    pub probe_result: TestResultView,
    /// After this the stage cannot be committed, and the sweep retires it.
    pub expires_at: DateTime<Utc>,
    pub staged_at: DateTime<Utc>,
}

impl From<Stage> for PendingRotationView {
    fn from(s: Stage) -> Self {
        Self {
            stage_id: s.stage_id.into(),
            secret_version: s.secret_version,
            secret_hint: s.secret_hint,
            probe_result: s.probe_result.into(),
            expires_at: s.expires_at,
            staged_at: s.staged_at,
        }
    }
}

/// The secret the last rotation replaced, restorable by `rotate/rollback` until
/// `rollback_until`; after that its data key is destroyed.
#[derive(Serialize, ToSchema)]
#[schema(as = PreviousSecret, example = json!({"secret_version": 1, "secret_hint": "x9Qz",
    "rollback_until": "2026-11-30T10:00:00Z"}))]
pub struct PreviousSecretView {
    pub secret_version: u32,
    pub secret_hint: String,
    pub rollback_until: DateTime<Utc>,
}

impl From<PreviousSecret> for PreviousSecretView {
    fn from(p: PreviousSecret) -> Self {
        Self {
            secret_version: p.secret_version,
            secret_hint: p.secret_hint,
            rollback_until: p.rollback_until,
        }
    }
}

/// What `rotate/stage` answers: the stage, and the credential's revision after it.
#[derive(Serialize, ToSchema)]
#[schema(as = ByokStage, example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "stage_id": "stage_01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "secret_version": 2, "secret_hint": "QRST",
    "probe_result": {"ok": true, "latency_ms": 143, "secret_version": 2,
    "tested_at": "2026-11-23T10:00:00Z"}, "expires_at": "2026-11-24T10:00:00Z",
    "staged_at": "2026-11-23T10:00:00Z", "current_secret_version": 1, "revision": 4}))]
pub struct StageAnswer {
    pub byok_id: String,
    #[serde(flatten)]
    pub stage: PendingRotationView,
    /// The version still serving: staging switches no traffic.
    pub current_secret_version: u32,
    /// The credential's revision afterwards (also the `ETag`).
    pub revision: u64,
}

fn staged(s: &Staged) -> HttpResponse {
    let answer = StageAnswer {
        byok_id: s.versioned.credential.byok_id.to_string(),
        stage: s.stage.clone().into(),
        current_secret_version: s.versioned.credential.secret_version,
        revision: s.versioned.revision,
    };
    let mut response = HttpResponse::Ok().json(answer);
    if let Ok(value) = format!("\"{}\"", s.versioned.revision).parse() {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// What every rotation route takes.
type RotationRequest<B> = (
    HttpRequest,
    web::Data<AppState>,
    Authed<Write>,
    web::Path<String>,
    IfMatch,
    B,
);

/// Rotate a credential's secret in place.
///
/// The new secret serves from the answer on (resolve hands it out from this append), sealed
/// under a data key of its own as secret version + 1; the `byok_id`, bindings, quota and usage
/// stay. The replaced secret can be restored with `rotate/rollback` during the rollback window.
/// A pending stage is superseded (retired). Appends `byok.rotated` with `method: in_place`.
#[utoipa::path(
    post, path = "/v1/byok/rotate/{id}", operation_id = "rotate_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = RotateBody,
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn rotate(request: RotationRequest<Json<RotateBody>>) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, IfMatch(if_match), Json(body)) = request;
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, config_response, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .credentials
            .rotate(account_id, &id, body.into(), if_match, meta, &recording)
            .await?)
    })
    .await
}

/// Stage a new secret without switching traffic.
///
/// Validates and probes the candidate with the provider (as `test` does), seals it under a data
/// key of its own and records it (`byok.rotation_staged`). Traffic keeps the current secret
/// until `rotate/commit`. A new stage replaces a pending one; a stage expires after the
/// server's stage TTL (24 hours by default). A failed probe is still a 200, with
/// `probe_result.ok: false`: committing it then needs `force: true`.
#[utoipa::path(
    post, path = "/v1/byok/rotate/stage/{id}", operation_id = "stage_rotation", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = RotateBody,
    responses(
        (status = 200, description = "Staged; nothing serves it yet", body = StageAnswer,
            headers(("ETag" = String, description = "The credential's revision afterwards")),
            links(("commit_rotation" = (operation_id = "commit_rotation",
                parameters(("id" = "$response.body#/byok_id")),
                request_body = "{\"stage_id\": \"$response.body#/stage_id\"}",
                description = "Promote this stage")))),
        ChangeErrors,
        BodyErrors,
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn stage(request: RotationRequest<Json<RotateBody>>) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, IfMatch(if_match), Json(body)) = request;
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, staged, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .credentials
            .stage_rotation(account_id, &id, body.into(), if_match, meta, &recording)
            .await?)
    })
    .await
}

/// Promote a staged secret.
///
/// From the answer on, resolve hands out the staged secret; the one it replaces can be rolled
/// back to during the rollback window. Appends `byok.rotated` with `method: staged`. A
/// `stage_id` that is not the pending stage (unknown, replaced, committed already) is 409
/// `stage_unknown`; an expired one 409 `stage_expired`; a stage whose probe failed 409
/// `stage_probe_failed` unless `force: true`. Of concurrent commits of one stage exactly one
/// wins; the others answer `stage_unknown`.
#[utoipa::path(
    post, path = "/v1/byok/rotate/commit/{id}", operation_id = "commit_rotation", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = CommitBody,
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn commit(request: RotationRequest<Json<CommitBody>>) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, IfMatch(if_match), Json(body)) = request;
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, config_response, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        // A malformed stage id names no stage: answered as an unknown one, after ownership.
        let stage_id = StageId::parse(&body.stage_id).unwrap_or_else(StageId::unnamed);
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .credentials
            .commit_rotation(
                account_id, &id, &stage_id, body.force, if_match, meta, &recording,
            )
            .await?)
    })
    .await
}

/// Roll back to the previous secret.
///
/// Restores the secret the last rotation replaced, while its rollback window is open (7 days by
/// default); the version rolled away from is retired at once and its data key destroyed, so a
/// rollback cannot itself be rolled back (rotate again instead). Appends `byok.rotated` with
/// `method: rollback`, then `byok.secret_retired`. Nothing to roll back to is 409
/// `rollback_unavailable`.
#[utoipa::path(
    post, path = "/v1/byok/rotate/rollback/{id}", operation_id = "rollback_rotation", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody, description = "Optional: only an `idempotency_key`"),
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn rollback(request: RotationRequest<KeyOnlyBody>) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, IfMatch(if_match), _) = request;
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, config_response, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .credentials
            .rollback(account_id, &id, if_match, meta, &recording)
            .await?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use utoipa::PartialSchema;

    use super::*;

    fn properties(
        schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    ) -> BTreeSet<String> {
        let value = serde_json::to_value(schema).unwrap();
        value["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// Every field of the stored payloads but the private ones, and nothing else.
    fn payload_fields(event_type: &str) -> BTreeSet<String> {
        use crate::domain::credential::{
            Rotated, RotationMethod, RotationStaged, SecretRetired, TestResult,
        };
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let id = crate::domain::CredentialId::from_ulid(1);
        let stage_id = crate::domain::StageId::from_ulid(2);
        let data: Value = match event_type {
            "byok.rotated" => serde_json::to_value(Rotated {
                byok_id: id,
                method: RotationMethod::Staged,
                secret_version: 2,
                previous_version: 1,
                secret_hint: String::new(),
                stage_id: Some(stage_id),
                sealed_secret: Some(String::new()),
                rollback_until: Some(at),
                rotated_at: at,
            }),
            "byok.rotation_staged" => serde_json::to_value(RotationStaged {
                byok_id: id,
                stage_id,
                secret_version: 2,
                secret_hint: String::new(),
                sealed_secret: String::new(),
                probe_result: TestResult::new(Ok(()), 1, 2, at),
                expires_at: at,
                staged_at: at,
            }),
            _ => serde_json::to_value(SecretRetired {
                byok_id: id,
                secret_version: 1,
                retired_at: at,
            }),
        }
        .unwrap();
        data.as_object()
            .unwrap()
            .keys()
            .filter(|k| !crate::domain::PRIVATE_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    #[test]
    fn the_event_schemas_show_every_public_field_of_their_payloads() {
        assert_eq!(
            properties(RotatedEventData::schema()),
            payload_fields("byok.rotated")
        );
        assert_eq!(
            properties(RotationStagedEventData::schema()),
            payload_fields("byok.rotation_staged")
        );
        assert_eq!(
            properties(SecretRetiredEventData::schema()),
            payload_fields("byok.secret_retired")
        );
    }
}
