use super::*;
use base64::Engine as _;
use http::{HeaderValue, Response};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::task::{Wake, Waker};

const USER: &str = "ci-user";
const PW: &str = "fake pass:@/%+ word";

fn forms() -> Arc<Matcher> {
    Arc::new(Matcher::new(USER, PW))
}

/// The credential as an echoing upstream sends it back (the header's
/// value; the name before it is no secret), the bare password and its
/// percent-encoded form.
fn needles() -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PW}"));
    vec![
        b64.into_bytes(),
        PW.as_bytes().to_vec(),
        b"fake%20pass%3A%40%2F%25%2B%20word".to_vec(),
    ]
}

/// A body that yields the given frames, then ends (or fails).
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    fail: bool,
}

#[derive(Debug)]
struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset")
    }
}

impl std::error::Error for Broken {}

impl Body for Frames {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        match self.frames.pop_front() {
            Some(f) => Poll::Ready(Some(Ok(f))),
            None if self.fail => {
                self.fail = false;
                Poll::Ready(Some(Err(Broken)))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.fail
    }
}

fn chunks(pieces: Vec<Vec<u8>>) -> Frames {
    Frames {
        frames: pieces
            .into_iter()
            .map(|p| Frame::data(Bytes::from(p)))
            .collect(),
        fail: false,
    }
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Everything the scanned body emits, and how it ended.
fn drain<B>(mut body: ScrubbedBody<B>) -> (Vec<u8>, Result<(), ScrubError>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => {
                let data = f.into_data().expect("only data frames come out");
                assert!(!data.is_empty(), "an empty frame");
                out.extend_from_slice(&data);
            }
            Poll::Ready(Some(Err(e))) => {
                assert!(matches!(
                    Pin::new(&mut body).poll_frame(&mut cx),
                    Poll::Ready(None)
                ));
                return (out, Err(e));
            }
            Poll::Ready(None) => {
                assert!(body.is_end_stream());
                return (out, Ok(()));
            }
            Poll::Pending => panic!("the test body is never pending"),
        }
    }
}

/// Splits `data` at the sorted, deduplicated `cuts`.
fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (data.len() + 1)).collect();
    cuts.sort();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        out.push(data[at..c].to_vec());
        at = c;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The body is cut and what was sent ends before the needle starts.
fn assert_cut(out: &[u8], end: &Result<(), ScrubError>, body: &[u8], start: usize) {
    assert!(
        matches!(end, Err(ScrubError::Credential(_))),
        "not cut: {end:?}"
    );
    assert!(
        out.len() <= start,
        "{} bytes sent, the needle starts at {start}",
        out.len()
    );
    assert_eq!(out, &body[..out.len()], "sent bytes differ from the body");
}

#[test]
fn a_needle_split_at_every_position_is_never_sent() {
    let forms = forms();
    for needle in needles() {
        let mut body = vec![b'a'; 100];
        body.extend_from_slice(&needle);
        body.extend_from_slice(&[b'z'; 100]);
        for at in 0..=body.len() {
            for second in [at, at + 1, at + 7, at + needle.len() / 2] {
                let pieces = split(&body, &[at, second]);
                let (out, end) = drain(ScrubbedBody::new(chunks(pieces), forms.clone(), "/p"));
                assert_cut(&out, &end, &body, 100);
            }
        }
    }
}

#[test]
fn a_needle_as_the_last_bytes_is_never_sent() {
    let forms = forms();
    for needle in needles() {
        let mut body = vec![b'a'; 1000];
        body.extend_from_slice(&needle);
        for at in 990..=body.len() {
            let (out, end) = drain(ScrubbedBody::new(
                chunks(split(&body, &[at])),
                forms.clone(),
                "/p",
            ));
            assert_cut(&out, &end, &body, 1000);
        }
    }
}

#[test]
fn clean_bodies_pass_byte_identical_and_only_the_seam_is_held() {
    let forms = forms();
    let keep = forms.max_len() - 1;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for size in [1, 2, keep - 1, keep, keep + 1, 4096, 65536, 200_000] {
        let pieces: Vec<Vec<u8>> = body.chunks(size).map(<[u8]>::to_vec).collect();
        let (out, end) = drain(ScrubbedBody::new(chunks(pieces), forms.clone(), "/p"));
        assert!(end.is_ok(), "{size}: {end:?}");
        assert!(out == body, "{size}: the body changed");
    }
    // A large frame goes out at once, less the held seam.
    let mut b = ScrubbedBody::new(chunks(vec![body.clone()]), forms.clone(), "/p");
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let Poll::Ready(Some(Ok(first))) = Pin::new(&mut b).poll_frame(&mut cx) else {
        panic!("no first frame")
    };
    assert_eq!(first.into_data().unwrap().len(), body.len() - keep);
    assert_eq!(b.held.len(), keep);
    assert_eq!(b.held.capacity(), keep, "the seam buffer grew");
}

