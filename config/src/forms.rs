//! Every form the credentials can take in bytes that leave a process (an
//! image layer, a response to a client), built once from the user name and
//! password, and one multi-pattern matcher over all of them. `ci-builder
//! audit` searches images with it and `pulp-auth-proxy` searches the
//! upstream's responses, so both recognise exactly the same forms. The
//! needles are secret material: they are wiped on drop and never printed;
//! findings name the form, not the bytes.

use aho_corasick::automaton::Automaton as _;
use aho_corasick::nfa::contiguous;
use aho_corasick::{AhoCorasick, Anchored, MatchKind};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use secrecy::zeroize::Zeroizing;
use std::fmt::Write as _;

/// Needles shorter than this would match noise; the forms that produce them
/// (base64 cuts of a very short password) are skipped and reported.
pub const MIN_NEEDLE: usize = 6;

/// The credentials' forms and a matcher for all of them at once.
pub struct Matcher {
    /// Every match, overlapping ones included (the audit's report).
    ac: AhoCorasick,
    /// Whether there is any match: leftmost-first semantics let
    /// aho-corasick use its vectorised prefilter, which the standard
    /// semantics of `ac` do not.
    any: AhoCorasick,
    /// The same needles as a state machine stepped byte by byte, for
    /// matches that straddle two buffers without copying either.
    steps: contiguous::NFA,
    forms: Vec<&'static str>,
    max_len: usize,
    /// Forms left out because they were too short to search for.
    pub skipped: Vec<&'static str>,
    /// Object-storage signatures, searched for beside the credentials by
    /// [`Matcher::find_all`] (the audit's) when asked for; never by the
    /// proxy's checks, which a package mentioning one must pass.
    signatures: Option<crate::signatures::Signatures>,
    // Kept so the bytes are wiped when the matcher goes away.
    _needles: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Matcher({} needles)", self.forms.len())
    }
}

impl Matcher {
    /// Builds the needles for `username` and `password`.
    pub fn new(username: &str, password: &str) -> Matcher {
        let pair = Zeroizing::new(format!("{username}:{password}"));
        let mut candidates: Vec<(&'static str, Zeroizing<Vec<u8>>)> = vec![
            ("password", Zeroizing::new(password.as_bytes().to_vec())),
            ("user:password", Zeroizing::new(pair.as_bytes().to_vec())),
        ];
        for (form, engine) in [
            ("base64(user:password)", &STANDARD),
            ("base64url(user:password)", &URL_SAFE),
        ] {
            for cut in base64_cuts(pair.as_bytes(), engine) {
                candidates.push((form, cut));
            }
        }
        for (form, engine) in [
            ("base64(password)", &STANDARD),
            ("base64url(password)", &URL_SAFE),
        ] {
            for cut in base64_cuts(password.as_bytes(), engine) {
                candidates.push((form, cut));
            }
        }
        let upper = Zeroizing::new(percent(password, true, false));
        let lower = Zeroizing::new(percent(password, false, false));
        candidates.push((
            "percent-encoded password",
            Zeroizing::new(upper.as_bytes().to_vec()),
        ));
        candidates.push((
            "percent-encoded password",
            Zeroizing::new(lower.as_bytes().to_vec()),
        ));
        candidates.push((
            "form-encoded password",
            Zeroizing::new(percent(password, true, true).into_bytes()),
        ));
        for enc in [&upper, &lower] {
            candidates.push((
                "URL userinfo",
                Zeroizing::new(
                    format!("{}:{}@", percent(username, true, false), enc.as_str()).into_bytes(),
                ),
            ));
        }
        let json = json_escaped(password);
        candidates.push((
            "JSON-escaped password",
            Zeroizing::new(json.as_bytes().to_vec()),
        ));
        candidates.push((
            "JSON-escaped password",
            Zeroizing::new(json.replace('/', "\\/").into_bytes()),
        ));

        let mut forms = Vec::new();
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut skipped = Vec::new();
        for (form, bytes) in candidates {
            if bytes.len() < MIN_NEEDLE {
                if !skipped.contains(&form) {
                    skipped.push(form);
                }
            } else if !needles.iter().any(|n| **n == *bytes) {
                forms.push(form);
                needles.push(bytes);
            }
        }
        let ac = AhoCorasick::new(needles.iter().map(|n| n.as_slice()))
            .expect("a handful of short needles always builds");
        let any = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(needles.iter().map(|n| n.as_slice()))
            .expect("a handful of short needles always builds");
        let steps = contiguous::NFA::new(needles.iter().map(|n| n.as_slice()))
            .expect("a handful of short needles always builds");
        let max_len = needles.iter().map(|n| n.len()).max().unwrap_or(1);
        Matcher {
            ac,
            any,
            steps,
            forms,
            max_len,
            skipped,
            signatures: None,
            _needles: needles,
        }
    }

