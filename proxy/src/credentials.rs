//! The `Authorization` header value, built once at start-up (and again on
//! each SIGHUP reload), with the matcher that recognises the credential in
//! the upstream's responses.
//!
//! They are the only forms of the password the proxy keeps after loading.
//! The value is marked sensitive (HPACK never indexes it, and
//! `HeaderValue`'s `Debug` prints `Sensitive`), the matcher's needles are
//! wiped on drop, and this type's own `Debug` prints neither.

use base64::Engine as _;
use http::HeaderValue;
use pulp_auth_config::forms::Matcher;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;

/// `Basic base64(username:password)`, and every form of the credential
/// the response scan (`scrub`) looks for.
#[derive(Clone)]
pub struct BasicAuth {
    header: HeaderValue,
    forms: Arc<Matcher>,
}

impl BasicAuth {
    /// Builds the header value and the matcher. The intermediate strings
    /// are wiped on drop.
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
        let forms = Matcher::new(username, password.expose_secret());
        if !forms.skipped.is_empty() {
            tracing::warn!(
                skipped = ?forms.skipped,
                "the password is too short to recognise in some forms; responses are not scanned for them; use a longer password"
            );
        }
        Self {
            header,
            forms: Arc::new(forms),
        }
    }

    /// A copy of the value for one request (a reference-count increment).
    pub fn header_value(&self) -> HeaderValue {
        self.header.clone()
    }

    /// The matcher for the credential's forms, shared by every response
    /// scanned while these credentials are in force.
    pub fn forms(&self) -> &Arc<Matcher> {
        &self.forms
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
        let shown = format!("{auth:?} {:?} {:?}", auth.header_value(), auth.forms());
        assert!(!shown.contains(&expected[6..]), "{shown}");
        assert!(!shown.contains("fake"), "{shown}");
    }

    #[test]
    fn the_matcher_is_built_from_the_same_credential() {
        let auth = BasicAuth::new("ci-user", &SecretString::from("fake pass:@/%+ word"));
        assert_eq!(
            auth.forms().first(auth.header_value().as_bytes()),
            Some("base64(user:password)")
        );
        let other = BasicAuth::new("ci-user", &SecretString::from("fake other:@/%+ pw"));
        assert!(!other.forms().is_match(auth.header_value().as_bytes()));
    }
}
