//! The error envelope of every failure, and the one table that maps each error code to its type
//! and HTTP status (documented in docs/errors.md). Declares the error schemas and the reusable
//! error responses of the OpenAPI document.

use actix_web::http::StatusCode;
use actix_web::http::header::WWW_AUTHENTICATE;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::{OpenApi, ToResponse, ToSchema};

use super::request_id;
use crate::service::{ServiceError, Taken};

/// The broad class of an error; clients branch on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    NotFoundError,
    ConflictError,
    IdempotencyError,
    RateLimitError,
    ApiError,
}

/// Every stable error code. Codes are never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidBody,
    InvalidParameter,
    InvalidQuery,
    BodyTooLarge,
    UnsupportedMediaType,
    MissingToken,
    InvalidToken,
    InsufficientScope,
    ResourceMissing,
    RouteNotFound,
    MethodNotAllowed,
    EmailTaken,
    VersionConflict,
    CredentialRevoked,
    InvalidHeader,
    IdempotencyKeyReused,
    IdempotencyInProgress,
    RequestTimeout,
    ShuttingDown,
    InternalError,
    // Resolve.
    NoUsableCredential,
    CatchingUp,
    // Rotation.
    StageUnknown,
    StageExpired,
    StageProbeFailed,
    RollbackUnavailable,
}

impl ErrorCode {
    /// The table: code → (string, type, status).
    pub const fn spec(self) -> (&'static str, ErrorType, StatusCode) {
        use ErrorType::*;
        match self {
            Self::InvalidJson => ("invalid_json", InvalidRequestError, StatusCode::BAD_REQUEST),
            Self::InvalidBody => (
                "invalid_body",
                InvalidRequestError,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::InvalidParameter => (
                "invalid_parameter",
                InvalidRequestError,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::InvalidQuery => (
                "invalid_query",
                InvalidRequestError,
                StatusCode::BAD_REQUEST,
            ),
            Self::BodyTooLarge => (
                "body_too_large",
                InvalidRequestError,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            Self::UnsupportedMediaType => (
                "unsupported_media_type",
                InvalidRequestError,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            Self::MissingToken => (
                "missing_token",
                AuthenticationError,
                StatusCode::UNAUTHORIZED,
            ),
            Self::InvalidToken => (
                "invalid_token",
                AuthenticationError,
                StatusCode::UNAUTHORIZED,
            ),
            Self::InsufficientScope => {
                ("insufficient_scope", PermissionError, StatusCode::FORBIDDEN)
            }
            Self::ResourceMissing => ("resource_missing", NotFoundError, StatusCode::NOT_FOUND),
            Self::RouteNotFound => ("route_not_found", NotFoundError, StatusCode::NOT_FOUND),
            Self::MethodNotAllowed => (
                "method_not_allowed",
                InvalidRequestError,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            Self::EmailTaken => ("email_taken", ConflictError, StatusCode::CONFLICT),
            Self::VersionConflict => ("version_conflict", ConflictError, StatusCode::CONFLICT),
            Self::CredentialRevoked => ("credential_revoked", ConflictError, StatusCode::CONFLICT),
            Self::InvalidHeader => (
                "invalid_header",
                InvalidRequestError,
                StatusCode::BAD_REQUEST,
            ),
            Self::IdempotencyKeyReused => (
                "idempotency_key_reused",
                IdempotencyError,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::IdempotencyInProgress => (
                "idempotency_in_progress",
                ConflictError,
                StatusCode::CONFLICT,
            ),
            Self::RequestTimeout => (
                "request_timeout",
                InvalidRequestError,
                StatusCode::REQUEST_TIMEOUT,
            ),
            Self::ShuttingDown => ("shutting_down", ApiError, StatusCode::SERVICE_UNAVAILABLE),
            Self::InternalError => (
                "internal_error",
                ApiError,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            // Resolve.
            Self::NoUsableCredential => (
                "no_usable_credential",
                InvalidRequestError,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::CatchingUp => ("catching_up", ApiError, StatusCode::SERVICE_UNAVAILABLE),
            // Rotation.
            Self::StageUnknown => ("stage_unknown", ConflictError, StatusCode::CONFLICT),
            Self::StageExpired => ("stage_expired", ConflictError, StatusCode::CONFLICT),
            Self::StageProbeFailed => ("stage_probe_failed", ConflictError, StatusCode::CONFLICT),
            Self::RollbackUnavailable => {
                ("rollback_unavailable", ConflictError, StatusCode::CONFLICT)
            }
        }
    }
}

/// `{"error": {...}}`: the body of every non-2xx response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"type": "invalid_request_error", "code": "invalid_parameter",
    "message": "email is not a valid address", "param": "email", "request_id": "req_01JD5Q3M8X2Y4Z6A7B8C9D0E1F"}}))]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    /// Stable, snake_case; see docs/errors.md.
    pub code: String,
    /// For people; never contains a secret.
    pub message: String,
    /// The request field or parameter at fault, as a dotted path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Same as the `X-Request-ID` header.
    pub request_id: String,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalError,
            "something went wrong on our side; the request id identifies it in the server log",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.spec().0, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.spec().2
    }

    fn error_response(&self) -> HttpResponse {
        let (code, error_type, status) = self.code.spec();
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1 and RFC 6750 §3: a 401 names the scheme that would be accepted.
            response.insert_header((WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorEnvelope {
            error: ErrorBody {
                error_type,
                code: code.to_owned(),
                message: self.message.clone(),
                param: self.param.clone(),
                request_id: request_id::current(),
            },
        })
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(what) => ApiError::new(ErrorCode::ResourceMissing, what),
            ServiceError::Invalid { param, message } => {
                ApiError::new(ErrorCode::InvalidParameter, message).with_param(param)
            }
            ServiceError::Forbidden { param, message } => {
                ApiError::new(ErrorCode::InsufficientScope, message).with_param(param)
            }
            ServiceError::Taken(Taken::Email) => ApiError::new(
                ErrorCode::EmailTaken,
                "an account with this email already exists",
            )
            .with_param("email"),
            ServiceError::Taken(other) => ApiError::new(
                ErrorCode::VersionConflict,
                format!("{other} already exists"),
            ),
            e @ ServiceError::Revoked => ApiError::new(ErrorCode::CredentialRevoked, e.to_string()),
            ServiceError::Rotation(e) => {
                use crate::domain::credential::CredentialError as R;
                let code = match e {
                    R::StageExpired => ErrorCode::StageExpired,
                    R::StageProbeFailed => ErrorCode::StageProbeFailed,
                    R::NothingToRollBack => ErrorCode::RollbackUnavailable,
                    _ => ErrorCode::StageUnknown,
                };
                ApiError::new(code, e.to_string())
            }
            e @ ServiceError::VersionConflict { .. } => {
                ApiError::new(ErrorCode::VersionConflict, e.to_string())
            }
            ServiceError::Store(e) => {
                // The cause goes to the log with the request id; the client gets a generic message.
                tracing::error!(error = %e, "store failure");
                ApiError::internal()
            }
        }
    }
}

/// The error envelope and the reusable error responses every operation refers to.
#[derive(OpenApi)]
#[openapi(components(
    schemas(ErrorEnvelope, ErrorBody, ErrorType),
    responses(
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        RequestTimeout,
        ShuttingDown,
        InternalError,
    ),
))]
pub struct ErrorsApi;

