//! Request ids: `X-Request-Id` is honoured when the caller (a proxy) sends a
//! sane one, generated otherwise, echoed on the response and written on the
//! access log line, so one request can be followed across services.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpMessage;

pub const HEADER: &str = "x-request-id";

/// The id of the request being handled, for log lines.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// At most 128 visible ASCII characters: anything else could forge or break
/// log lines, so it is replaced.
fn accepted(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

pub fn middleware<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let id = req
        .headers()
        .get(HEADER)
        .and_then(accepted)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let call = srv.call(req);
    async move {
        let mut res = call.await?;
        if let Ok(value) = HeaderValue::from_str(&id) {
            res.headers_mut()
                .insert(HeaderName::from_static(HEADER), value);
        }
        Ok(res)
    }
}
