//! The leak scanner: every form the credentials can take on the wire or in
//! a file, searched for in whatever a test captured.

use base64::Engine as _;

/// Every form of the test credentials worth searching for.
pub fn forms() -> Vec<(&'static str, Vec<u8>)> {
    forms_of(crate::PASSWORD)
}

/// Every form of the test user with `password` worth searching for (for
/// a password a test rotates to).
pub fn forms_of(password: &str) -> Vec<(&'static str, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pair = format!("{}:{password}", crate::USERNAME);
    vec![
        ("plain password", password.as_bytes().to_vec()),
        ("base64 user:password", b64.encode(&pair).into_bytes()),
        ("base64 password", b64.encode(password).into_bytes()),
        (
            "percent-encoded password",
            percent(password, true).into_bytes(),
        ),
        (
            "percent-encoded password (lower)",
            percent(password, false).into_bytes(),
        ),
        (
            "form-encoded password",
            password.replace(' ', "+").into_bytes(),
        ),
        (
            "json-escaped password",
            serde_like_json(password).into_bytes(),
        ),
    ]
}

fn percent(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn serde_like_json(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('/', "\\/")
}

/// Panics, naming the form and the place, if `haystack` holds the
/// credentials in any form.
pub fn assert_clean(what: &str, haystack: &[u8]) {
    for (form, needle) in forms() {
        if haystack
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            panic!("the credentials leaked into {what} ({form})");
        }
    }
}

/// Panics, naming the form and the place, if `haystack` holds any of
/// `forbidden` (name, bytes): secrets a test adds to the credentials'
/// forms, such as the presigned storage signatures it saw issued.
pub fn assert_lacks(what: &str, haystack: &[u8], forbidden: &[(String, Vec<u8>)]) {
    assert_clean(what, haystack);
    for (form, needle) in forbidden {
        if !needle.is_empty()
            && haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        {
            panic!("a secret leaked into {what} ({form})");
        }
    }
}
