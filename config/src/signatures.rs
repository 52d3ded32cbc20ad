//! Object-storage signatures: the query parts of a presigned URL that grant
//! access to a stored object for as long as the URL is valid. A Pulp with
//! object storage hands such URLs out for every content request; the proxy
//! follows them itself, so none should ever be written into an image, and
//! `ci-builder audit` reports any it finds as a class of its own.
//!
//! A parameter name alone is not a finding (every S3 client library names
//! `X-Amz-Signature` in its code): each form needs the value's shape too,
//! and every match is shorter than [`MAX_LEN`], so a stream scan that
//! carries `MAX_LEN - 1` bytes across buffers finds each one once.

/// The finding class of these forms, beside the credentials'.
pub const CLASS: &str = "storage-signature";

/// Longest match: an Azure SAS with its `se=` and `sig=` this far apart is
/// not recognised.
pub const MAX_LEN: usize = 640;

/// How far apart `se=` and `sig=` may be within one Azure SAS query.
const SAS_SPAN: usize = 512;

const S3_SIGNATURE: &str = "X-Amz-Signature (presigned URL)";
const S3_CREDENTIAL: &str = "X-Amz-Credential (presigned URL)";
const GCS_SIGNATURE: &str = "X-Goog-Signature (presigned URL)";
const AZURE_SAS: &str = "Azure SAS sig= with se=";

/// Every form's name, for telling a finding's class.
pub const FORMS: [&str; 4] = [S3_SIGNATURE, S3_CREDENTIAL, GCS_SIGNATURE, AZURE_SAS];

/// The prefixes, in this order; matched without regard to ASCII case.
const PREFIXES: [&str; 7] = [
    "X-Amz-Signature=",
    "X-Amz-Credential=",
    "X-Goog-Signature=",
    "?sig=",
    "&sig=",
    "?se=",
    "&se=",
];

/// The signature matcher.
#[derive(Debug, Clone, Default)]
pub struct Signatures;

impl Signatures {
    /// Builds the matcher.
    pub fn new() -> Self {
        Self
    }

    /// Every signature in `hay`: (form, start, end), each shorter than
    /// [`MAX_LEN`].
    pub fn find_all<'a>(
        &'a self,
        hay: &'a [u8],
    ) -> impl Iterator<Item = (&'static str, usize, usize)> + 'a {
        // Every prefix ends with `=`, which memchr finds at memory speed;
        // a case-insensitive automaton has no prefilter and would look at
        // every byte. No prefix ends inside another, so each `=` ends at
        // most one of them.
        memchr::memchr_iter(b'=', hay).filter_map(move |eq| {
            let end = eq + 1;
            let (pattern, prefix) = PREFIXES.iter().enumerate().find(|(_, p)| {
                end.checked_sub(p.len())
                    .is_some_and(|start| hay[start..end].eq_ignore_ascii_case(p.as_bytes()))
            })?;
            let start = end - prefix.len();
            let rest = &hay[end..];
            let (form, len) = match pattern {
                0 => (S3_SIGNATURE, hex(rest, 64)?),
                1 => (S3_CREDENTIAL, access_key(rest)?),
                2 => (GCS_SIGNATURE, hex(rest, 64)?),
                3 | 4 => {
                    let sig = sas_signature(rest)?;
                    (AZURE_SAS, sig + param_after(&rest[sig..], b"se=", expiry)?)
                }
                _ => {
                    let se = expiry(rest)?;
                    (
                        AZURE_SAS,
                        se + param_after(&rest[se..], b"sig=", sas_signature)?,
                    )
                }
            };
            Some((form, start, end + len))
        })
    }
}

/// Whether `form` is one of these.
pub fn is_signature(form: &str) -> bool {
    FORMS.contains(&form)
}

/// `n` hex digits: a SigV4 or GCS V4 signature (its first 64, for a
/// longer one).
fn hex(rest: &[u8], n: usize) -> Option<usize> {
    rest.get(..n)?
        .iter()
        .all(u8::is_ascii_hexdigit)
        .then_some(n)
}

