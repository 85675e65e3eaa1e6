//! What the body is, from its headers, before a byte of it is read: `Content-Type`,
//! read by the receiver's own parser (into the record layout, the OTLP encoding), and
//! `Content-Encoding`, of which gzip and none are read; anything else is refused with
//! 415. The layer decides only whether the body is worth reading: the decompress layer
//! and the handler read the same header again with the same parser. That is a header
//! lookup and a few byte comparisons, where carrying the result in the request's
//! extensions allocates a map and a box per value (0.2% of gencol's CPU at batch 1,
//! measured with `perf`).

use std::borrow::Cow;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request, StatusCode};
use tower::{Layer, Service};

use super::Refusal;
use super::decompress::compression;

/// `Content-Type` without parameters (`; charset=utf-8`), lower-cased (copied only when
/// it was not lower case already); `None` when absent; `Some("")` when not readable as
/// text.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let value = headers.get(CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or("");
    let media = text.split(';').next().unwrap_or("").trim();
    Some(if media.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(media.to_ascii_lowercase())
    } else {
        Cow::Borrowed(media)
    })
}

/// Reads the content headers with `parse` (the media type, `None` when absent, to what
/// the handler needs or the 415 message).
#[derive(Clone)]
pub(crate) struct ContentLayer<P> {
    parse: P,
}

impl<P> ContentLayer<P> {
    pub fn new(parse: P) -> Self {
        ContentLayer { parse }
    }
}

impl<P: Clone, S> Layer<S> for ContentLayer<P> {
    type Service = Content<P, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Content { parse: self.parse.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Content<P, S> {
    parse: P,
    inner: S,
}

impl<P, K, S, B> Service<Request<B>> for Content<P, S>
where
    P: Fn(Option<&str>) -> Result<K, String>,
    S: Service<Request<B>, Error = Refusal>,
{
    type Response = S::Response;
    type Error = Refusal;
    type Future = Either<Ready<Result<S::Response, Refusal>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let refused =
            (self.parse)(media_type(req.headers()).as_deref()).err().or_else(|| compression(req.headers()).err());
        match refused {
            Some(message) => Either::Left(ready(Err(Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::{headers, recorder};

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        Json,
    }

    fn json_only(media: Option<&str>) -> Result<Kind, String> {
        match media {
            None | Some("application/json") => Ok(Kind::Json),
            Some(other) => Err(format!("unsupported Content-Type `{other}`")),
        }
    }

    #[test]
    fn media_types_lose_their_parameters_and_case() {
        assert_eq!(
            media_type(&headers(&[("content-type", "Application/JSON; charset=utf-8")])).as_deref(),
            Some("application/json")
        );
        assert!(matches!(media_type(&headers(&[("content-type", "application/json")])), Some(Cow::Borrowed(_))));
        assert_eq!(media_type(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn only_a_body_the_receiver_reads_reaches_the_handler() {
        let (inner, seen) = recorder::<()>();
        let svc = ContentLayer::new(json_only).layer(inner);
        let req = |pairs: &[(&'static str, &str)]| {
            let mut req = Request::new(());
            *req.headers_mut() = headers(pairs);
            req
        };

        let e = svc.clone().oneshot(req(&[("content-type", "text/plain")])).await.expect_err("415");
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported Content-Type `text/plain`")
        );
        let e = svc.clone().oneshot(req(&[("content-encoding", "br")])).await.expect_err("415");
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.message.contains("send gzip, zstd, deflate or no encoding"), "{}", e.message);
        assert!(seen.lock().expect("test lock").is_empty());

        let e = svc.clone().oneshot(req(&[("content-type", "text/plain"), ("content-encoding", "br")])).await;
        assert!(e.expect_err("415").message.contains("Content-Type"), "the media type is named first");
        assert!(seen.lock().expect("test lock").is_empty());

        let read = req(&[("content-type", "Application/JSON"), ("content-encoding", "GZIP")]);
        svc.clone().oneshot(read).await.expect("read");
        svc.oneshot(req(&[])).await.expect("no headers: JSON, not compressed");
        assert_eq!(seen.lock().expect("test lock").len(), 2);
    }
}
