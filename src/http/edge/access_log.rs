//! One access line per request: its id, the peer, the request line, status, size and time.
//! Never the headers (they carry the session token), and never the query string: a token sent
//! as `?token=…` is refused, and must not be kept in the log either.

use actix_web::dev::ServiceRequest;
use actix_web::middleware::Logger;

/// The access logger every App wraps itself in.
pub(crate) fn logger() -> Logger {
    Logger::new(r#"%{x-request-id}o %a "%{request_line}xi" %s %b %Dms"#).custom_request_replace(
        "request_line",
        |req: &ServiceRequest| {
            request_line(
                req.method().as_str(),
                req.path(),
                req.query_string(),
                req.version(),
            )
        },
    )
}

/// `GET /path HTTP/1.1`, with `?…` standing for a query string, whose content is never logged.
fn request_line(
    method: &str,
    path: &str,
    query: &str,
    version: actix_web::http::Version,
) -> String {
    let marker = if query.is_empty() { "" } else { "?…" };
    format!("{method} {path}{marker} {version:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Version;

    #[test]
    fn a_query_string_is_replaced_by_a_marker() {
        assert_eq!(
            request_line("GET", "/billing/status", "token=abc", Version::HTTP_11),
            "GET /billing/status?… HTTP/1.1"
        );
        assert_eq!(
            request_line("POST", "/webhooks/stripe", "", Version::HTTP_10),
            "POST /webhooks/stripe HTTP/1.0"
        );
    }
}
