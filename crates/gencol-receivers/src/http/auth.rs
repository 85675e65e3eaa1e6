//! The bearer check: which tokens let a client in, compared without leaking them. As a
//! layer it runs before anything else of the request is looked at, so a stranger learns
//! nothing and no byte of an unauthenticated body is read.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, StatusCode};
use tower::{Layer, Service};

use super::Refusal;

/// The bearer tokens a client may present. Tokens are secrets: they are never
/// logged, echoed in answers, or shown by `Debug`.
#[derive(Clone)]
pub(crate) struct BearerAuth {
    tokens: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerAuth({} tokens)", self.tokens.len())
    }
}

/// Why a request was not let in; the message says what to fix without the token.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
}

impl AuthError {
    /// The same, worded for a gRPC client, which sends the token as metadata.
    pub fn grpc_message(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing bearer token: send `authorization: Bearer <token>` metadata",
            AuthError::Invalid => "invalid bearer token",
        }
    }
}

impl BearerAuth {
    pub fn new(tokens: Vec<String>) -> Result<Self, String> {
        if tokens.is_empty() {
            return Err(
                "auth.bearer_tokens must list at least one token (leave out `auth` for no authentication)".into()
            );
        }
        // An unset `${env:TOKEN}` becomes "", which would let anyone in who sends
        // `Bearer ` with nothing after it.
        if let Some(i) = tokens.iter().position(|t| t.trim().is_empty()) {
            return Err(format!("auth.bearer_tokens[{i}] is empty (is its environment variable set?)"));
        }
        // Trimmed like the presented token, so a stray space in YAML cannot lock everyone out.
        Ok(BearerAuth { tokens: tokens.iter().map(|t| t.trim().as_bytes().to_vec()).collect() })
    }

    /// Checks `Authorization: Bearer <token>` against every configured token.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?.as_bytes();
        let value = value.trim_ascii();
        let presented = match value.split_first_chunk::<7>() {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => return Err(AuthError::Missing),
        };
        // Every token is compared in full, so timing tells neither which token was
        // close nor how much of it matched.
        let mut ok = false;
        for token in self.tokens.iter() {
            ok |= constant_time_eq(presented, token);
        }
        if ok { Ok(()) } else { Err(AuthError::Invalid) }
    }
}

/// Refuses (401) a request without one of the tokens; lets every request in when there
/// are none (`auth` left out).
#[derive(Clone, Debug)]
pub(crate) struct AuthLayer {
    auth: Option<BearerAuth>,
}

impl AuthLayer {
    pub fn new(auth: Option<BearerAuth>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { auth: self.auth.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Auth<S> {
    auth: Option<BearerAuth>,
    inner: S,
}

impl<S, B> Service<Request<B>> for Auth<S>
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
        if let Some(auth) = &self.auth
            && let Err(e) = auth.check(req.headers())
        {
            return Either::Left(ready(Err(Refusal::new(StatusCode::UNAUTHORIZED, e.to_string()))));
        }
        Either::Right(self.inner.call(req))
    }
}

/// Compares in time that depends only on the presented length, never on where the
/// first difference is or on the secret's length. `expected` is never empty
/// (checked in [`BearerAuth::new`]).
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, b) in presented.iter().enumerate() {
        diff |= b ^ expected[i % expected.len()];
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::{headers, recorder};

    #[test]
    fn bearer_tokens() {
        let auth = BearerAuth::new(vec!["s3cret".into(), "other-token".into()]).expect("valid");
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cret")])), Ok(()));
        assert_eq!(auth.check(&headers(&[("authorization", "bearer  other-token ")])), Ok(()));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cre")])), Err(AuthError::Invalid));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cret2")])), Err(AuthError::Invalid));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer ")])), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(&[("authorization", "Basic czNjcmV0")])), Err(AuthError::Missing));
        assert_eq!(auth.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn the_layer_lets_in_only_a_configured_token_and_never_echoes_one() {
        let (inner, seen) = recorder::<()>();
        let auth = BearerAuth::new(vec!["s3cret".into()]).expect("valid");
        let svc = AuthLayer::new(Some(auth)).layer(inner.clone());
        let with = |value: &str| Request::builder().header("authorization", value).body(()).expect("request");

        let e = svc.clone().oneshot(Request::new(())).await.expect_err("no token");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.message.contains("Authorization: Bearer <token>"), "{}", e.message);
        let e = svc.clone().oneshot(with("Bearer s3cret-not")).await.expect_err("wrong token");
        assert_eq!((e.status, e.message.as_str()), (StatusCode::UNAUTHORIZED, "invalid bearer token"));
        assert!(seen.lock().expect("test lock").is_empty(), "nothing refused reached the handler");
        svc.oneshot(with("Bearer s3cret")).await.expect("let in");
        assert_eq!(seen.lock().expect("test lock").len(), 1);

        // No `auth`: everyone is let in.
        AuthLayer::new(None).layer(inner).oneshot(Request::new(())).await.expect("no auth configured");
        assert_eq!(seen.lock().expect("test lock").len(), 2);
    }
}
