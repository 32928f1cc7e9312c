//! The one body type the data plane hands on, and Gatehouse's own short answers.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Error type of every body the proxy hands on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The one body type of requests to upstreams and responses to clients.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of bytes known in full.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A body with nothing in it.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A short plain-text answer from Gatehouse itself.
pub fn short_response(status: StatusCode, text: &'static str) -> Response<BoxBody> {
    let mut resp = Response::new(full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
