//! The one path and method a receiver serves: anything else is refused before a header
//! more is looked at (404 with what to post where, 405 naming `POST`).

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Method, Request, StatusCode};
use tower::{Layer, Service};

use super::Refusal;

#[derive(Clone, Copy)]
pub(crate) struct RouteLayer {
    path: &'static str,
    not_found: &'static str,
}

impl RouteLayer {
    /// `POST path`; `not_found` is the 404 message (what to post where).
    pub fn post(path: &'static str, not_found: &'static str) -> Self {
        RouteLayer { path, not_found }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Route<S> {
        Route { route: *self, inner }
    }
}

#[derive(Clone)]
pub(crate) struct Route<S> {
    route: RouteLayer,
    inner: S,
}

impl<S, B> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>, Error = Refusal>,
{
    type Response = S::Response;
    type Error = Refusal;
    type Future = Either<Ready<Result<S::Response, Refusal>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.uri().path() != self.route.path {
            return Either::Left(ready(Err(Refusal::new(StatusCode::NOT_FOUND, self.route.not_found))));
        }
        if req.method() != Method::POST {
            return Either::Left(ready(Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST",
            ))));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::recorder;

    #[tokio::test]
    async fn only_post_to_the_path_reaches_the_handler() {
        let (inner, seen) = recorder::<()>();
        let svc = RouteLayer::post("/v1/traces", "post traces to /v1/traces").layer(inner);
        let req = |method: Method, uri: &str| Request::builder().method(method).uri(uri).body(()).expect("request");

        let e = svc.clone().oneshot(req(Method::POST, "/v1/trace")).await.expect_err("wrong path");
        assert_eq!((e.status, e.message.as_str()), (StatusCode::NOT_FOUND, "post traces to /v1/traces"));
        let e = svc.clone().oneshot(req(Method::GET, "/v1/traces")).await.expect_err("wrong method");
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        // The path is checked first: a GET elsewhere is a 404, not a 405.
        let e = svc.clone().oneshot(req(Method::GET, "/")).await.expect_err("both wrong");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(seen.lock().expect("test lock").is_empty());

        let ok = svc.oneshot(req(Method::POST, "/v1/traces?x=1")).await.expect("served");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(seen.lock().expect("test lock").len(), 1);
    }
}
