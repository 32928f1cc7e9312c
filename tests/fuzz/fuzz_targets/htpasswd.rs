//! htpasswd files and auth-map Secrets (`auth-type: basic`), and the `Authorization: Basic`
//! header.
//!
//! Every line that is not blank or a comment either gives its user (the first line of a user
//! wins) or one problem naming the line; the users of a file are those of the auth map built
//! from its usable lines; a `{PLAIN}` user verifies its own password and not another; unknown
//! users never verify. Only the cheap formats are verified here (bcrypt and the crypt family
//! are slow by design and are only parsed). A Basic header read back gives the user and
//! password it was made of.
//!
//! Input: the file's text; after a NUL byte, an `Authorization` header value.
#![no_main]

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse::snapshot::policy::Htpasswd;
use gatehouse::snapshot::policy::htpasswd::basic_credentials;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use sha1::{Digest as _, Sha1};

fuzz_target!(|data: &[u8]| {
    let (file, header) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(text) = std::str::from_utf8(file) {
        check_file(text);
    }
    check_header(header);
});

fn check_file(text: &str) {
    let (users, problems) = Htpasswd::parse_file(text);
    // The lines that count, as (line number, user, hash).
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ':');
        let user = fields.next().unwrap_or_default();
        lines.push((i + 1, user, fields.next()));
    }
    let problem_of = |n: usize| {
        let here: Vec<&String> = problems
            .iter()
            .filter(|p| {
                p.starts_with(&format!("line {n}:")) || p.starts_with(&format!("line {n} ("))
            })
            .collect();
        assert!(here.len() <= 1, "line {n}: {here:?}");
        here.first().map(|p| p.as_str())
    };
    let mut first: HashMap<&str, &str> = HashMap::new();
    let mut usable = Vec::new();
    for &(n, user, hash) in &lines {
        let problem = problem_of(n);
        match hash {
            None => assert!(problem.is_some(), "line {n} has no hash and no problem"),
            Some(_) if user.is_empty() => {
                assert!(problem.is_some(), "line {n} has no user and no problem")
            }
            Some(hash) => {
                if let Some(plain) = hash.strip_prefix("{PLAIN}") {
                    assert!(
                        problem.is_none(),
                        "line {n}: {{PLAIN}} refused: {problem:?}"
                    );
                    let _ = plain;
                }
                if let Some(b64) = hash.strip_prefix("{SHA}") {
                    let valid = STANDARD.decode(b64).is_ok_and(|d| d.len() == 20);
                    assert_eq!(
                        problem.is_none(),
                        valid,
                        "line {n}: {{SHA}}{b64}: {problem:?}"
                    );
                }
                if problem.is_none() {
                    first.entry(user).or_insert(hash);
                    usable.push((user, hash));
                }
            }
        }
    }
    assert_eq!(
        problems.len() + usable.len(),
        lines.len(),
        "a problem for every unusable line: {problems:?}"
    );
    assert_eq!(users.len(), first.len(), "users of {text:?}");

    // The same users from an auth map of the usable lines (first of a user).
    let untrimmed = first.values().all(|h| h.trim() == *h);
    let (mapped, map_problems) = Htpasswd::from_map(first.iter().map(|(u, h)| (*u, *h)));
    assert!(map_problems.is_empty(), "{map_problems:?}");
    if untrimmed {
        assert_eq!(mapped, users, "auth map of {first:?}");
    }

    for (user, hash) in first {
        if let Some(plain) = hash.strip_prefix("{PLAIN}") {
            assert!(
                users.verify(user, plain.as_bytes()),
                "{user}: {{PLAIN}}{plain}"
            );
            let mut wrong = plain.as_bytes().to_vec();
            wrong.push(b'x');
            assert!(
                !users.verify(user, &wrong),
                "{user}: {{PLAIN}}{plain} with more"
            );
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            // The password whose digest it is cannot be known; a wrong one must fail.
            let digest = STANDARD.decode(b64).unwrap();
            let guess = user.as_bytes();
            let right = Sha1::digest(guess).as_slice() == digest.as_slice();
            assert_eq!(users.verify(user, guess), right, "{user}: {{SHA}}");
        }
    }
    assert!(!users.verify("\u{0}no such user", b""));
}

fn check_header(bytes: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let Some((user, password)) = basic_credentials(&value) else {
        return;
    };
    assert!(!user.contains(':'), "user {user:?} from {value:?}");
    let mut raw = user.clone().into_bytes();
    raw.push(b':');
    raw.extend_from_slice(&password);
    let again = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(&raw))).unwrap();
    assert_eq!(
        basic_credentials(&again),
        Some((user, password)),
        "{value:?} read back"
    );
}
