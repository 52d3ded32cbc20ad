//! Which response framings the proxy forwards. hyper's client reads an
//! upstream body as RFC 9112 6.3 says: a `Transfer-Encoding` whose last
//! coding is `chunked` is decoded as chunked (a `Content-Length` beside it
//! is ignored, and `rewrite::from_upstream` drops it); any other
//! `Transfer-Encoding`, or neither header, is read until the connection
//! closes; a `101` ends the response with no body. Forwarding what comes
//! out of those would hand the client bytes the upstream did not mean as
//! the content (still gzip-coded, or still chunk-framed, or another
//! protocol), or a body whose end cannot be told from a cut connection.
//! So only a `Content-Length` body or one `chunked` coding is forwarded;
//! everything else is a 502 that names the cause.

use crate::error::Framing;
use http::{header, HeaderMap, Method, StatusCode};

/// Whether the response head `status` + `headers`, the answer to a
/// `method` request, is framed so that its body can be forwarded
/// faithfully.
pub fn check(method: &Method, status: StatusCode, headers: &HeaderMap) -> Result<(), Framing> {
    // hyper skips interim 1xx answers and waits for the final one, so only
    // a 101 (which ends the exchange) gets here; refuse any, whatever
    // hyper does.
    if status.is_informational() {
        return Err(Framing::Informational(status));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return if only_chunked(headers) {
            Ok(())
        } else {
            Err(Framing::TransferCoding)
        };
    }
    let bodiless = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless && !headers.contains_key(header::CONTENT_LENGTH) {
        return Err(Framing::CloseDelimited);
    }
    Ok(())
}

/// Whether the `Transfer-Encoding` lines, joined, name exactly one
/// coding, `chunked`. Empty list elements count as codings: hyper, which
/// looks only at the last element, reads `chunked,` as close-delimited.
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','));
    matches!(
        (codings.next(), codings.next()),
        (Some(only), None) if only.trim_ascii().eq_ignore_ascii_case(b"chunked")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn content_length_and_one_chunked_coding_pass() {
        let get = Method::GET;
        for h in [
            head(&[("content-length", "5")]),
            head(&[("transfer-encoding", "chunked")]),
            head(&[("transfer-encoding", " Chunked ")]),
            // Both: hyper reads it as chunked and the length is dropped.
            head(&[("transfer-encoding", "chunked"), ("content-length", "5")]),
        ] {
            assert_eq!(check(&get, StatusCode::OK, &h), Ok(()), "{h:?}");
        }
    }

    #[test]
    fn other_transfer_codings_are_refused() {
        for te in [
            &["gzip, chunked"][..],
            &["chunked, gzip"],
            &["identity"],
            &["gzip"],
            &["chunked,"],
            &["chunked, chunked"],
            &["gzip", "chunked"],
            &["chunked", "chunked"],
            &["chunked;foo=bar"],
            &[""],
        ] {
            let mut h = head(&[("content-length", "5")]);
            for v in te {
                h.append(header::TRANSFER_ENCODING, v.parse().unwrap());
            }
            for method in [Method::GET, Method::HEAD] {
                assert_eq!(
                    check(&method, StatusCode::OK, &h),
                    Err(Framing::TransferCoding),
                    "{te:?}"
                );
            }
        }
    }

    #[test]
    fn informational_final_answers_are_refused() {
        for code in [100, 101, 103, 199] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                check(&Method::GET, status, &head(&[("content-length", "0")])),
                Err(Framing::Informational(status))
            );
        }
    }

    #[test]
    fn close_delimited_bodies_are_refused_where_a_body_is_expected() {
        let none = HeaderMap::new();
        for status in [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::FOUND] {
            assert_eq!(
                check(&Method::GET, status, &none),
                Err(Framing::CloseDelimited)
            );
        }
        assert_eq!(check(&Method::HEAD, StatusCode::OK, &none), Ok(()));
        assert_eq!(check(&Method::GET, StatusCode::NO_CONTENT, &none), Ok(()));
        assert_eq!(check(&Method::GET, StatusCode::NOT_MODIFIED, &none), Ok(()));
    }
}
