//! The listen loop both receivers share: HTTP/1.1 keep-alive, `TCP_NODELAY`, TLS when
//! `tls` is set (the handshake on the connection's own task), graceful shutdown, and a
//! bound on connections.
//!
//! Every connection costs a file descriptor, a task and read buffers, so a listener
//! holds at most `max_connections`. When a new one arrives at the limit, the connection
//! that has waited longest for a request (keep-alive idle, or opened and never used) is
//! closed to make room: an idle connection costs its client nothing to open again,
//! while refusing newcomers would let a few thousand idle sockets lock every sender
//! out. Only when every connection is busy with a request is the newcomer refused, with
//! a 503 written at once and nothing read. A connection closed to make room holds its
//! socket until its task runs; accepting pauses while too many such sockets are still
//! open, so the descriptors in use stay within an eighth over the limit. Accepting never
//! spins: when it fails (out of file descriptors) the loop waits, longer each time, and
//! says so at most every 10 s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use gencol_engine::CancellationToken;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::{Body, ReceiverError};
use crate::tls::ServerTls;

/// How a listener treats its connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ConnectionLimits {
    /// `max_connections`.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, counted from when
    /// it starts waiting for one (so also how long a keep-alive connection stays idle).
    pub header_timeout: Duration,
}

/// The largest read buffer of one connection. hyper's own default (about 400 KiB) lets
/// every connection that sends endless headers hold that much; 64 KiB is far more than
/// any real request's headers (a bearer token, a content type), and bodies are read
/// through it in parts anyway.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// What the listen loop serves: a receiver's layered stack (`super::stack`), cloned for
/// each request.
pub(crate) trait HttpService:
    Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
}

