//! The credential never comes back out: every upstream response is
//! searched for the proxy's own credential, in every form the image audit
//! knows (`pulp_auth_config::forms`), before a client sees it. An upstream
//! that echoes request headers (a debug page, a misconfigured front end)
//! would otherwise hand the shared credential to any build.
//!
//! A header (or the reason phrase) that carries it is dropped with a
//! warning that names the header and the form, never the bytes. A body
//! that carries it is cut: the body fails, so the client sees a truncated
//! transfer and the cache drops its fill. Bodies are searched as they
//! stream: the last `longest needle - 1` bytes of what has arrived are
//! held back until the next frame shows they do not start a match (or
//! the body ends), and only those bytes are ever copied.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pulp_auth_config::forms::Matcher;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Drops every response header, and the reason phrase, that carries the
/// credential; `path` is for the warning.
pub fn head(head: &mut response::Parts, forms: &Matcher, path: &str) {
    if let Some(reason) = head.extensions.get::<hyper::ext::ReasonPhrase>() {
        if let Some(form) = forms.first(reason.as_bytes()) {
            head.extensions.remove::<hyper::ext::ReasonPhrase>();
            warn_header(path, "the reason phrase", form);
        }
    }
    let hit = |name: &HeaderName, value: &[u8]| {
        forms
            .first(name.as_str().as_bytes())
            .or_else(|| forms.first(value))
    };
    // The common case, nothing found, keeps the map as it is.
    if !head
        .headers
        .iter()
        .any(|(n, v)| hit(n, v.as_bytes()).is_some())
    {
        return;
    }
    let mut kept = HeaderMap::with_capacity(head.headers.len());
    let mut current = None;
    for (name, value) in std::mem::take(&mut head.headers) {
        // `None` continues the previous name's values.
        if let Some(n) = name {
            current = Some(n);
        }
        let Some(name) = current.clone() else {
            continue;
        };
        match hit(&name, value.as_bytes()) {
            None => {
                kept.append(name, value);
            }
            Some(form) if forms.is_match(name.as_str().as_bytes()) => {
                warn_header(path, "a header whose name carries it", form);
            }
            Some(form) => warn_header(path, name.as_str(), form),
        }
    }
    head.headers = kept;
}

fn warn_header(path: &str, header: &str, form: &str) {
    tracing::warn!(
        target: "scrub",
        path,
        header,
        form,
        "dropped a response header that carries the proxy's credential; the upstream echoes request headers"
    );
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a scanned body stopped.
#[derive(Debug)]
pub enum ScrubError {
    /// The upstream connection failed mid-body.
    Upstream(BoxError),
    /// The body carries the credential in this form; nothing from where
    /// it starts on was sent.
    Credential(&'static str),
}

impl fmt::Display for ScrubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScrubError::Upstream(e) => fmt::Display::fmt(e, f),
            ScrubError::Credential(form) => write!(
                f,
                "the upstream's body carries the proxy's credential ({form}); the transfer was cut"
            ),
        }
    }
}

impl std::error::Error for ScrubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // hyper's own message is shown above; its causes follow.
            ScrubError::Upstream(e) => e.source(),
            ScrubError::Credential(_) => None,
        }
    }
}

/// An upstream body on its way out, searched for the credential.
pub struct ScrubbedBody<B = Incoming> {
    inner: B,
    forms: Arc<Matcher>,
    /// `max_len - 1`: the most bytes a match can have arrived of without
    /// being complete.
    keep: usize,
    /// The last bytes received (at most `keep`), not yet sent.
    held: Vec<u8>,
    /// A frame ready to go after the one just returned.
    ready: Option<Bytes>,
    /// The inner body is done (ended, failed, or cut).
    done: bool,
    /// For the warning when a body is cut.
    path: Arc<str>,
}

impl<B> ScrubbedBody<B> {
    /// Searches `inner` for every form in `forms`; `path` is logged if the
    /// body is cut.
    pub fn new(inner: B, forms: Arc<Matcher>, path: &str) -> Self {
        let keep = forms.max_len().saturating_sub(1);
        Self {
            inner,
            forms,
            keep,
            held: Vec::with_capacity(keep),
            ready: None,
            done: false,
            path: path.into(),
        }
    }

    /// The form of a match that `data`, arriving after `held`, completes.
    fn search(&self, data: &[u8]) -> Option<&'static str> {
        if !self.held.is_empty() {
            let head = &data[..data.len().min(self.keep)];
            if let Some(form) = self.forms.across(&self.held, head) {
                return Some(form);
            }
        }
        self.forms.first(data)
    }

    /// Takes in `data` (already searched) and returns what may be sent
    /// now: up to two pieces, the part of `held` that is no longer needed
    /// and the part of `data` that is not held back.
    fn advance(&mut self, data: Bytes) -> (Bytes, Bytes) {
        let keep = self.keep;
        if self.held.len() + data.len() <= keep {
            self.held.extend_from_slice(&data);
            return (Bytes::new(), Bytes::new());
        }
        if data.len() >= keep {
            let before = Bytes::copy_from_slice(&self.held);
            self.held.clear();
            let cut = data.len() - keep;
            self.held.extend_from_slice(&data[cut..]);
            (before, data.slice(..cut))
        } else {
            let free = self.held.len() + data.len() - keep;
            let before = Bytes::copy_from_slice(&self.held[..free]);
            self.held.drain(..free);
            self.held.extend_from_slice(&data);
            (before, Bytes::new())
        }
    }
}

impl<B> Body for ScrubbedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ScrubError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ScrubError>>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.ready.take() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.done = true;
                    if this.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = Bytes::copy_from_slice(&this.held);
                    this.held.clear();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    this.held.clear();
                    return Poll::Ready(Some(Err(ScrubError::Upstream(e.into()))));
                }
                Some(Ok(frame)) => frame,
            };
            // Trailers are dropped: the proxy removes the `Trailer`
            // announcement, and they could echo request headers too.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if let Some(form) = this.search(&data) {
                this.done = true;
                this.held.clear();
                tracing::warn!(
                    target: "scrub",
                    path = %this.path,
                    form,
                    "cut a response body that carries the proxy's credential; the upstream echoes request headers"
                );
                return Poll::Ready(Some(Err(ScrubError::Credential(form))));
            }
            let (before, now) = this.advance(data);
            match (before.is_empty(), now.is_empty()) {
                (true, true) => continue,
                (true, false) => return Poll::Ready(Some(Ok(Frame::data(now)))),
                (false, true) => return Poll::Ready(Some(Ok(Frame::data(before)))),
                (false, false) => {
                    this.ready = Some(now);
                    return Poll::Ready(Some(Ok(Frame::data(before))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.held.is_empty() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let pending = (self.held.len() + self.ready.as_ref().map_or(0, Bytes::len)) as u64;
        if self.done {
            return SizeHint::with_exact(pending);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}

#[cfg(test)]
mod tests;
