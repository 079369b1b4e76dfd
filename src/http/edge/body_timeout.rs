//! A bound on the time a request body may take to arrive (`HTTP_BODY_TIMEOUT_SECS`), counted
//! from when its headers were read. Without it, a client that sends headers and then trickles
//! or withholds the body keeps its connection, and a file descriptor, for as long as it likes.
//!
//! The middleware puts a deadline in front of the request's payload: once it passes, reading
//! the body fails, and whatever the handler made of that failure is answered as
//! `408 request_timeout` with `Connection: close`. A body that was not read to its end also
//! closes the connection after the answer: the payload is kept alive until the answer's body is
//! sent, so that actix-http's dispatcher sees it unfinished and closes instead of waiting to
//! drain a body that may never come.

use std::cell::RefCell;
use std::future::{ready, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::PayloadError;
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::web::Bytes;
use actix_web::{HttpMessage as _, ResponseError as _};
use futures_util::future::LocalBoxFuture;
use futures_util::Stream;
use tokio::time::Sleep;

use crate::http::error::{ApiError, ErrorCode};

/// The middleware: `App::new().wrap(BodyTimeout::new(limit))`.
#[derive(Clone, Copy)]
pub(crate) struct BodyTimeout {
    limit: Duration,
}

impl BodyTimeout {
    pub(crate) fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S, B> Transform<S, ServiceRequest> for BodyTimeout
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = BodyTimeoutService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(BodyTimeoutService {
            service: Rc::new(service),
            limit: self.limit,
        }))
    }
}

pub(crate) struct BodyTimeoutService<S> {
    service: Rc<S>,
    limit: Duration,
}

impl<S, B> Service<ServiceRequest> for BodyTimeoutService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let payload = req.take_payload();
        if matches!(payload, Payload::None) {
            let call = self.service.call(req);
            return Box::pin(async move { Ok(call.await?.map_into_boxed_body()) });
        }
        let body = Rc::new(RefCell::new(Body {
            payload,
            finished: false,
            expired: false,
        }));
        req.set_payload(Payload::from(Box::pin(Deadlined {
            body: Rc::clone(&body),
            deadline: Box::pin(tokio::time::sleep(self.limit)),
        })
            as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>));
        let call = self.service.call(req);
        let limit = self.limit;
        Box::pin(async move {
            let res = call.await?;
            let (expired, finished) = {
                let body = body.borrow();
                (body.expired, body.finished)
            };
            let res = if expired {
                let (req, _) = res.into_parts();
                let mut answer = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::RequestTimeout,
                    format!(
                        "the request body did not arrive within {} seconds",
                        limit.as_secs()
                    ),
                )
                .error_response();
                answer.head_mut().set_connection_type(ConnectionType::Close);
                ServiceResponse::new(req, answer)
            } else {
                res.map_into_boxed_body()
            };
            if finished {
                return Ok(res);
            }
            Ok(res.map_body(|_, answer| {
                BoxBody::new(HoldingBody {
                    answer,
                    _unfinished: body,
                })
            }))
        })
    }
}

/// The request body as the dispatcher feeds it, shared by the handler's stream and the
/// middleware.
struct Body {
    payload: Payload,
    /// Read to its end: the dispatcher no longer holds it.
    finished: bool,
    /// The deadline passed before its end.
    expired: bool,
}

/// The payload the handler reads: the body until the deadline, then an error.
struct Deadlined {
    body: Rc<RefCell<Body>>,
    deadline: Pin<Box<Sleep>>,
}

impl Stream for Deadlined {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The deadline first: a body that trickles in is always ready with another byte.
        let expired = self.deadline.as_mut().poll(cx).is_ready();
        let mut body = self.body.borrow_mut();
        if body.finished {
            return Poll::Ready(None);
        }
        if expired || body.expired {
            body.expired = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            )))));
        }
        let next = Pin::new(&mut body.payload).poll_next(cx);
        if let Poll::Ready(None) = next {
            body.finished = true;
        }
        next
    }
}

/// An answer's body that keeps an unfinished request body alive until it is sent.
struct HoldingBody {
    answer: BoxBody,
    _unfinished: Rc<RefCell<Body>>,
}

impl MessageBody for HoldingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.answer.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.answer).poll_next(cx)
    }
}
