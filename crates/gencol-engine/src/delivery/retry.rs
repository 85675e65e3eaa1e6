//! Retry with backoff (SPEC §7), as a `tower::retry` policy: gencol's own wait grows by
//! `multiplier` up to `max_interval` with jitter, and a destination's `Retry-After` is
//! honoured in full: the next attempt waits `max(backoff, Retry-After)`. Only retryable
//! answers (429, 5xx, timeouts, connection errors) are retried; a batch whose next wait
//! would pass `max_elapsed_time` is given up on ([`Failure::GaveUp`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::retry::Policy;

use super::send::{Batch, Failure};
use super::{DeliveryStats, RetrySettings};
use crate::component::ExportError;

/// The wait before the next attempt: gencol's backoff (jittered, capped by
/// `max_interval`), or the destination's `Retry-After` when that is longer.
pub(crate) fn next_wait(backoff: Duration, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let own = jittered(backoff, jitter);
    match retry_after {
        Some(asked) => own.max(asked),
        None => own,
    }
}

fn jittered(d: Duration, jitter: f64) -> Duration {
    let j = jitter.clamp(0.0, 1.0);
    let factor = 1.0 - j + fastrand::f64() * 2.0 * j;
    d.mul_f64(factor)
}

/// One exporter's retry policy. `tower::retry::Retry` clones it for each batch, so the
/// fields below `stats` are that batch's own.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    exporter: Arc<str>,
    settings: RetrySettings,
    stats: Arc<DeliveryStats>,
    /// When the batch's first attempt started.
    started: Instant,
    /// The next backoff, before jitter.
    backoff: Duration,
    /// Retries of this batch so far.
    retries: u32,
}

impl RetryPolicy {
    pub(crate) fn new(exporter: &str, settings: &RetrySettings, stats: Arc<DeliveryStats>) -> Self {
        RetryPolicy {
            exporter: Arc::from(exporter),
            settings: settings.clone(),
            stats,
            started: Instant::now(),
            backoff: Duration::ZERO,
            retries: 0,
        }
    }
}

impl Policy<Batch, (), Failure> for RetryPolicy {
    type Future = Sleep;

