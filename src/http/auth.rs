//! Authentication and authorisation as extractors: a handler states what it needs in its
//! signature (`Authed<Admin>`, `Authed<Read>`, `Signup`), and the request never reaches it
//! otherwise.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::{Ready, ready};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::domain::{AccountId, KeyId, Scope};
use crate::es::EventMeta;
use crate::service::accounts::Principal;

/// A scope an operation requires.
pub trait Required {
    const SCOPE: Scope;
}

pub struct Admin;
pub struct Write;
pub struct Read;
pub struct Resolve;

impl Required for Admin {
    const SCOPE: Scope = Scope::Admin;
}
impl Required for Write {
    const SCOPE: Scope = Scope::Write;
}
impl Required for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Required for Resolve {
    const SCOPE: Scope = Scope::Resolve;
}

/// An account API key holding scope `S`.
pub struct Authed<S> {
    pub account_id: AccountId,
    pub key_id: KeyId,
    pub meta: EventMeta,
    /// Every scope the key holds, for operations that ask more of some changes than of others.
    pub scopes: Vec<Scope>,
    _scope: PhantomData<S>,
}

impl<S> Authed<S> {
    /// Whether the key holds a scope covering `scope`.
    pub fn holds(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s.covers(scope))
    }
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)
}

/// The presented bearer token, if any. Exactly one `Authorization` header counts: with several,
/// no one of them is more the caller's than another, so the request authenticates as nobody.
/// The scheme is matched case-insensitively (RFC 9110 §11.1), and one or more spaces separate it
/// from the token.
fn bearer(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "send one Authorization header; this request has several",
        ));
    }
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    Ok(Some(token.to_owned()))
}

/// Resolves the caller, answering 401 for a missing, unknown or revoked token.
fn principal(req: &HttpRequest) -> Result<Principal, ApiError> {
    let token = bearer(req)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingToken,
            "this operation needs an API key: send Authorization: Bearer <token>",
        )
    })?;
    let state = state(req)?;
    match state.accounts.authenticate(&token) {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the API key is unknown or revoked",
        )),
        Err(error) => {
            tracing::error!(%error, "authentication lookup failed");
            Err(ApiError::internal())
        }
    }
}

fn authorise<S: Required>(req: &HttpRequest) -> Result<Authed<S>, ApiError> {
    let request_id = super::request_id::current();
    match principal(req)? {
        Principal::Key {
            account_id,
            key_id,
            prefix,
            scopes,
        } if scopes.iter().any(|s| s.covers(S::SCOPE)) => Ok(Authed {
            account_id,
            key_id,
            meta: EventMeta {
                actor: prefix,
                request_id,
            },
            scopes,
            _scope: PhantomData,
        }),
        Principal::Key { .. } => Err(ApiError::new(
            ErrorCode::InsufficientScope,
            format!(
                "this operation needs an API key with the `{}` scope",
                S::SCOPE.as_str()
            ),
        )),
        Principal::Operator => Err(ApiError::new(
            ErrorCode::InsufficientScope,
            "the admin token creates accounts; account operations need an account API key",
        )),
    }
}

impl<S: Required> FromRequest for Authed<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorise(req))
    }
}

/// Allowed to create accounts: the operator, or anyone when open sign-up is on.
pub struct Signup {
    pub meta: EventMeta,
}

fn signup(req: &HttpRequest) -> Result<Signup, ApiError> {
    let request_id = super::request_id::current();
    if state(req)?.open_signup {
        return Ok(Signup {
            meta: EventMeta {
                actor: "signup".into(),
                request_id,
            },
        });
    }
    match principal(req)? {
        Principal::Operator => Ok(Signup {
            meta: EventMeta {
                actor: "operator".into(),
                request_id,
            },
        }),
        Principal::Key { .. } => Err(ApiError::new(
            ErrorCode::InsufficientScope,
            "creating accounts needs the operator's admin token",
        )),
    }
}

impl FromRequest for Signup {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(signup(req))
    }
}

/// The operator, with the admin token: what the operator's routes (`/v1/admin/…`) need.
pub struct Operator;

fn operator(req: &HttpRequest) -> Result<Operator, ApiError> {
    match principal(req)? {
        Principal::Operator => Ok(Operator),
        Principal::Key { .. } => Err(ApiError::new(
            ErrorCode::InsufficientScope,
            "this operation needs the operator's admin token",
        )),
    }
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(operator(req))
    }
}