    /// The same matcher whose [`Matcher::find_all`] (and so `redact`)
    /// also reports object-storage signatures (see
    /// [`crate::signatures`]), as the audit wants.
    pub fn with_storage_signatures(mut self) -> Matcher {
        self.signatures = Some(crate::signatures::Signatures::new());
        self.max_len = self.max_len.max(crate::signatures::MAX_LEN);
        self
    }

    /// Every match in `hay`, overlapping ones included: (form, start, end);
    /// object-storage signatures too when the matcher was built
    /// [`Matcher::with_storage_signatures`].
    pub fn find_all<'a>(
        &'a self,
        hay: &'a [u8],
    ) -> impl Iterator<Item = (&'static str, usize, usize)> + 'a {
        // The overlapping search cannot skip ahead as the leftmost one
        // does (its prefilter runs at memory speed): ask that one first,
        // as almost every buffer holds no form at all.
        self.any
            .is_match(hay)
            .then(|| self.ac.find_overlapping_iter(hay))
            .into_iter()
            .flatten()
            .map(|m| (self.forms[m.pattern().as_usize()], m.start(), m.end()))
            .chain(self.signatures.iter().flat_map(move |s| s.find_all(hay)))
    }

    /// Whether `hay` holds any form.
    pub fn is_match(&self, hay: &[u8]) -> bool {
        self.any.is_match(hay)
    }

    /// The form of a match in `hay`, if there is one (the leftmost).
    pub fn first(&self, hay: &[u8]) -> Option<&'static str> {
        self.any
            .find(hay)
            .map(|m| self.forms[m.pattern().as_usize()])
    }

    /// The form of a match in the bytes `tail` followed by `head`, as if
    /// they were one buffer, without joining them. Meant for the seam
    /// between two buffers of a stream: `tail` is the end of the earlier
    /// one (at most [`Matcher::max_len`] - 1 bytes matter), `head` the
    /// start of the next (likewise), so the cost is a few dozen steps
    /// whatever the buffers' sizes.
    pub fn across(&self, tail: &[u8], head: &[u8]) -> Option<&'static str> {
        let nfa = &self.steps;
        let mut sid = nfa
            .start_state(Anchored::No)
            .expect("an unanchored automaton has an unanchored start");
        for &b in tail.iter().chain(head) {
            sid = nfa.next_state(Anchored::No, sid, b);
            if nfa.is_match(sid) {
                return Some(self.forms[nfa.match_pattern(sid, 0).as_usize()]);
            }
        }
        None
    }

    /// `text` with every form replaced by `[REDACTED]`, for printing paths
    /// and names that might themselves carry the secret.
    pub fn redact(&self, text: &str) -> String {
        if !self.is_match(text.as_bytes()) {
            return text.to_string();
        }
        let mut spans: Vec<(usize, usize)> = self
            .find_all(text.as_bytes())
            .map(|(_, s, e)| (s, e))
            .collect();
        spans.sort();
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for (s, e) in spans {
            if e <= at {
                continue;
            }
            out.extend_from_slice(&bytes[at..s.max(at)]);
            out.extend_from_slice(b"[REDACTED]");
            at = e;
        }
        out.extend_from_slice(&bytes[at..]);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The longest match, for carrying matches across buffer boundaries.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// The part of base64(`data`) that is the same wherever `data` sits inside
/// a longer encoded stream, for each of the three byte alignments.
fn base64_cuts(data: &[u8], engine: &base64::engine::GeneralPurpose) -> Vec<Zeroizing<Vec<u8>>> {
    (0..3usize)
        .filter_map(|align| {
            let mut buf = Zeroizing::new(vec![0u8; align]);
            buf.extend_from_slice(data);
            let encoded = Zeroizing::new(engine.encode(buf.as_slice()));
            // Characters that mix filler bits (before) or following data bits
            // (after) are cut off.
            let skip = (align * 8).div_ceil(6);
            let end = (align + data.len()) * 8 / 6;
            (end > skip).then(|| Zeroizing::new(encoded.as_bytes()[skip..end].to_vec()))
        })
        .collect()
}

fn percent(s: &str, upper: bool, form: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if form && b == b' ' {
            out.push('+');
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// `s` as it appears inside a JSON string, escaped exactly as serde_json
/// escapes it (short escapes where JSON has them, `\u00xx` for other
/// control characters, `/` left alone).
fn json_escaped(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len() + 8));
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "ci-user";
    const PW: &str = "fake pass:@/%+ word";

    fn forms_in(m: &Matcher, hay: &[u8]) -> Vec<&'static str> {
        let mut f: Vec<_> = m.find_all(hay).map(|(f, _, _)| f).collect();
        f.sort();
        f.dedup();
        f
    }

    #[test]
    fn every_form_is_found() {
        let m = Matcher::new(USER, PW);
        let pair = format!("{USER}:{PW}");
        let cases: Vec<(&str, String)> = vec![
            ("password", format!("x{PW}y")),
            ("user:password", pair.clone()),
            (
                "base64(user:password)",
                format!("Authorization: Basic {}", STANDARD.encode(&pair)),
            ),
            ("base64(password)", STANDARD.encode(PW)),
            (
                "percent-encoded password",
                "fake%20pass%3A%40%2F%25%2B%20word".into(),
            ),
            (
                "percent-encoded password",
                "fake%20pass%3a%40%2f%25%2b%20word".into(),
            ),
            (
                "form-encoded password",
                "pw=fake+pass%3A%40%2F%25%2B+word&x".into(),
            ),
            (
                "URL userinfo",
                "baseurl=https://ci-user:fake%20pass%3A%40%2F%25%2B%20word@pulp/x".into(),
            ),
            (
                "JSON-escaped password",
                "{\"p\":\"fake pass:@\\/%+ word\"}".into(),
            ),
        ];
        for (form, hay) in cases {
            assert!(
                forms_in(&m, hay.as_bytes()).contains(&form),
                "{form} not found in {hay}"
            );
        }
        assert!(m.find_all(b"nothing secret here at all").next().is_none());
    }

    #[test]
    fn base64_inside_longer_runs_at_every_alignment() {
        let m = Matcher::new(USER, PW);
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            for suffix in ["", "z", "zz"] {
                let blob = STANDARD.encode(format!("{prefix}{PW}{suffix}"));
                assert!(
                    forms_in(&m, blob.as_bytes()).contains(&"base64(password)"),
                    "missed with prefix {prefix:?} suffix {suffix:?}: {blob}"
                );
                let blob = STANDARD.encode(format!("{prefix}{USER}:{PW}{suffix}"));
                assert!(forms_in(&m, blob.as_bytes()).contains(&"base64(user:password)"));
            }
        }
    }

    #[test]
    fn redaction_hides_every_form() {
        let m = Matcher::new(USER, PW);
        let name = format!("/etc/{PW}/{}.conf", STANDARD.encode(PW));
        let shown = m.redact(&name);
        assert!(!m.is_match(shown.as_bytes()), "{shown}");
        assert!(shown.starts_with("/etc/[REDACTED]"));
        assert_eq!(m.redact("/etc/apt/sources.list"), "/etc/apt/sources.list");
    }

    #[test]
    fn json_escapes_like_serde_json() {
        assert_eq!(
            *json_escaped("a\"b\\c/d\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é"),
            "a\\\"b\\\\c/d\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}é"
        );
    }

    #[test]
    fn first_and_across_find_what_find_all_finds() {
        let m = Matcher::new(USER, PW);
        let hay = format!("xx{}yy", STANDARD.encode(format!("{USER}:{PW}")));
        assert_eq!(m.first(hay.as_bytes()), Some("base64(user:password)"));
        assert_eq!(m.first(b"clean bytes"), None);
        let hay = format!("....{PW}....");
        for cut in 0..=hay.len() {
            let (a, b) = hay.as_bytes().split_at(cut);
            assert!(m.across(a, b).is_some(), "cut {cut}");
        }
        assert_eq!(m.across(b"fake pass:@", b"/%+ word"), Some("password"));
        assert_eq!(m.across(b"fake pass:@", b"/%+ wor"), None);
    }

    #[test]
    fn very_short_passwords_skip_noisy_forms() {
        let m = Matcher::new("u", "pw");
        assert!(m.skipped.contains(&"password"));
        assert!(!m.skipped.is_empty());
    }
}
