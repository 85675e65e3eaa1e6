//! send → timeout → retry for one batch (SPEC §7): gencol's own backoff grows by
//! `multiplier` up to `max_interval` with jitter, and a destination's `Retry-After` is
//! honoured in full: the next attempt waits `max(backoff, Retry-After)`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gencol_model::SpanItem;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DeliverySettings, DeliveryStats, RetrySettings};
use crate::component::{ExportError, Exporter};

/// How one batch's delivery ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The destination took it.
    Sent,
    /// The destination refused it for good (a 4xx other than 429): sending it again would
    /// fail the same way.
    Rejected,
    /// The destination refused its content (400, 413, 422): a part of it may pass. Not
    /// logged here: the caller splits the batch and says once what was refused.
    Refused(String),
    /// Retries were off, or the next wait would pass `max_elapsed_time`.
    GaveUp,
    /// `shutdown_timeout` ran out before an answer.
    Stopped,
}

/// The wait before the next attempt: gencol's backoff (jittered, capped by
/// `max_interval`), or the destination's `Retry-After` when that is longer.
pub(crate) fn next_wait(backoff: Duration, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let own = jittered(backoff, jitter);
    match retry_after {
        Some(asked) => own.max(asked),
        None => own,
    }
}

/// Sends `batch` until it is sent, refused, given up on or shutdown comes. Counts
/// retries; the caller counts the outcome (it knows whether the batch stays on disk).
pub(crate) async fn send_with_retry(
    id: &str,
    exporter: &dyn Exporter,
    batch: &[SpanItem],
    settings: &DeliverySettings,
    stats: &DeliveryStats,
    stop: &CancellationToken,
) -> Outcome {
    let n = batch.len();
    let started = Instant::now();
    let retry: &RetrySettings = &settings.retry;
    let mut backoff = retry.initial_interval.0.min(retry.max_interval.0);
    loop {
        let attempt = tokio::time::timeout(settings.timeout.0, exporter.export(batch));
        let sent_at = Instant::now();
        let outcome = tokio::select! {
            r = attempt => match r {
                Ok(r) => r,
                Err(_) => Err(ExportError::retryable(format!("no answer within {:?}", settings.timeout.0))),
            },
            // shutdown_timeout is over: an answer that comes later cannot be waited for.
            _ = stop.cancelled() => return Outcome::Stopped,
        };
        if let Some(timer) = stats.send_timer.get() {
            timer.record(sent_at.elapsed());
        }
        let (message, retry_after) = match outcome {
            Ok(()) => return Outcome::Sent,
            Err(ExportError::Permanent { message }) => {
                tracing::error!(exporter = id, spans = n, "destination rejected the batch, not retrying: {message}");
                return Outcome::Rejected;
            }
            Err(ExportError::Refused { message }) => return Outcome::Refused(message),
            Err(ExportError::Retryable { message, retry_after }) => (message, retry_after),
        };
        let wait = next_wait(backoff, retry.jitter, retry_after);
        if !retry.enabled || started.elapsed() + wait > retry.max_elapsed_time.0 {
            tracing::error!(exporter = id, spans = n, elapsed = ?started.elapsed(), "giving up on the batch after retries: {message}");
            return Outcome::GaveUp;
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(exporter = id, spans = n, retry_in = ?wait, "send failed, will retry: {message}");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Outcome::Stopped,
        }
        backoff = Duration::from_secs_f64(
            (backoff.as_secs_f64() * retry.multiplier.max(1.0)).min(retry.max_interval.0.as_secs_f64()),
        );
    }
}

fn jittered(d: Duration, jitter: f64) -> Duration {
    let j = jitter.clamp(0.0, 1.0);
    let factor = 1.0 - j + fastrand::f64() * 2.0 * j;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::component::BoxFuture;
    use gencol_config::Duration as ConfigDuration;

    /// Answers from a script and records when (in tokio's paused time) each attempt came.
    struct Scripted {
        answers: Mutex<Vec<Result<(), ExportError>>>,
        attempts: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(mut answers: Vec<Result<(), ExportError>>) -> Self {
            answers.reverse();
            Scripted { answers: Mutex::new(answers), attempts: Mutex::default() }
        }
    }

    impl Exporter for Scripted {
        fn export<'a>(&'a self, _batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
            self.attempts.lock().unwrap().push(Instant::now());
            let answer = self.answers.lock().unwrap().pop().unwrap_or(Ok(()));
            Box::pin(async move { answer })
        }
        fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
            Box::pin(async { Ok(String::new()) })
        }
    }

    fn rate_limited(seconds: u64) -> Result<(), ExportError> {
        Err(ExportError::Retryable { message: "429".into(), retry_after: Some(Duration::from_secs(seconds)) })
    }

    fn settings() -> DeliverySettings {
        DeliverySettings::default()
    }

    async fn run(exporter: &Scripted, settings: &DeliverySettings) -> (Outcome, Vec<Duration>) {
        let stats = DeliveryStats::default();
        let outcome = send_with_retry("test", exporter, &[], settings, &stats, &CancellationToken::new()).await;
        let attempts = exporter.attempts.lock().unwrap().clone();
        let gaps = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        (outcome, gaps)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_longer_than_max_interval_is_waited_in_full() {
        // max_interval is 30s; the destination asks for 120s.
        let exporter = Scripted::new(vec![rate_limited(120), Ok(())]);
        let (outcome, gaps) = run(&exporter, &settings()).await;
        assert_eq!(outcome, Outcome::Sent);
        assert_eq!(gaps.len(), 1);
        assert!(gaps[0] >= Duration::from_secs(120), "retried after {:?}", gaps[0]);
        assert!(gaps[0] < Duration::from_secs(121), "retried after {:?}", gaps[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_retry_after_does_not_shorten_gencols_own_backoff() {
        let mut s = settings();
        s.retry.initial_interval = ConfigDuration(Duration::from_secs(10));
        s.retry.jitter = 0.0;
        let exporter = Scripted::new(vec![rate_limited(1), Ok(())]);
        let (_, gaps) = run(&exporter, &s).await;
        assert_eq!(gaps, vec![Duration::from_secs(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_by_the_multiplier_up_to_max_interval() {
        let mut s = settings();
        s.retry.jitter = 0.0;
        s.retry.initial_interval = ConfigDuration(Duration::from_secs(1));
        s.retry.multiplier = 2.0;
        s.retry.max_interval = ConfigDuration(Duration::from_secs(5));
        let down = || Err(ExportError::retryable("503"));
        let exporter = Scripted::new(vec![down(), down(), down(), down(), down(), Ok(())]);
        let (outcome, gaps) = run(&exporter, &s).await;
        assert_eq!(outcome, Outcome::Sent);
        let secs: Vec<u64> = gaps.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 5, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_max_elapsed_time_gives_up_and_permanent_errors_stop_at_once() {
        let mut s = settings();
        s.retry.max_elapsed_time = ConfigDuration(Duration::from_secs(60));
        let exporter = Scripted::new(vec![rate_limited(120)]);
        let (outcome, gaps) = run(&exporter, &s).await;
        assert_eq!((outcome, gaps.len()), (Outcome::GaveUp, 0));

        let exporter = Scripted::new(vec![Err(ExportError::permanent("400"))]);
        assert_eq!(run(&exporter, &settings()).await.0, Outcome::Rejected);
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
