//! The load generator: HTTP/1.1 keep-alive over N connections, one request in flight
//! per connection, as a gateway's HTTP client sends.
//!
//! Closed loop: every connection sends its next request as soon as the answer to the
//! previous one is in, which finds the most a target can take. Open loop: requests are
//! due at a fixed rate whatever the target does, which is how a gateway's traffic
//! arrives; latency is counted from when a request was released, not from when a
//! connection was free to send it, so a target that falls behind is charged for the
//! queue it builds (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use crate::payload::BodyPool;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the target answers.
    Closed,
    /// This many requests a second, due at even intervals.
    Open { per_second: f64 },
}

/// One load run against one target.
pub struct LoadPlan {
    pub addr: SocketAddr,
    pub pool: Arc<BodyPool>,
    pub connections: usize,
    pub pace: Pace,
    /// When the first request goes; connections are opened before.
    pub start: Instant,
    /// Sent before measuring, so connections, caches and the target's allocator are warm.
    pub warmup: Duration,
    pub measure: Duration,
}

/// Requests released in the window but not answered this long after it are counted as
/// late instead of being waited for: a target that cannot keep up with an open-loop rate
/// would otherwise stretch the run by its whole backlog and have it counted as served.
const LATE_AFTER: Duration = Duration::from_secs(2);

/// What the generator saw in the measured window.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// 2xx answers that arrived in the window.
    pub ok: u64,
    /// Other answers (503 when a target pushes back) that arrived in the window.
    pub refused: u64,
    /// Requests released in the window and still unanswered [`LATE_AFTER`] after it.
    pub late: u64,
    /// Requests that got no answer (connection refused or reset), whole run.
    pub errors: u64,
    /// Records (generations or spans) in the 2xx answers that arrived in the window.
    pub records_ok: u64,
    /// Records in 2xx-answered requests over the whole run, warmup included.
    pub records_ok_total: u64,
    /// Nanoseconds from release (open loop) or send (closed loop) to the full answer, one
    /// per 2xx request released in the window; a late request counts with the time it
    /// had waited when the run stopped, a lower bound.
    pub latencies_ns: Vec<u64>,
}

/// Shared by the connections of one run.
struct Run {
    plan_pool: Arc<BodyPool>,
    host: String,
    content_type: &'static str,
    window_start: Instant,
    window_end: Instant,
    /// [`LATE_AFTER`] past the window: nothing is sent or waited for after it.
    cutoff: Instant,
}

/// Runs `plan` to the end of its window and returns what was measured.
pub async fn run(plan: LoadPlan) -> LoadOutcome {
    // Connect everything first, so the window measures requests, not handshakes.
    let mut senders = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        match connect(plan.addr).await {
            Ok(s) => senders.push(s),
            Err(e) => {
                eprintln!("  cannot connect to {}: {e}", plan.addr);
                return LoadOutcome { errors: 1, ..Default::default() };
            }
        }
    }
    let start = plan.start;
    tokio::time::sleep_until(start.into()).await;
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.measure;
    let run = Arc::new(Run {
        plan_pool: plan.pool.clone(),
        host: plan.addr.to_string(),
        content_type: "application/json",
        window_start,
        window_end,
        cutoff: window_end + LATE_AFTER,
    });

    let tickets = match plan.pace {
        Pace::Closed => None,
        Pace::Open { per_second } => Some(Arc::new(Mutex::new(pacer(start, window_end, per_second)))),
    };
    let mut tasks = Vec::with_capacity(senders.len());
    for sender in senders {
        tasks.push(tokio::spawn(connection(sender, plan.addr, run.clone(), tickets.clone())));
    }
    let mut out = LoadOutcome::default();
    for t in tasks {
        if let Ok(c) = t.await {
            out.ok += c.ok;
            out.refused += c.refused;
            out.late += c.late;
            out.errors += c.errors;
            out.records_ok += c.records_ok;
            out.records_ok_total += c.records_ok_total;
            out.latencies_ns.extend(c.latencies_ns);
        }
    }
    out
}

/// Releases requests at `per_second`, from a thread of its own: tokio's timer ticks in
/// whole milliseconds, which would release requests in bursts of up to 20. A request is
/// charged from its release: the thread's own wake-up slack (tens of microseconds) is
/// the generator's, not the target's. Requests released while every connection is busy
/// wait, and that wait is charged.
fn pacer(start: Instant, end: Instant, per_second: f64) -> mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / per_second);
    std::thread::spawn(move || {
        let mut due = start;
        while due < end {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let released = Instant::now();
            while due <= released && due < end {
                if tx.send(released).is_err() {
                    return;
                }
                due += interval;
            }
        }
    });
    rx
}

#[derive(Default)]
struct ConnectionOutcome {
    ok: u64,
    refused: u64,
    late: u64,
    errors: u64,
    records_ok: u64,
    records_ok_total: u64,
    latencies_ns: Vec<u64>,
}

async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Full<bytes::Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when either side closes; errors show up on the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connection(
    mut sender: SendRequest<Full<bytes::Bytes>>,
    addr: SocketAddr,
    run: Arc<Run>,
    tickets: Option<Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>>,
) -> ConnectionOutcome {
    let mut out = ConnectionOutcome::default();
    let records = run.plan_pool.batch as u64;
    loop {
        let due = match &tickets {
            None => {
                let now = Instant::now();
                if now >= run.window_end {
                    break;
                }
                now
            }
            Some(t) => match t.lock().await.recv().await {
                Some(due) => due,
                None => break,
            },
        };
        let in_window = due >= run.window_start && due < run.window_end;
        if Instant::now() >= run.cutoff {
            // Released in time but never sent: the target had fallen this far behind.
            if in_window {
                out.late += 1;
                out.latencies_ns.push(run.cutoff.duration_since(due).as_nanos() as u64);
            }
            continue;
        }
        let body = run.plan_pool.next_body();
        let request = Request::builder()
            .method(Method::POST)
            .uri(run.plan_pool.kind.path())
            .header(HOST, run.host.as_str())
            .header(CONTENT_TYPE, run.content_type)
            .body(Full::new(body))
            .expect("static request parts are valid");
        if sender.ready().await.is_err() {
            match connect(addr).await {
                Ok(s) => sender = s,
                Err(_) => {
                    out.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let answer = async {
            let resp = sender.send_request(request).await.ok()?;
            let status = resp.status();
            resp.into_body().collect().await.ok().map(|_| status)
        };
        let Ok(status) = tokio::time::timeout_at(run.cutoff.into(), answer).await else {
            if in_window {
                out.late += 1;
                out.latencies_ns.push(run.cutoff.duration_since(due).as_nanos() as u64);
            }
            continue;
        };
        let done = Instant::now();
        let answered_in_window = done >= run.window_start && done <= run.window_end;
        match status {
            Some(s) if s.is_success() => {
                out.records_ok_total += records;
                if answered_in_window {
                    out.ok += 1;
                    out.records_ok += records;
                }
                if in_window {
                    out.latencies_ns.push(done.duration_since(due).as_nanos() as u64);
                }
            }
            Some(_) => {
                if answered_in_window {
                    out.refused += 1;
                }
            }
            None => out.errors += 1,
        }
    }
    out
}

/// The `q` quantile (0..=1) of `sorted` nanoseconds, in milliseconds.
pub fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::quantile_ms;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        assert_eq!(quantile_ms(&v, 0.5), 500.0);
        assert_eq!(quantile_ms(&v, 0.99), 990.0);
        assert_eq!(quantile_ms(&v, 0.999), 999.0);
        assert!(quantile_ms(&[], 0.5).is_nan());
    }
}
