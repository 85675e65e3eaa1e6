//! Shutdown: once `shutdown_timeout` is over (the delivery stop token is cancelled), a
//! send still waiting for an answer or for its next retry ends at once as
//! [`Failure::Stopped`]; what becomes of its batch is for the queue to say.

use std::task::{Context, Poll};

use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use super::send::{Batch, Failure};
use crate::component::BoxFuture;

#[derive(Clone)]
pub(crate) struct StopLayer {
    stop: CancellationToken,
}

impl StopLayer {
    pub(crate) fn new(stop: CancellationToken) -> Self {
        StopLayer { stop }
    }
}

impl<S> Layer<S> for StopLayer {
    type Service = Stop<S>;

    fn layer(&self, inner: S) -> Stop<S> {
        Stop { stop: self.stop.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Stop<S> {
    stop: CancellationToken,
    inner: S,
}

impl<S> Service<Batch> for Stop<S>
where
    S: Service<Batch, Response = (), Error = Failure>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Failure;
    type Future = BoxFuture<'static, Result<(), Failure>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let (stop, send) = (self.stop.clone(), self.inner.call(batch));
        Box::pin(async move {
            tokio::select! {
                // An answer that is there already is taken.
                biased;
                answer = send => answer,
                // An answer that comes later cannot be waited for.
                () = stop.cancelled() => Err(Failure::Stopped),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::delivery::send::testing::batch;

    #[tokio::test(start_paused = true)]
    async fn a_send_in_flight_ends_when_delivery_stops() {
        let stop = CancellationToken::new();
        let slow = tower::service_fn(|_b: Batch| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), Failure>(())
        });
        let svc = StopLayer::new(stop.clone()).layer(slow);
        let started = Instant::now();
        let send = tokio::spawn(svc.clone().oneshot(batch(1)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.cancel();
        assert_eq!(send.await.expect("task"), Err(Failure::Stopped));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Stopped already: a new send does not wait either.
        assert_eq!(svc.oneshot(batch(1)).await, Err(Failure::Stopped));
    }
}
