//! htpasswd files and auth-map Secrets: the password hashes nginx's `auth_basic_user_file`
//! accepts, parsed when the configuration changes and verified per request.
//!
//! Formats: bcrypt (`$2a$`, `$2b$`, `$2y$`), Apache MD5 (`$apr1$`), MD5-crypt (`$1$`),
//! SHA-crypt (`$5$`, `$6$`), traditional DES crypt (13 characters), `{SHA}` (base64 SHA-1),
//! `{SSHA}` (salted SHA-1) and `{PLAIN}`. Each hash is checked for its shape when parsed, so a
//! line nginx could not verify is reported then, not at the first login.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The highest bcrypt cost taken: Apache's `htpasswd -B -C` allows 4 to 17; 17 already takes
/// about 10 s a login on one core, and each step doubles it.
const MAX_BCRYPT_COST: u32 = 17;
/// The highest SHA-crypt `rounds=` taken (the default is 5,000; a million takes about 0.5 s).
const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;

/// Users and their password hashes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<Box<str>, Hash>,
}

impl fmt::Debug for Htpasswd {
    // Hashes stay out of logs and dumps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(|u| &**u).collect();
        users.sort_unstable();
        f.debug_struct("Htpasswd").field("users", &users).finish()
    }
}

/// One parsed password hash.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    /// bcrypt, MD5-crypt, SHA-crypt or DES crypt: verified by recomputing with pwhash.
    Crypt(Box<str>),
    /// `$apr1$salt$hash`.
    Apr1 { salt: Box<str>, hash: Box<str> },
    /// `{SHA}`: the SHA-1 digest.
    Sha1([u8; 20]),
    /// `{SSHA}`: the SHA-1 digest of password + salt, and the salt.
    Ssha { digest: [u8; 20], salt: Box<[u8]> },
    /// `{PLAIN}`.
    Plain(Box<[u8]>),
}

// === impl Htpasswd ===

impl Htpasswd {
    /// Parses an htpasswd file (`user:hash[:comment]` lines; blank lines and `#` comments are
    /// skipped). Returns the users and one message per line that cannot be used (that user is
    /// left out: refused, never let in without a password).
    pub fn parse_file(text: &str) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let user = fields.next().unwrap_or_default();
            let Some(hash) = fields.next() else {
                problems.push(format!("line {}: expected user:hash", i + 1));
                continue;
            };
            out.add(user, hash, &format!("line {}", i + 1), &mut problems);
        }
        (out, problems)
    }

    /// Builds the users of an auth-map Secret (keys are users, values their hashes).
    pub fn from_map<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut problems = Vec::new();
        for (user, hash) in entries {
            out.add(user, hash.trim(), &format!("key {user:?}"), &mut problems);
        }
        (out, problems)
    }

    fn add(&mut self, user: &str, hash: &str, place: &str, problems: &mut Vec<String>) {
        if user.is_empty() {
            problems.push(format!("{place}: empty user name"));
            return;
        }
        match Hash::parse(hash) {
            // The first line of a user wins, as nginx reads the file top down.
            Ok(hash) => {
                self.users.entry(user.into()).or_insert(hash);
            }
            Err(reason) => problems.push(format!("{place} (user {user:?}): {reason}")),
        }
    }

    /// Whether `password` is the password of `user`. Unknown users are refused after the same
    /// kind of work is not done: callers must not reveal which users exist beyond timing of
    /// the hash itself.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.users.get(user).is_some_and(|h| h.verify(password))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

// === impl Hash ===

