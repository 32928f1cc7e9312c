//! nginx's request variables (`$host`, `$request_uri`, `$http_NAME`, `$cookie_NAME`, …) as the
//! templates of `auth-url`, `auth-signin`, `upstream-hash-by` and `rewrite-target` read them:
//! one meaning in every one of them, from the request as the client sent it.

use http::{Request, header};

use super::ConnInfo;
use super::headers::request_cookies;
use crate::snapshot::policy::Var;

/// The value of `var` for `req`. Captures (`$1`…) belong to the rewrite whose regex matched
/// and are empty here.
pub fn value<B>(var: &Var, conn: &ConnInfo, req: &Request<B>) -> String {
    let uri = req.uri();
    match var {
        Var::Host => super::route::request_host(req)
            .map(|h| crate::routing::normalize_host(h).to_ascii_lowercase())
            .unwrap_or_default(),
        Var::Scheme => conn.scheme.to_owned(),
        Var::RequestUri => request_uri(req).to_owned(),
        Var::EscapedRequestUri => {
            let mut out = String::new();
            escape_component(request_uri(req), &mut out);
            out
        }
        Var::Uri => uri.path().to_owned(),
        Var::Args => uri.query().unwrap_or_default().to_owned(),
        // Behind `--trusted-proxies`, the address they forwarded for (nginx's realip module).
        Var::RemoteAddr => conn.client_addr(req).to_string(),
        Var::Method => req.method().as_str().to_owned(),
        // Repeated header lines are joined, as nginx (since 1.23) does: cookies with `; `,
        // the others with `, `.
        Var::Header(name) => {
            let separator = if name == header::COOKIE { "; " } else { ", " };
            let mut out = String::new();
            for value in req.headers().get_all(name) {
                let Ok(value) = value.to_str() else { continue };
                if !out.is_empty() {
                    out.push_str(separator);
                }
                out.push_str(value);
            }
            out
        }
        Var::Cookie(name) => request_cookies(req.headers(), name)
            .next()
            .unwrap_or_default()
            .to_owned(),
        // The first parameter of that name, compared without case as nginx does; `?a` is `a`
        // with an empty value.
        Var::Arg(name) => uri
            .query()
            .unwrap_or_default()
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default(),
        Var::Capture(_) => String::new(),
    }
}

/// `$request_uri`: the path and query as received.
pub fn request_uri<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// Percent-encodes everything but unreserved characters (RFC 3986), as nginx's
/// `$escaped_request_uri` for a query parameter value.
pub fn escape_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests;
