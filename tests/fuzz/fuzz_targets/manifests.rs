//! Manifest parsing: a file's YAML (several documents, `kind: List`) to objects.
//!
//! Never panics, and the fast path (a file split at its `---` lines, each document parsed on
//! its own, unchanged documents reused on a rescan) gives what one pass over the whole stream
//! gives: the same objects, or an error for the same files.
//!
//! Input: the file's text; a NUL byte splits it into the text before a rescan and the text
//! after it.
#![no_main]

use gatehouse::objects::Object;
use gatehouse::sources::manifests::{parse_documents, parse_stream, reparse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (old, new) = text.split_once('\0').unwrap_or(("", text));
    let reference = parse_stream(new).map(|o| describe(&o));
    let fast = parse_documents(new).map(|o| describe(&o));
    assert_same(&reference, &fast, "parse_documents");
    let rescanned = reparse(old, new).map(|o| describe(&o));
    assert_same(&reference, &rescanned, "reparse");
});

/// Both parsed to the same objects in the same order, or both failed with the same error.
fn assert_same(
    reference: &Result<Vec<String>, String>,
    other: &Result<Vec<String>, String>,
    what: &str,
) {
    assert_eq!(reference, other, "{what} differs from the stream parse");
}

/// Each object as kind, key and its JSON.
fn describe(objects: &[Object]) -> Vec<String> {
    objects
        .iter()
        .map(|object| {
            let json = match object {
                Object::IngressClass(o) => serde_json::to_string(&**o),
                Object::Ingress(o) => serde_json::to_string(&**o),
                Object::Service(o) => serde_json::to_string(&**o),
                Object::EndpointSlice(o) => serde_json::to_string(&**o),
                Object::Secret(o) => serde_json::to_string(&**o),
                Object::StaticSite(o) => serde_json::to_string(&**o),
            };
            format!(
                "{} {}",
                object.describe(),
                json.unwrap_or_else(|e| e.to_string())
            )
        })
        .collect()
}
