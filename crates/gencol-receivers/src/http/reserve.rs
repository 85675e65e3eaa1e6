//! Room first: before the handler decodes a byte, the request reserves its size in
//! every pipeline it feeds, all or nothing (SPEC §7). Under overload the answer is a 503
//! after a short wait, not a decoded batch thrown away; nothing of the request is kept,
//! so the sender's retry is the only copy.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use gencol_engine::{Consumer, Reservation};
use gencol_model::budget::Charge;
use http::{Request, StatusCode};
use tower::{Layer, Service};

use super::Refusal;
use super::read::Received;

/// A body with room reserved for what it decodes to.
pub(crate) struct Reserved {
    pub bytes: Bytes,
    pub charge: Charge,
    pub reservation: Reservation,
}

/// Room for `bytes` in every pipeline of `consumer`, waiting at most `patience`; the
/// refusal is a 503 (gRPC: `UNAVAILABLE`), which senders retry.
pub(crate) async fn reserve(consumer: &Consumer, bytes: usize, patience: Duration) -> Result<Reservation, Refusal> {
    consumer.reserve(bytes, patience).await.map_err(|full| {
        tracing::debug!(pipeline = %full.pipeline, "pipeline full: answering 503");
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "pipeline full, retry")
    })
}

#[derive(Clone)]
pub(crate) struct ReserveLayer {
    consumer: Consumer,
    patience: Duration,
}

impl ReserveLayer {
    /// Waits at most `patience` for room in `consumer`'s pipelines.
    pub fn new(consumer: Consumer, patience: Duration) -> Self {
        ReserveLayer { consumer, patience }
    }
}

impl<S> Layer<S> for ReserveLayer {
    type Service = Reserve<S>;

    fn layer(&self, inner: S) -> Reserve<S> {
        Reserve { consumer: self.consumer.clone(), patience: self.patience, inner }
    }
}

#[derive(Clone)]
pub(crate) struct Reserve<S> {
    consumer: Consumer,
    patience: Duration,
    inner: S,
}

impl<S> Service<Request<Received>> for Reserve<S>
where
    S: Service<Request<Reserved>, Error = Refusal> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = Refusal;
    type Future = BoxFuture<'static, Result<S::Response, Refusal>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Received>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let (consumer, patience) = (self.consumer.clone(), self.patience);
        Box::pin(async move {
            let (parts, Received { bytes, charge }) = req.into_parts();
            let reservation = reserve(&consumer, bytes.len(), patience).await?;
            inner.call(Request::from_parts(parts, Reserved { bytes, charge, reservation })).await
        })
    }
}

#[cfg(test)]
mod tests {
    use gencol_model::budget::MemoryBudget;
    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::recorder;
    use crate::test_support::pipeline;

    fn received(n: usize) -> Request<Received> {
        let budget = MemoryBudget::unlimited();
        Request::new(Received { bytes: Bytes::from(vec![b'x'; n]), charge: Charge::new(&budget) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pipeline_is_waited_for_then_503() {
        let (consumer, _rx) = pipeline(1);
        let (inner, seen) = recorder::<Reserved>();
        let svc = ReserveLayer::new(consumer.clone(), Duration::from_millis(500)).layer(inner);

        // Room: the handler gets the reservation.
        svc.clone().oneshot(received(10)).await.expect("room");
        // The pipeline's one slot is taken while the handler holds it; a second request
        // waits its patience, then is refused.
        let held = seen.lock().expect("test lock").pop().expect("reached the handler");
        let started = Instant::now();
        let e = svc.clone().oneshot(received(10)).await.expect_err("full");
        assert_eq!((e.status, e.message.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "pipeline full, retry"));
        assert_eq!(started.elapsed(), Duration::from_millis(500));

        // Room made while a request waits: it goes through without waiting it all out.
        let waiting = tokio::spawn(svc.oneshot(received(10)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let started = Instant::now();
        waiting.await.expect("task").expect("room made");
        assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    }
}
