//! The `health_check` extension (SPEC §12): `GET /` answers 200 `{"status":"ready"}` once
//! every receiver listens (and, with `--test-connections`, every test passed), and 503
//! with a reason while starting or draining, so a load balancer or a Kubernetes probe
//! sends traffic only to a gencol that takes it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the health check answers: ready, or not ready and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    NotReady(String),
}

/// The state, shared between `run` (which moves it on) and the listener.
#[derive(Clone)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    pub fn new(reason: &str) -> Health {
        Health(Arc::new(Mutex::new(State::NotReady(reason.to_owned()))))
    }

    pub fn set(&self, state: State) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn get(&self) -> State {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body) = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/") => match self.get() {
                State::Ready => (StatusCode::OK, serde_json::json!({"status": "ready"})),
                State::NotReady(reason) => {
                    (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "not ready", "reason": reason}))
                }
            },
            (_, "/") => (StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "use GET /"})),
            _ => (StatusCode::NOT_FOUND, serde_json::json!({"error": "the health check answers GET /"})),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        resp
    }
}

/// Listens on `endpoint` until `stop` is cancelled; returns the bound address.
pub async fn serve(endpoint: &str, health: Health, stop: CancellationToken) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(endpoint).await.map_err(|e| {
        format!(
            "health_check: cannot listen on {endpoint}: {e} (free the port or change extensions.health_check.endpoint)"
        )
    })?;
    let addr = listener.local_addr().map_err(|e| format!("health_check: {e}"))?;
    tracing::info!(address = %addr, "health check listening");
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "health check: accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let health = health.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = health.answer(&req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(addr)
}