/// An access key id (16 to 128 capitals or digits, in either case for
/// logs that fold it) and the `/` or `%2F` that starts the credential
/// scope.
fn access_key(rest: &[u8]) -> Option<usize> {
    let n = rest
        .iter()
        .take(129)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if !(16..=128).contains(&n) {
        return None;
    }
    let after = &rest[n..];
    if after.first() == Some(&b'/') {
        Some(n + 1)
    } else if after
        .get(..3)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"%2F"))
    {
        Some(n + 3)
    } else {
        None
    }
}

/// An HMAC-SHA256 in base64, maybe percent-encoded: at least 40 of its
/// characters.
fn sas_signature(rest: &[u8]) -> Option<usize> {
    let n = rest
        .iter()
        .take(40)
        .take_while(|b| b.is_ascii_alphanumeric() || b"%+/=".contains(b))
        .count();
    (n == 40).then_some(n)
}

/// An expiry time: `se=` is followed by a date, `2026-12-03...`.
fn expiry(rest: &[u8]) -> Option<usize> {
    let d = rest.get(..5)?;
    (d[..4].iter().all(u8::is_ascii_digit) && d[4] == b'-').then_some(5)
}

/// The end of parameter `name` (checked by `value`) within [`SAS_SPAN`]
/// bytes of `rest`, in the same query: no white space, quote or `#`
/// between.
fn param_after(rest: &[u8], name: &[u8], value: fn(&[u8]) -> Option<usize>) -> Option<usize> {
    let span = &rest[..rest.len().min(SAS_SPAN)];
    let end = span
        .iter()
        .position(|b| b.is_ascii_whitespace() || b"\"'<>#".contains(b))
        .unwrap_or(span.len());
    let query = &span[..end];
    (0..query.len()).find_map(|i| {
        let at = &rest[i..];
        let named =
            at.first() == Some(&b'&') && at.get(1..1 + name.len())?.eq_ignore_ascii_case(name);
        if !named {
            return None;
        }
        let from = i + 1 + name.len();
        value(&rest[from..]).map(|len| from + len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: &str = "https://s3.example.test/b/k?response-content-disposition=attachment\
        &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAFAKEFAKEFAKE0000%2F20261203%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20261203T120000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn forms(hay: &str) -> Vec<&'static str> {
        Signatures::new()
            .find_all(hay.as_bytes())
            .map(|(f, _, _)| f)
            .collect()
    }

    #[test]
    fn presigned_urls_of_each_store_are_found() {
        assert_eq!(forms(S3), [S3_CREDENTIAL, S3_SIGNATURE]);
        let gcs = format!(
            "https://storage.example.test/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature={}",
            "ab".repeat(256)
        );
        assert_eq!(forms(&gcs), [GCS_SIGNATURE]);
        let sas = "https://a.blob.example.test/c/b?sv=2022-11-02&ss=b&srt=o&sp=r\
            &se=2026-12-03T12:00:00Z&st=2026-12-03T11:00:00Z&spr=https\
            &sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789%2B%2FAbCd%3D";
        assert_eq!(forms(sas), [AZURE_SAS]);
        let sig_first = "https://a.blob.example.test/c/b?sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd%3D&se=2026-12-03";
        assert_eq!(forms(sig_first), [AZURE_SAS]);
        // Lower case, as some logs write it.
        assert_eq!(forms(&S3.to_lowercase()).len(), 2);
    }

    #[test]
    fn names_without_a_value_are_not_findings() {
        for text in [
            "SIGNATURE = 'X-Amz-Signature'",
            "params['X-Amz-Signature='] = sig",
            "X-Amz-Signature=<signature>",
            "X-Amz-Credential=AKIA/short",
            "X-Goog-Signature=deadbeef",
            "?sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd%3D and no expiry",
            "?se=2026-12-03 then\n&sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd%3D",
            "?sig=short&se=2026-12-03",
        ] {
            assert!(forms(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn every_match_is_shorter_than_max_len() {
        let long_sas = format!(
            "?se=2026-12-03{}&sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd",
            "&x=1".repeat(120)
        );
        let hay = format!("{S3} {long_sas}");
        for (_, s, e) in Signatures::new().find_all(hay.as_bytes()) {
            assert!(e - s < MAX_LEN, "{}", e - s);
        }
    }
}
