//! Each send's duration, recorded where it happens (`gencol_exporter_send_duration_seconds`):
//! every attempt counts, retries included, as the destination saw them.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use super::DeliveryStats;
use super::send::{Batch, Failure};
use crate::component::BoxFuture;

/// Where a send's duration goes.
pub(crate) trait RecordSend: Clone + Send + Sync + 'static {
    fn record(&self, took: Duration);
}

/// An exporter's metrics: its histogram, once metrics are on (nothing is timed before).
impl RecordSend for Arc<DeliveryStats> {
    fn record(&self, took: Duration) {
        if let Some(timer) = self.send_timer.get() {
            timer.record(took);
        }
    }
}

#[derive(Clone)]
pub(crate) struct TelemetryLayer<R> {
    recorder: R,
}

impl<R> TelemetryLayer<R> {
    pub(crate) fn new(recorder: R) -> Self {
        TelemetryLayer { recorder }
    }
}

impl<R: Clone, S> Layer<S> for TelemetryLayer<R> {
    type Service = Telemetry<R, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry { recorder: self.recorder.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Telemetry<R, S> {
    recorder: R,
    inner: S,
}

impl<R, S> Service<Batch> for Telemetry<R, S>
where
    R: RecordSend,
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
        let (recorder, send) = (self.recorder.clone(), self.inner.call(batch));
        Box::pin(async move {
            let started = Instant::now();
            let answer = send.await;
            recorder.record(started.elapsed());
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tower::ServiceExt;

    use super::*;
    use crate::component::ExportError;
    use crate::delivery::send::testing::batch;

    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Duration>>>);

    impl RecordSend for Recorded {
        fn record(&self, took: Duration) {
            self.0.lock().expect("test lock").push(took);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_send_is_timed_failed_ones_too() {
        let recorded = Recorded::default();
        let layer = TelemetryLayer::new(recorded.clone());
        let ok = tower::service_fn(|_b: Batch| async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok::<(), Failure>(())
        });
        let refused = tower::service_fn(|_b: Batch| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err::<(), _>(Failure::Export(ExportError::retryable("503")))
        });
        layer.layer(ok).oneshot(batch(1)).await.expect("sent");
        layer.layer(refused).oneshot(batch(1)).await.expect_err("refused");
        assert_eq!(*recorded.0.lock().expect("test lock"), [Duration::from_millis(250), Duration::from_secs(2)]);
    }
}