    fn retry(&mut self, batch: &mut Batch, result: &mut Result<(), Failure>) -> Option<Sleep> {
        let (id, n) = (&*self.exporter, batch.len());
        let (message, retry_after) = match result {
            Err(Failure::Export(ExportError::Retryable { message, retry_after })) => (message, *retry_after),
            Err(Failure::Export(ExportError::Permanent { message })) => {
                tracing::error!(exporter = id, spans = n, "destination rejected the batch, not retrying: {message}");
                return None;
            }
            // Sent; refused for its content (the batch is split by `settle`); stopped.
            _ => return None,
        };
        let retry = &self.settings;
        let wait = next_wait(self.backoff, retry.jitter, retry_after);
        if !retry.enabled || self.started.elapsed() + wait > retry.max_elapsed_time.0 {
            tracing::error!(exporter = id, spans = n, elapsed = ?self.started.elapsed(), "giving up on the batch after retries: {message}");
            *result = Err(Failure::GaveUp);
            return None;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(exporter = id, spans = n, retry_in = ?wait, "send failed, will retry: {message}");
        self.retries += 1;
        self.backoff = Duration::from_secs_f64(
            (self.backoff.as_secs_f64() * retry.multiplier.max(1.0)).min(retry.max_interval.0.as_secs_f64()),
        );
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, batch: &Batch) -> Option<Batch> {
        // Called when a batch is first sent (on the exporter's policy, just before it is
        // cloned for the batch: `retries` is 0 there) and before each retry (on the
        // batch's clone): the clock and the backoff start with the first attempt.
        if self.retries == 0 {
            self.started = Instant::now();
            self.backoff = self.settings.initial_interval.0.min(self.settings.max_interval.0);
        }
        Some(batch.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use gencol_config::Duration as ConfigDuration;
    use tower::retry::RetryLayer;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::delivery::DeliverySettings;
    use crate::delivery::send::testing::batch;

    /// Answers from a script and records when (in tokio's paused time) each attempt came.
    #[derive(Clone)]
    struct Scripted {
        answers: Arc<Mutex<Vec<Result<(), ExportError>>>>,
        attempts: Arc<Mutex<Vec<Instant>>>,
    }

    impl Scripted {
        fn new(mut answers: Vec<Result<(), ExportError>>) -> Self {
            answers.reverse();
            Scripted { answers: Arc::new(Mutex::new(answers)), attempts: Arc::default() }
        }

        fn gaps(&self) -> Vec<Duration> {
            let attempts = self.attempts.lock().expect("test lock");
            attempts.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    impl Service<Batch> for Scripted {
        type Response = ();
        type Error = Failure;
        type Future = std::future::Ready<Result<(), Failure>>;

        fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Failure>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _batch: Batch) -> Self::Future {
            self.attempts.lock().expect("test lock").push(Instant::now());
            let answer = self.answers.lock().expect("test lock").pop().unwrap_or(Ok(()));
            std::future::ready(answer.map_err(Failure::Export))
        }
    }

    fn rate_limited(seconds: u64) -> Result<(), ExportError> {
        Err(ExportError::Retryable { message: "429".into(), retry_after: Some(Duration::from_secs(seconds)) })
    }

    fn settings() -> RetrySettings {
        DeliverySettings::default().retry
    }

    async fn run(exporter: &Scripted, settings: &RetrySettings) -> (Result<(), Failure>, Arc<DeliveryStats>) {
        let stats = Arc::new(DeliveryStats::default());
        let layer = RetryLayer::new(RetryPolicy::new("test", settings, stats.clone()));
        (layer.layer(exporter.clone()).oneshot(batch(3)).await, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_longer_than_max_interval_is_waited_in_full() {
        // max_interval is 30s; the destination asks for 120s.
        let exporter = Scripted::new(vec![rate_limited(120), Ok(())]);
        let (outcome, stats) = run(&exporter, &settings()).await;
        assert_eq!(outcome, Ok(()));
        let gaps = exporter.gaps();
        assert_eq!(gaps.len(), 1);
        assert!(gaps[0] >= Duration::from_secs(120), "retried after {:?}", gaps[0]);
        assert!(gaps[0] < Duration::from_secs(121), "retried after {:?}", gaps[0]);
        assert_eq!(stats.retries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_retry_after_does_not_shorten_gencols_own_backoff() {
        let mut s = settings();
        s.initial_interval = ConfigDuration(Duration::from_secs(10));
        s.jitter = 0.0;
        let exporter = Scripted::new(vec![rate_limited(1), Ok(())]);
        run(&exporter, &s).await.0.expect("sent");
        assert_eq!(exporter.gaps(), vec![Duration::from_secs(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_by_the_multiplier_up_to_max_interval() {
        let mut s = settings();
        s.jitter = 0.0;
        s.initial_interval = ConfigDuration(Duration::from_secs(1));
        s.multiplier = 2.0;
        s.max_interval = ConfigDuration(Duration::from_secs(5));
        let down = || Err(ExportError::retryable("503"));
        let exporter = Scripted::new(vec![down(), down(), down(), down(), down(), Ok(())]);
        run(&exporter, &s).await.0.expect("sent");
        let secs: Vec<u64> = exporter.gaps().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 5, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_batch_starts_its_own_backoff_and_clock() {
        let mut s = settings();
        s.jitter = 0.0;
        s.initial_interval = ConfigDuration(Duration::from_secs(1));
        s.multiplier = 2.0;
        s.max_elapsed_time = ConfigDuration(Duration::from_secs(10));
        let stats = Arc::new(DeliveryStats::default());
        let down = || Err(ExportError::retryable("503"));
        // One policy, two batches one after the other: the second starts again at 1 s and
        // is not given up on for the time the first took.
        let exporter = Scripted::new(vec![down(), down(), down(), Ok(()), down(), down(), down(), Ok(())]);
        let mut svc = RetryLayer::new(RetryPolicy::new("test", &s, stats)).layer(exporter.clone());
        svc.ready().await.expect("ready").call(batch(1)).await.expect("first sent");
        svc.ready().await.expect("ready").call(batch(1)).await.expect("second sent after 7 s of its own");
        let secs: Vec<u64> = exporter.gaps().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 0, 1, 2, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_max_elapsed_time_gives_up_and_other_answers_are_not_retried() {
        let mut s = settings();
        s.max_elapsed_time = ConfigDuration(Duration::from_secs(60));
        let exporter = Scripted::new(vec![rate_limited(120)]);
        let (outcome, stats) = run(&exporter, &s).await;
        assert_eq!((outcome, exporter.gaps().len()), (Err(Failure::GaveUp), 0));
        assert_eq!(stats.retries.load(Ordering::Relaxed), 0);

        s.enabled = false;
        let exporter = Scripted::new(vec![Err(ExportError::retryable("503"))]);
        assert_eq!(run(&exporter, &s).await.0, Err(Failure::GaveUp), "retry.enabled: false");

        for answer in [ExportError::permanent("401"), ExportError::refused("400")] {
            let exporter = Scripted::new(vec![Err(answer.clone())]);
            assert_eq!(run(&exporter, &settings()).await.0, Err(Failure::Export(answer)));
            assert_eq!(exporter.gaps().len(), 0, "sent once");
        }
    }

    #[test]
    fn next_wait_is_the_longer_of_backoff_and_retry_after() {
        let s = Duration::from_secs;
        assert_eq!(next_wait(s(2), 0.0, None), s(2));
        assert_eq!(next_wait(s(2), 0.0, Some(s(120))), s(120));
        assert_eq!(next_wait(s(30), 0.0, Some(s(3))), s(30));
        for _ in 0..100 {
            let w = next_wait(s(10), 0.5, None);
            assert!(w >= s(5) && w <= s(15), "{w:?}");
        }
    }
}