#[test]
fn trailers_are_dropped_and_failures_pass_through() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-echo", HeaderValue::from_static("anything"));
    let inner = Frames {
        frames: vec![
            Frame::data(Bytes::from_static(b"hello")),
            Frame::trailers(trailers),
        ]
        .into(),
        fail: false,
    };
    let (out, end) = drain(ScrubbedBody::new(inner, forms(), "/p"));
    assert_eq!(out, b"hello");
    assert!(end.is_ok());

    let inner = Frames {
        frames: vec![Frame::data(Bytes::from_static(b"hello"))].into(),
        fail: true,
    };
    let (out, end) = drain(ScrubbedBody::new(inner, forms(), "/p"));
    // The held bytes are not sent: the client sees a failed transfer.
    assert!(out.len() < 5);
    let err = end.unwrap_err();
    assert!(matches!(err, ScrubError::Upstream(_)));
    assert_eq!(err.to_string(), "connection reset");
}

#[test]
fn the_hint_counts_held_bytes_and_an_empty_body_is_at_its_end() {
    let empty = ScrubbedBody::new(chunks(vec![]), forms(), "/p");
    assert!(empty.is_end_stream());
    let b = ScrubbedBody::new(chunks(vec![b"abc".to_vec()]), forms(), "/p");
    assert!(!b.is_end_stream());
}

#[test]
fn credential_errors_name_the_form_not_the_bytes() {
    let shown = ScrubError::Credential("base64(user:password)").to_string();
    assert!(shown.contains("base64(user:password)"), "{shown}");
    assert!(!shown.contains("fake"));
}

#[test]
fn headers_that_carry_the_credential_are_dropped_and_the_rest_kept() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PW}"));
    let resp = Response::builder()
        .header("x-echo-authorization", format!("Basic {b64}"))
        .header("x-echo-host", "pulp.example.test")
        .header("vary", "accept")
        .header(
            "vary",
            format!(
                "x-{}",
                PW.replace(' ', "-").replace(['%', '/', ':', '@', '+'], "")
            ),
        )
        .header("vary", "accept-encoding")
        .header("x-pw", "fake%20pass%3A%40%2F%25%2B%20word")
        .extension(hyper::ext::ReasonPhrase::try_from(format!("OK {PW}")).unwrap())
        .body(())
        .unwrap();
    let (mut parts, ()) = resp.into_parts();
    head(&mut parts, &forms(), "/pulp/content/x");
    let names: Vec<_> = parts.headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-echo-host", "vary"]);
    let vary: Vec<_> = parts.headers.get_all("vary").iter().collect();
    assert_eq!(vary.len(), 3, "{vary:?}");
    assert!(parts.extensions.get::<hyper::ext::ReasonPhrase>().is_none());

    // Nothing found: nothing changes.
    let (mut clean, ()) = Response::builder()
        .header("etag", "\"v1\"")
        .extension(hyper::ext::ReasonPhrase::from_static(b"Fine"))
        .body(())
        .unwrap()
        .into_parts();
    head(&mut clean, &forms(), "/p");
    assert_eq!(clean.headers.len(), 1);
    assert!(clean.extensions.get::<hyper::ext::ReasonPhrase>().is_some());
}

proptest! {
    #[test]
    fn no_byte_of_a_needle_is_ever_sent(
        before in proptest::collection::vec(any::<u8>(), 0..300),
        after in proptest::collection::vec(any::<u8>(), 0..300),
        which in 0usize..3,
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let forms = forms();
        let needle = &needles()[which];
        let mut body = before.clone();
        body.extend_from_slice(needle);
        body.extend_from_slice(&after);
        // Random bytes could hold a form of their own; start at the first.
        let start = forms.find_all(&body).map(|(_, s, _)| s).min().unwrap();
        let (out, end) = drain(ScrubbedBody::new(chunks(split(&body, &cuts)), forms.clone(), "/p"));
        prop_assert!(matches!(end, Err(ScrubError::Credential(_))));
        prop_assert!(out.len() <= start);
        prop_assert!(out == body[..out.len()]);
        prop_assert!(!contains(&out, needle));
    }

    #[test]
    fn clean_bodies_pass_through_byte_identical(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let forms = forms();
        prop_assume!(!forms.is_match(&body));
        let (out, end) = drain(ScrubbedBody::new(chunks(split(&body, &cuts)), forms.clone(), "/p"));
        prop_assert!(end.is_ok());
        prop_assert!(out == body);
    }
}
