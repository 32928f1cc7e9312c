//! Templates with nginx `$variables` (`auth-url`, `auth-signin`, `upstream-hash-by`,
//! `rewrite-target`).
//!
//! A text that parses renders without panic; the literal parts are the text without its
//! variables; printed (`${name}` for each variable) it parses to the same template; capture
//! groups appear only when allowed; a text without `$` is one literal, itself.
//!
//! Input: a first byte whose low bit allows `$1`…`$9`, then the text.
#![no_main]

use gatehouse::snapshot::policy::{Template, Var};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let captures = flags & 1 != 0;
    let template = match Template::parse(text, captures) {
        Ok(t) => t,
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(
                text.contains('$'),
                "{text:?} refused without a variable: {reason}"
            );
            return;
        }
    };
    if !text.contains('$') {
        assert!(template.is_literal());
        assert_eq!(template.render(|_| unreachable!()), text);
    }
    for var in template.vars() {
        assert!(
            captures || !matches!(var, Var::Capture(_)),
            "{text:?}: capture {var} allowed"
        );
    }
    // Each variable marked, and each variable empty: the literal text stays in place.
    let marked = template.render(|v| format!("\u{1}{v}\u{2}"));
    let literal = template.render(|_| String::new());
    let mut stripped = String::new();
    let mut inside = false;
    for c in marked.chars() {
        match c {
            '\u{1}' if !text.contains('\u{1}') => inside = true,
            '\u{2}' if !text.contains('\u{2}') => inside = false,
            c if !inside => stripped.push(c),
            _ => {}
        }
    }
    if !text.contains(['\u{1}', '\u{2}']) {
        assert_eq!(stripped, literal, "{text:?}");
    }
    assert!(
        !literal.contains('$'),
        "{text:?}: a `$` left in {literal:?}"
    );
    // Printed, it parses to itself.
    let shown = template.to_string();
    let again = Template::parse(&shown, captures);
    assert_eq!(
        again.as_ref(),
        Ok(&template),
        "{text:?} printed as {shown:?}"
    );
    let count = template.vars().count();
    assert_eq!(
        template.render(|v| format!("${{{v}}}")),
        shown,
        "{text:?}: {count} variables"
    );
});
