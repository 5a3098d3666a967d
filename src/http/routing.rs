//! What every route shares (RFC 9110 §9, §15.5.6): a resource answers the methods it declares,
//! `HEAD` wherever it answers `GET` (the same status and headers, no body), and any other method
//! with 405 `method_not_allowed` and an `Allow` header listing the ones it has; a path no resource
//! has answers 404 `route_not_found`. All of them with the error envelope. Resources are declared
//! with [`resource`] so that none can forget a rule.

use actix_web::body::{self, BodySize, EitherBody, MessageBody};
use actix_web::dev::{AppService, HttpServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{Error, FromRequest, Handler, HttpResponse, Responder, ResponseError, web};

use super::error::{ApiError, ErrorCode};

/// The order methods are listed in `Allow`.
const ORDER: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// A path and the handler of each method it answers.
pub struct Resource {
    inner: actix_web::Resource,
    methods: Vec<Method>,
}

/// Starts a resource at `path` (an actix pattern such as `/v1/byok/get/{id}`).
pub fn resource(path: &str) -> Resource {
    Resource {
        inner: web::resource(path),
        methods: Vec::new(),
    }
}

impl Resource {
    /// `GET`, and `HEAD` with the same handler.
    pub fn get<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.inner = self
            .inner
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler).wrap(from_fn(without_streamed_body)));
        self.methods.extend([Method::GET, Method::HEAD]);
        self
    }

    pub fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.answer(Method::POST, handler)
    }

    pub fn patch<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.answer(Method::PATCH, handler)
    }

    pub fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.answer(Method::DELETE, handler)
    }

    fn answer<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.inner = self.inner.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }

    /// The `Allow` value: the declared methods in [`ORDER`].
    fn allow(&self) -> String {
        ORDER
            .iter()
            .filter(|m| self.methods.contains(m))
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl HttpServiceFactory for Resource {
    fn register(self, config: &mut AppService) {
        // Method names are ASCII tokens, so the value is always a valid header.
        let allow = HeaderValue::from_str(&self.allow()).unwrap_or(HeaderValue::from_static(""));
        self.inner
            .default_service(web::to(move || {
                let allow = allow.clone();
                async move { method_not_allowed(allow) }
            }))
            .register(config);
    }
}

fn method_not_allowed(allow: HeaderValue) -> HttpResponse {
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not answer that method; the Allow header lists the ones it does",
    )
    .error_response();
    response.headers_mut().insert(ALLOW, allow);
    response
}

/// The answer to a path no resource has.
pub async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::RouteNotFound, "no such route"))
}

/// `HEAD` answers the headers `GET` would. The server leaves out a sized body itself (keeping its
/// `Content-Length`), but would go on polling a streamed one, so a `HEAD` of the event stream
/// would stay open for as long as a `GET` does: a streamed body is dropped here instead.
async fn without_streamed_body(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, body::None>>, Error> {
    let response = next.call(req).await?;
    Ok(match response.response().body().size() {
        BodySize::Stream => response.map_body(|_, _| EitherBody::right(body::None::new())),
        _ => response.map_into_left_body(),
    })
}
