//! The `Authorization` header value, built once at start-up.
//!
//! It is the only form of the password the proxy keeps after loading. The
//! value is marked sensitive (HPACK never indexes it, and `HeaderValue`'s
//! `Debug` prints `Sensitive`), and this type's own `Debug` prints nothing.

use base64::Engine as _;
use http::HeaderValue;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// `Basic base64(username:password)`.
#[derive(Clone)]
pub struct BasicAuth(HeaderValue);

impl BasicAuth {
    /// Builds the header value. The intermediate strings are wiped on drop.
    pub fn new(username: &str, password: &SecretString) -> Self {
        let mut pair = Zeroizing::new(String::with_capacity(
            username.len() + 1 + password.expose_secret().len(),
        ));
        pair.push_str(username);
        pair.push(':');
        pair.push_str(password.expose_secret());
        let mut value = Zeroizing::new(String::from("Basic "));
        base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut value);
        // Base64 and "Basic " are always valid header characters.
        let mut header = HeaderValue::from_str(&value).expect("base64 is a valid header value");
        header.set_sensitive(true);
        Self(header)
    }

    /// A copy of the value for one request (a reference-count increment).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_user_colon_password_and_hides_it() {
        let pw = SecretString::from("fake pass:@/%+ word");
        let auth = BasicAuth::new("ci-user", &pw);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ci-user:fake pass:@/%+ word")
        );
        assert_eq!(auth.header_value(), expected.as_str());
        assert!(auth.header_value().is_sensitive());
        let shown = format!("{auth:?} {:?}", auth.header_value());
        assert!(!shown.contains(&expected[6..]), "{shown}");
        assert!(!shown.contains("fake"), "{shown}");
    }
}
