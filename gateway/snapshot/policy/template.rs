//! Text with nginx `$variables` (`auth-url`, `auth-signin`, `upstream-hash-by`,
//! `rewrite-target`), parsed once into literal parts and known variables; filled in per request
//! by the caller, who knows the request.

use std::fmt;

use http::HeaderName;

/// A parsed text with variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Var(Var),
}

/// The nginx variables Gatehouse knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    /// `$1` … `$9`: a capture group of the route's path regex (only in `rewrite-target`).
    Capture(u8),
    /// `$host`: the request's host, lower case, without port.
    Host,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$request_uri`: the path and query as received.
    RequestUri,
    /// `$escaped_request_uri`: `$request_uri` percent-encoded for a query parameter.
    EscapedRequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$args` / `$query_string`: the query, without `?`.
    Args,
    /// `$remote_addr`: the client address (see [`super::client_addr`]).
    RemoteAddr,
    /// `$request_method`.
    Method,
    /// `$http_NAME`: a request header (`_` in the name is `-`).
    Header(HeaderName),
    /// `$cookie_NAME`: a request cookie.
    Cookie(Box<str>),
    /// `$arg_NAME`: a query parameter.
    Arg(Box<str>),
}

// === impl Template ===

impl Template {
    /// Parses `text`; `captures` allows `$1`…`$9`. `$name` and `${name}` are variables; an
    /// unknown variable or a lone `$` is an error that names it.
    pub fn parse(text: &str, captures: bool) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else if after.starts_with(|c: char| c.is_ascii_digit()) {
                (&after[..1], &after[1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(format!("a lone \"$\" in {text:?}"));
            }
            let var = Var::parse(name).ok_or_else(|| format!("unknown variable ${name}"))?;
            if matches!(var, Var::Capture(_)) && !captures {
                return Err(format!(
                    "${name} (a capture group) is only meaningful in rewrite-target"
                ));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal).into()));
            }
            parts.push(Part::Var(var));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into()));
        }
        Ok(Self { parts })
    }

    /// The text with each variable replaced by what `value` gives for it.
    pub fn render(&self, mut value: impl FnMut(&Var) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => out.push_str(&value(v)),
            }
        }
        out
    }

    /// The variables it uses.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// Whether it has no variable (the text is fixed).
    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(l) => f.write_str(l)?,
                Part::Var(v) => write!(f, "${{{v}}}")?,
            }
        }
        Ok(())
    }
}

// === impl Var ===

impl Var {
    fn parse(name: &str) -> Option<Self> {
        if let [digit @ b'1'..=b'9'] = name.as_bytes() {
            return Some(Var::Capture(digit - b'0'));
        }
        Some(match name {
            "host" => Var::Host,
            "scheme" => Var::Scheme,
            "request_uri" => Var::RequestUri,
            "escaped_request_uri" => Var::EscapedRequestUri,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "remote_addr" | "binary_remote_addr" => Var::RemoteAddr,
            "request_method" => Var::Method,
            _ => {
                if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    let header = h.replace('_', "-").to_ascii_lowercase();
                    return HeaderName::from_bytes(header.as_bytes())
                        .ok()
                        .map(Var::Header);
                }
                if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    return Some(Var::Cookie(c.into()));
                }
                if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    return Some(Var::Arg(a.into()));
                }
                return None;
            }
        })
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Capture(n) => write!(f, "{n}"),
            Var::Host => f.write_str("host"),
            Var::Scheme => f.write_str("scheme"),
            Var::RequestUri => f.write_str("request_uri"),
            Var::EscapedRequestUri => f.write_str("escaped_request_uri"),
            Var::Uri => f.write_str("uri"),
            Var::Args => f.write_str("args"),
            Var::RemoteAddr => f.write_str("remote_addr"),
            Var::Method => f.write_str("request_method"),
            Var::Header(h) => write!(f, "http_{}", h.as_str().replace('-', "_")),
            Var::Cookie(c) => write!(f, "cookie_{c}"),
            Var::Arg(a) => write!(f, "arg_{a}"),
        }
    }
}