/// Declares reusable responses referenced by the operations in the OpenAPI document: each a
/// `ToResponse` whose body is the envelope and whose doc comment is its description.
macro_rules! error_responses {
    ($($(#[doc = $doc:literal])+ $name:ident;)+) => {
        $(
            $(#[doc = $doc])+
            #[derive(ToResponse)]
            pub struct $name(#[allow(dead_code)] ErrorEnvelope);
        )+
    };
}

error_responses! {
    /// The request is malformed: invalid JSON or query parameters.
    BadRequest;

    /// Missing, unknown or revoked bearer token.
    Unauthorized;

    /// The token lacks the scope this operation needs.
    Forbidden;

    /// No such resource in this account.
    NotFound;

    /// Conflicts with the current state, or a request with the same idempotency key is still being
    /// processed.
    Conflict;

    /// The body is larger than the server accepts (64 KiB).
    PayloadTooLarge;

    /// The body is not `application/json`.
    UnsupportedMediaType;

    /// The body is well-formed JSON but a field is missing, unknown, of the wrong type or invalid;
    /// `param` names it. Also a malformed idempotency key (`param` names the header or the field),
    /// and an idempotency key already used for another request (`idempotency_error`).
    Unprocessable;

    /// The body did not arrive within the server's body timeout (`request_timeout`); the
    /// connection is closed.
    RequestTimeout;

    /// The server began to shut down while the body was still arriving (`shutting_down`), or, for
    /// resolve, has just started and is still reading its log into memory (`catching_up`);
    /// nothing was done, and the request can be sent again.
    ShuttingDown;

    /// An unexpected server failure; the message is generic and the request id finds the cause in
    /// the server log.
    InternalError;
}

/// Declares a group of the responses above that operations list together, each variant answering
/// its status with the response of its name.
macro_rules! response_group {
    ($(#[doc = $doc:literal])+ $group:ident { $($status:tt => $name:ident),+ $(,)? }) => {
        $(#[doc = $doc])+
        #[derive(utoipa::IntoResponses)]
        #[allow(dead_code)]
        pub enum $group {
            $(
                #[response(status = $status)]
                $name(#[ref_response] $name),
            )+
        }
    };
}

response_group! {
    /// The failures every authenticated operation can answer: 401, 403, 500.
    AuthErrors { 401 => Unauthorized, 403 => Forbidden, 500 => InternalError }
}

response_group! {
    /// The failures of an operation that reads a JSON body: 400, 408, 413, 415, 422, 503.
    BodyErrors {
        400 => BadRequest,
        408 => RequestTimeout,
        413 => PayloadTooLarge,
        415 => UnsupportedMediaType,
        422 => Unprocessable,
        503 => ShuttingDown,
    }
}
