//! The outermost layer: every refusal a layer or the handler returns becomes an answer in
//! the receiver's dialect (`{"error"}` for generation records, `google.rpc.Status` for
//! OTLP), is counted where every refusal passes, and gets the headers its status asks
//! for (`Retry-After` on 503, `WWW-Authenticate` on 401, `Allow` on 405,
//! `Connection: close` on 408).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use gencol_engine::Consumer;
use gencol_model::budget::Exceeded;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::Body;

/// Why a request was refused: the HTTP status and a message for the sender.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// Records (spans) refused, for gencol's metrics: 1 when the body was not decoded.
    pub records: usize,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into(), records: 1 }
    }
}

/// 413 for a request over its record or memory limit, 503 when others hold the memory.
impl From<Exceeded> for Refusal {
    fn from(e: Exceeded) -> Self {
        let status = match e {
            Exceeded::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Exceeded::Items { .. } | Exceeded::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        Refusal::new(status, e.to_string())
    }
}

/// How a receiver words its refusals.
pub(crate) trait Dialect: Clone + Send + Sync + 'static {
    /// The JSON body of the 503 a connection gets when every connection of the listener
    /// is busy (written before anything is read, so in JSON whatever the sender speaks).
    const BUSY_JSON: &'static str;
    /// What the answer needs to know of the request, read before the request is consumed
    /// (OTLP answers in the encoding it was sent).
    type Context: Send + 'static;

    fn context(&self, headers: &HeaderMap) -> Self::Context;

    fn refusal(&self, context: Self::Context, refusal: Refusal) -> Response<Body>;
}

/// Turns refusals into answers; see the module docs.
#[derive(Clone)]
pub(crate) struct AnswerLayer<D> {
    dialect: D,
    consumer: Consumer,
}

impl<D> AnswerLayer<D> {
    /// Refusals are counted in `consumer`'s receiver statistics.
    pub fn new(dialect: D, consumer: Consumer) -> Self {
        AnswerLayer { dialect, consumer }
    }
}

impl<D: Clone, S> Layer<S> for AnswerLayer<D> {
    type Service = Answer<D, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Answer { dialect: self.dialect.clone(), consumer: self.consumer.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Answer<D, S> {
    dialect: D,
    consumer: Consumer,
    inner: S,
}

impl<D, S, B> Service<Request<B>> for Answer<D, S>
where
    D: Dialect,
    S: Service<Request<B>, Response = Response<Body>, Error = Refusal> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AnswerFuture<D, S::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every layer below is always ready: a full pipeline is a 503, not back-pressure
        // on the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let context = self.dialect.context(req.headers());
        let inner = self.inner.call(req);
        AnswerFuture { inner, answer: Some((self.dialect.clone(), context, self.consumer.clone())) }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, or its refusal worded and counted. A named future
    /// rather than a boxed one: this layer runs for every request.
    pub(crate) struct AnswerFuture<D: Dialect, F> {
        #[pin]
        inner: F,
        answer: Option<(D, D::Context, Consumer)>,
    }
}

impl<D, F> Future for AnswerFuture<D, F>
where
    D: Dialect,
    F: Future<Output = Result<Response<Body>, Refusal>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some((dialect, context, consumer)) = this.answer.take() else {
            // Polled again after it was ready: a caller's bug, answered without a panic.
            return Poll::Ready(Ok(dialect_free_error()));
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(refusal) => {
                if let Some(reason) = crate::refused_reason(refusal.status) {
                    consumer.stats().refused(reason, refusal.records);
                }
                dialect.refusal(context, refusal)
            }
        };
        Poll::Ready(Ok(with_status_headers(resp)))
    }
}

fn dialect_free_error() -> Response<Body> {
    super::json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the answer was taken twice")
}

/// Adds the headers a status asks for: `Allow` on 405, `WWW-Authenticate` on 401,
/// `Retry-After` on 503, `Connection: close` on 408.
pub(crate) fn with_status_headers(mut resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    let headers = resp.headers_mut();
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        }
        StatusCode::UNAUTHORIZED => {
            headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The body did not arrive in time: the rest of it is not waited for.
        StatusCode::REQUEST_TIMEOUT => {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use gencol_engine::RefusedReason;
    use tower::ServiceExt;

    use super::*;
    use crate::http::json_error;
    use crate::test_support::pipeline;

    /// Words refusals as `{"error"}` and tells them apart by a header it read first.
    #[derive(Clone)]
    struct Plain;

    impl Dialect for Plain {
        const BUSY_JSON: &'static str = "{}";
        type Context = Option<HeaderValue>;

        fn context(&self, headers: &HeaderMap) -> Self::Context {
            headers.get("x-dialect").cloned()
        }

        fn refusal(&self, context: Self::Context, refusal: Refusal) -> Response<Body> {
            let mut resp = json_error(refusal.status, &refusal.message);
            if let Some(v) = context {
                resp.headers_mut().insert("x-dialect", v);
            }
            resp
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_worded_by_the_dialect_counted_and_get_their_headers() {
        let (consumer, _rx) = pipeline(1);
        let refuse = |status: StatusCode, records: usize| {
            tower::service_fn(move |_req: Request<()>| async move {
                Err::<Response<Body>, _>(Refusal { records, ..Refusal::new(status, "no") })
            })
        };
        let layer = AnswerLayer::new(Plain, consumer.clone());
        let req = || Request::builder().header("x-dialect", "plain").body(()).expect("request");

        let resp = layer.layer(refuse(StatusCode::SERVICE_UNAVAILABLE, 7)).oneshot(req()).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(resp.headers()["x-dialect"], "plain", "the context was read before the request went in");
        let resp = layer.layer(refuse(StatusCode::UNAUTHORIZED, 1)).oneshot(req()).await.expect("infallible");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let resp = layer.layer(refuse(StatusCode::METHOD_NOT_ALLOWED, 1)).oneshot(req()).await.expect("infallible");
        assert_eq!(resp.headers()["allow"], "POST");
        let resp = layer.layer(refuse(StatusCode::REQUEST_TIMEOUT, 1)).oneshot(req()).await.expect("infallible");
        assert_eq!(resp.headers()["connection"], "close");
        // A wrong path refuses no data: not counted (nor is the 405).
        layer.layer(refuse(StatusCode::NOT_FOUND, 1)).oneshot(req()).await.expect("infallible");

        let (_, refused) = consumer.stats().snapshot();
        assert_eq!(refused[RefusedReason::Backpressure as usize], 7);
        assert_eq!(refused[RefusedReason::Unauthorized as usize], 1);
        assert_eq!(refused[RefusedReason::Invalid as usize], 1, "408 counts as invalid");
        assert_eq!(refused.iter().sum::<u64>(), 9, "the 405 and 404 refuse no data");
    }

    #[tokio::test]
    async fn answers_pass_through_with_their_status_headers() {
        let (consumer, _rx) = pipeline(1);
        let ok = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Refusal>(json_error(StatusCode::SERVICE_UNAVAILABLE, "from the handler"))
        });
        let resp = AnswerLayer::new(Plain, consumer).layer(ok).oneshot(Request::new(())).await.expect("infallible");
        assert_eq!(resp.headers()["retry-after"], "1");
        assert!(resp.headers().get("x-dialect").is_none(), "not a refusal: the dialect is not asked");
    }
}