impl<S> HttpService for S where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Binds `endpoint` and serves `service` on it until `shutdown` is cancelled; then
/// stops accepting, lets requests in flight finish, and closes idle keep-alive
/// connections. A connection there is no room for gets `busy_json` in a 503. Returns
/// the bound address (port 0 becomes the real port).
pub(crate) async fn serve<S: HttpService>(
    endpoint: &str,
    service: S,
    busy_json: &'static str,
    limits: ConnectionLimits,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ReceiverError> {
    let bind_err = |source| ReceiverError::Bind { endpoint: endpoint.to_owned(), source };
    let listener = TcpListener::bind(endpoint).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let task = tokio::spawn(accept_loop(listener, service, busy_json, limits, tls, shutdown));
    Ok((addr, task))
}

async fn accept_loop<S: HttpService>(
    listener: TcpListener,
    service: S,
    busy_json: &'static str,
    limits: ConnectionLimits,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_READ_BUFFER);
    let open = Arc::new(OpenConnections::new(limits.max_connections));
    let refusal = busy_answer(busy_json);
    let mut failures = AcceptFailures::default();
    let mut connections = JoinSet::new();
    loop {
        let room = open.has_sockets_to_spare();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // Too many sockets still open (closed ones whose tasks have not run yet):
            // wait for one to go before taking another from the kernel's queue.
            () = open.socket_closed.notified(), if !room => {}
            accepted = listener.accept(), if room => {
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        failures.succeeded();
                        a
                    }
                    Err(e) => {
                        let pause = failures.failed(&e);
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                };
                let Some(conn) = open.admit() else {
                    // On a TLS port a plain answer would not be read: the client sees the
                    // connection close, and retries.
                    if tls.is_none() {
                        refuse(stream, &refusal);
                    }
                    continue;
                };
                // Answers are small and written at once; waiting for Nagle only adds latency.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
                }
                // One copy of the stack per connection, called for each of its requests
                // (hyper asks one at a time): no copy of every layer per request.
                let service = RefCell::new(service.clone());
                let in_request = conn.clone();
                let per_request = service_fn(move |req| {
                    let busy = in_request.busy();
                    let answer = call(&service, req);
                    async move {
                        let answer = answer.await;
                        drop(busy);
                        answer
                    }
                });
                let (http, tls, shutdown, open) = (http.clone(), tls.clone(), shutdown.clone(), open.clone());
                connections.spawn(async move {
                    // The connection (and its socket) is dropped at the end of this block.
                    let result = match tls {
                        None => drive(http.serve_connection(TokioIo::new(stream), per_request), &conn, &shutdown).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                drive(http.serve_connection(TokioIo::new(stream), per_request), &conn, &shutdown).await
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                Ok(())
                            }
                        },
                    };
                    open.close(&conn);
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it ends, gencol shuts down (requests in flight finish), or
/// its place is given to a newer connection while it waits for a request.
async fn drive<I, S>(
    http_conn: hyper::server::conn::http1::Connection<I, S>,
    conn: &Connection,
    shutdown: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(http_conn);
    tokio::select! {
        r = http_conn.as_mut() => r,
        () = shutdown.cancelled() => {
            http_conn.as_mut().graceful_shutdown();
            http_conn.await
        }
        () = conn.evicted.cancelled() => Ok(()),
    }
}

/// Calls the connection's copy of the stack when it is ready at once (every layer is
/// always ready: a full pipeline is a 503, not a wait for readiness), else a fresh copy
/// that is waited on, as `tower` requires `poll_ready` before `call`.
fn call<S: HttpService>(
    service: &RefCell<S>,
    req: Request<Incoming>,
) -> Either<S::Future, Oneshot<S, Request<Incoming>>> {
    let mut service = service.borrow_mut();
    match service.poll_ready(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Either::Left(service.call(req)),
        _ => Either::Right(service.clone().oneshot(req)),
    }
}

/// The connections of one listener: how many, and which wait for a request.
struct OpenConnections {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    /// Connections that count against `max` (one closed to make room no longer does).
    by_id: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Sockets open, closed-to-make-room ones included until their task drops them.
    sockets: AtomicUsize,
    /// Told whenever a socket is dropped.
    socket_closed: Notify,
}

/// One open connection, shared by its task and the listener.
struct Connection {
    id: u64,
    /// Microseconds since the listener's epoch, plus one, at which it started waiting
    /// for a request; 0 while a request is being served.
    idle_since: AtomicU64,
    /// Cancelled to close it (the listener needs its place).
    evicted: CancellationToken,
    epoch: Instant,
}

impl OpenConnections {
    fn new(max: usize) -> Self {
        OpenConnections {
            max,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            by_id: Mutex::new(HashMap::new()),
            sockets: AtomicUsize::new(0),
            socket_closed: Notify::new(),
        }
    }

    /// Whether another socket may be taken: at most an eighth more than `max` are open,
    /// the excess being connections closed to make room whose tasks have not run yet.
    fn has_sockets_to_spare(&self) -> bool {
        self.sockets.load(Ordering::Acquire) < self.max + self.max / 8 + 1
    }

    /// A place for a new connection: a free one, else the place of the connection that
    /// has waited longest for a request (which is closed). `None` when every connection
    /// is serving a request.
    fn admit(&self) -> Option<Arc<Connection>> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if by_id.len() >= self.max {
            let longest_idle = by_id
                .values()
                .filter_map(|c| match c.idle_since.load(Ordering::Acquire) {
                    0 => None,
                    since => Some((since, c.id)),
                })
                .min()?;
            if let Some(evicted) = by_id.remove(&longest_idle.1) {
                evicted.evicted.cancel();
            }
        }
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            idle_since: AtomicU64::new(0),
            evicted: CancellationToken::new(),
            epoch: self.epoch,
        });
        conn.waiting();
        by_id.insert(conn.id, conn.clone());
        self.sockets.fetch_add(1, Ordering::AcqRel);
        Some(conn)
    }

    /// The connection's socket is dropped.
    fn close(&self, conn: &Connection) {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn.id);
        self.sockets.fetch_sub(1, Ordering::AcqRel);
        self.socket_closed.notify_one();
    }
}

impl Connection {
    /// Marks the connection busy until the returned guard is dropped (the request is
    /// answered, or abandoned).
    fn busy(self: &Arc<Self>) -> Busy {
        self.idle_since.store(0, Ordering::Release);
        Busy(self.clone())
    }

