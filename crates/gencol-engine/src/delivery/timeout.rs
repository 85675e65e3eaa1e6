//! A deadline on one send (`timeout`): a destination that does not answer in time is
//! treated like one that answered 503, so the batch is retried.

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::send::{Batch, Failure};
use crate::component::{BoxFuture, ExportError};

#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub(crate) fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { timeout: self.timeout, inner }
    }
}

#[derive(Clone)]
pub(crate) struct Timeout<S> {
    timeout: Duration,
    inner: S,
}

impl<S> Service<Batch> for Timeout<S>
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
        let (timeout, send) = (self.timeout, self.inner.call(batch));
        Box::pin(async move {
            match tokio::time::timeout(timeout, send).await {
                Ok(answer) => answer,
                Err(_) => Err(Failure::Export(ExportError::retryable(format!("no answer within {timeout:?}")))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::delivery::send::testing::batch;

    /// Answers after `delay`.
    fn answering_after(delay: Duration) -> impl Service<Batch, Response = (), Error = Failure, Future: Send> + Clone {
        tower::service_fn(move |_batch: Batch| async move {
            tokio::time::sleep(delay).await;
            Ok::<(), Failure>(())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_destination_that_does_not_answer_in_time_reads_as_retryable() {
        let started = Instant::now();
        let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(answering_after(Duration::from_secs(3600)));
        let e = svc.oneshot(batch(1)).await.expect_err("no answer");
        assert_eq!(e, Failure::Export(ExportError::retryable("no answer within 10s")));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(answering_after(Duration::from_millis(9_999)));
        svc.oneshot(batch(1)).await.expect("answered in time");
    }
}