impl Hash {
    fn parse(text: &str) -> Result<Self, String> {
        const CRYPT64: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let crypt64 = |s: &str| !s.is_empty() && s.bytes().all(|b| CRYPT64.as_bytes().contains(&b));
        if let Some(b64) = text.strip_prefix("{SHA}") {
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| "{SHA} hash is not base64")?;
            let digest: [u8; 20] = bytes.try_into().map_err(|_| "{SHA} hash is not 20 bytes")?;
            return Ok(Hash::Sha1(digest));
        }
        if let Some(b64) = text.strip_prefix("{SSHA}") {
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| "{SSHA} hash is not base64")?;
            if bytes.len() <= 20 {
                return Err("{SSHA} hash has no salt".into());
            }
            let (digest, salt) = bytes.split_at(20);
            let digest: [u8; 20] = digest.try_into().map_err(|_| "{SSHA} hash is too short")?;
            return Ok(Hash::Ssha {
                digest,
                salt: salt.into(),
            });
        }
        if let Some(plain) = text.strip_prefix("{PLAIN}") {
            return Ok(Hash::Plain(plain.as_bytes().into()));
        }
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, hash) = rest.split_once('$').ok_or("$apr1$ hash has no salt")?;
            if salt.is_empty() || salt.len() > 8 || hash.len() != 22 || !crypt64(hash) {
                return Err("malformed $apr1$ hash".into());
            }
            return Ok(Hash::Apr1 {
                salt: salt.into(),
                hash: hash.into(),
            });
        }
        let parts: Vec<&str> = text.split('$').collect();
        // Every failed login recomputes the hash: a cost nobody chooses for a login would let
        // each wrong password burn seconds to hours of a core.
        if let ["", "2a" | "2b" | "2y", cost, _] = parts.as_slice()
            && let Ok(cost) = cost.parse::<u32>()
            && cost > MAX_BCRYPT_COST
        {
            return Err(format!(
                "bcrypt cost {cost} is over {MAX_BCRYPT_COST} (each login would take seconds \
                 or more; htpasswd -B -C accepts 4 to 17)"
            ));
        }
        if let ["", "5" | "6", rounds, _, _] = parts.as_slice()
            && let Some(Ok(rounds)) = rounds.strip_prefix("rounds=").map(str::parse::<u32>)
            && rounds > MAX_SHA_CRYPT_ROUNDS
        {
            return Err(format!(
                "SHA-crypt rounds={rounds} is over {MAX_SHA_CRYPT_ROUNDS} (each login would \
                 take seconds or more; the default is 5000)"
            ));
        }
        let valid = match parts.as_slice() {
            ["", "2a" | "2b" | "2y", cost, rest] => {
                cost.len() == 2
                    && cost.parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
                    && rest.len() == 53
                    && crypt64(rest)
            }
            ["", "1", salt, hash] => salt.len() <= 8 && hash.len() == 22 && crypt64(hash),
            ["", "5" | "6", rounds, _, hash] if rounds.starts_with("rounds=") => {
                rounds[7..].parse::<u32>().is_ok() && crypt64(hash)
            }
            ["", "5" | "6", _, hash] => crypt64(hash),
            [des] if des.len() == 13 => crypt64(des),
            _ => false,
        };
        if !valid {
            let hint = if text.starts_with("$y$") || text.starts_with("$gy$") {
                "yescrypt hashes are not supported (use bcrypt: htpasswd -B)"
            } else {
                "not a hash format nginx accepts (bcrypt, $apr1$, $1$, $5$, $6$, crypt, {SHA}, {SSHA}, {PLAIN})"
            };
            return Err(hint.into());
        }
        Ok(Hash::Crypt(text.into()))
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Crypt(hash) => pwhash::unix::verify(password, hash),
            Hash::Apr1 { salt, hash } => {
                let made = md5_crypt(b"$apr1$", salt.as_bytes(), password);
                made.as_bytes().ct_eq(hash.as_bytes()).into()
            }
            Hash::Sha1(digest) => Sha1::digest(password).as_slice().ct_eq(digest).into(),
            Hash::Ssha { digest, salt } => {
                let mut sha = Sha1::new();
                sha.update(password);
                sha.update(salt);
                sha.finalize().as_slice().ct_eq(digest).into()
            }
            Hash::Plain(plain) => plain.ct_eq(password).into(),
        }
    }
}

/// The MD5-crypt hash (the 22 characters after the salt) of `password` with `magic` (`$1$`
/// or Apache's `$apr1$`, which differ only in this string) and `salt`.
fn md5_crypt(magic: &[u8], salt: &[u8], password: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }
    // The digest's bytes, in MD5-crypt's order, in the crypt alphabet.
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |value: u32, chars: usize| {
        let mut v = value;
        for _ in 0..chars {
            out.push(char::from(ALPHABET[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    put(d(11), 2);
    out
}

/// The user and password of an `Authorization: Basic …` header value.
pub fn basic_credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let text = value.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}
