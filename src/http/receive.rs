//! How long a request body may take to arrive. Every request's body is read through a stream
//! that fails once the body timeout (`--body-timeout`) has passed since the request's headers
//! were read, or, while it waits on the client, once the server begins to shut down: a client
//! that stops sending holds neither its connection nor the shutdown. `body.rs` answers those
//! failures (408 `request_timeout`, 503 `shutting_down`); see ADR 0014.
//!
//! The receiving end of the body stays alive until the response has been written, whether or not
//! a handler read it. actix closes a connection whose body is still unread at that point; were
//! the receiving end dropped, it would instead drain a chunked body to its end, which a stalled
//! client never reaches.
//!
//! Imports nothing of keyledger beyond the shared state: no handler, no service.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage, web};
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, Stream};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::AppState;

/// What bounds the reception of request bodies.
pub struct Limits {
    /// From the end of the request's headers to the end of its body.
    pub timeout: Duration,
    /// Flips to `true` when the server begins to shut down.
    pub closing: watch::Receiver<bool>,
}

/// Why a body stopped being read before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("the server began to shut down before the request body arrived")]
    ShuttingDown,
}

impl Cut {
    /// The cut a payload error stands for, if it is one.
    pub fn of(error: &PayloadError) -> Option<Cut> {
        match error {
            PayloadError::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<Cut>())
                .copied(),
            _ => None,
        }
    }

    fn into_payload_error(self) -> PayloadError {
        PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, self))
    }
}

/// Puts every request's body behind [`Bounded`], and keeps the body's receiving end alive until
/// the response has been written.
pub async fn middleware(
    state: web::Data<AppState>,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let delivered = match req.take_payload() {
        // No body: nothing to bound or to keep.
        Payload::None => None,
        payload => Some(Rc::new(RefCell::new(payload))),
    };
    if let Some(delivered) = &delivered {
        let limits = &state.receiving;
        let mut closing = limits.closing.clone();
        let bounded = Bounded {
            delivered: delivered.clone(),
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
            timeout: limits.timeout,
            // A dropped sender means the server is gone: that is a shutdown too.
            closing: async move { drop(closing.wait_for(|closing| *closing).await) }.boxed_local(),
            ended: false,
        };
        req.set_payload(Payload::Stream {
            payload: Box::pin(bounded),
        });
    }
    let response = next.call(req).await?;
    Ok(response.map_body(|_, body| match delivered {
        None => EitherBody::left(body),
        Some(delivered) => EitherBody::right(Holding {
            body: body.boxed(),
            _delivered: delivered,
        }),
    }))
}

/// The body as handlers read it: the delivered one, until its time is up or the server shuts
/// down while it waits for the client.
struct Bounded {
    delivered: Rc<RefCell<Payload>>,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    closing: LocalBoxFuture<'static, ()>,
    ended: bool,
}

impl Bounded {
    fn cut(&mut self, cut: Cut) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.ended = true;
        Poll::Ready(Some(Err(cut.into_payload_error())))
    }
}

impl Stream for Bounded {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // The deadline first: a client dripping a byte at a time is still cut at the deadline.
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.cut(Cut::TimedOut(this.timeout));
        }
        // Only this stream borrows the delivered body; the response merely keeps it alive.
        let polled = match this.delivered.try_borrow_mut() {
            Ok(mut delivered) => Pin::new(&mut *delivered).poll_next(cx),
            Err(_) => Poll::Pending,
        };
        match polled {
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            // Waiting on the client: a shutdown does not wait with it. A body that has already
            // arrived is read to its end first.
            Poll::Pending if this.closing.as_mut().poll(cx).is_ready() => {
                this.cut(Cut::ShuttingDown)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A response body that keeps the request's delivered body alive until it has been written.
struct Holding {
    body: actix_web::body::BoxBody,
    _delivered: Rc<RefCell<Payload>>,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_survives_the_payload_error_it_travels_in() {
        for cut in [Cut::TimedOut(Duration::from_secs(3)), Cut::ShuttingDown] {
            assert_eq!(Cut::of(&cut.into_payload_error()), Some(cut));
        }
        // Other failures of the connection are not cuts.
        assert_eq!(Cut::of(&PayloadError::Incomplete(None)), None);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Cut::of(&PayloadError::Io(reset)), None);
    }
}