    fn waiting(&self) {
        let micros = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.idle_since.store(micros + 1, Ordering::Release);
    }
}

/// A request in progress on a connection.
struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.waiting();
    }
}

/// The whole answer to a connection there is no room for, as bytes on the wire.
fn busy_answer(json: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
}

/// Answers 503 and closes, without waiting for anything: a fresh socket's send buffer
/// takes the few bytes at once, and what the client already sent is read (as far as it
/// has arrived) so that closing does not reset the connection before the answer is read.
pub(crate) fn refuse(stream: TcpStream, answer: &[u8]) {
    let _ = stream.try_write(answer);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Accept failures, mostly "Too many open files": each one waits longer (10 ms, doubling
/// up to 1 s) so the loop never spins, and the log gets one line per 10 s at most.
struct AcceptFailures {
    pause: Duration,
    last_report: Option<Instant>,
    unreported: u64,
}

impl Default for AcceptFailures {
    fn default() -> Self {
        AcceptFailures { pause: Self::FIRST_PAUSE, last_report: None, unreported: 0 }
    }
}

impl AcceptFailures {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const LONGEST_PAUSE: Duration = Duration::from_secs(1);
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    /// Notes a failure; returns how long to wait before accepting again.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        let now = Instant::now();
        if self.last_report.is_none_or(|at| now.duration_since(at) >= Self::REPORT_EVERY) {
            tracing::warn!(
                error = %e,
                failures_since_last_report = self.unreported,
                "accepting a connection failed; pausing accepts (raise the open files limit, `ulimit -n`, or lower max_connections)"
            );
            self.last_report = Some(now);
            self.unreported = 0;
        } else {
            self.unreported += 1;
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Self::LONGEST_PAUSE);
        pause
    }

    fn succeeded(&mut self) {
        self.pause = Self::FIRST_PAUSE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_longest_idle_connection_makes_room() {
        let open = OpenConnections::new(2);
        let a = open.admit().expect("room");
        std::thread::sleep(Duration::from_millis(2));
        let b = open.admit().expect("room");
        // Both wait for a request: the older one is closed for the newcomer.
        let c = open.admit().expect("made room");
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled());
        // A connection serving a request is never closed for a newcomer.
        let _b_busy = b.busy();
        let _c_busy = c.busy();
        assert!(open.admit().is_none(), "every connection is busy: refused");
        drop(_c_busy);
        let d = open.admit().expect("c is idle again");
        assert!(c.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled());
        // a and c were closed to make room, but their tasks still hold their sockets: 4
        // open, one more than 2 + 2/8 + 1 allows, so accepting waits.
        assert!(!open.has_sockets_to_spare());
        open.close(&a);
        open.close(&c);
        assert!(open.has_sockets_to_spare());
        let e = open.admit().expect("b busy, d idle: d makes room");
        assert!(d.evicted.is_cancelled());
        open.close(&d);
        open.close(&b);
        open.close(&e);
        assert!(open.admit().is_some());
    }

    #[test]
    fn accept_failures_back_off_and_report_rarely() {
        let mut failures = AcceptFailures::default();
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        let pauses: Vec<Duration> = (0..10).map(|_| failures.failed(&e)).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert_eq!(pauses[9], Duration::from_secs(1));
        assert_eq!(failures.unreported, 9, "one report for ten failures in a row");
        failures.succeeded();
        assert_eq!(failures.failed(&e), Duration::from_millis(10));
    }

    #[test]
    fn the_busy_answer_is_a_complete_http_response() {
        let raw = String::from_utf8(busy_answer(r#"{"error":"x"}"#)).expect("text");
        assert!(raw.starts_with("HTTP/1.1 503 "));
        assert!(raw.contains("retry-after: 1\r\n"));
        assert!(raw.ends_with("content-length: 13\r\n\r\n{\"error\":\"x\"}"), "{raw}");
    }
}
