//! Durability under faults, end to end over real HTTP (SPEC §7): overload with the default
//! memory queue, SIGKILL loops and a long outage with per-exporter disk queues, a dead
//! destination in a fan-out, `Retry-After`, damaged queue files, a full disk and
//! `gencol queue inspect`.
//!
//! Delivery is at least once and span ids are deterministic (SPEC §3), so everything here
//! counts unique span ids; repeats are printed, never failed on. Every fault is made to
//! land while data is still on its way (checked at the moment of the fault), so no test
//! can pass because the fault came after everything was already delivered.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::{Answer, SinkOptions};

// ---------------------------------------------------------------------------------------
// Records, ids and configs
// ---------------------------------------------------------------------------------------

/// A generation whose prompt is `content`, in trace `(trace_id, trace_name)` if given.
fn record(id: &str, trace: Option<(&str, &str)>, start_ns: u64, end_ns: u64, content: &str) -> serde_json::Value {
    let mut g = generation(id);
    g["created_at"] = rfc3339(start_ns).into();
    g["completed_at"] = rfc3339(end_ns).into();
    g["request"]["messages"][0]["content"] = content.into();
    if let Some((trace_id, trace_name)) = trace {
        g["request"]["trace"] = serde_json::json!({"trace_id": trace_id, "trace_name": trace_name});
    }
    g
}

/// A plain generation with a prompt of `content_len` bytes unique to `id`.
fn plain_record(id: &str, n: u64, content_len: usize) -> Vec<u8> {
    let start = T0_NS + n * 1_000_000;
    serde_json::to_vec(&record(id, None, start, start + SECOND_NS / 2, &filler(n, content_len))).expect("json")
}

/// SPEC §3: the generation span's id.
fn gen_span_id(id: &str) -> String {
    sha_hex(&format!("gencol:gen:{id}"), 8)
}

/// SPEC §3: the root span's id (no parent span id given).
fn root_span_id(trace_hex: &str, trace_name: &str) -> String {
    sha_hex(&format!("gencol:root:{trace_hex}:{trace_name}"), 8)
}

/// `len` bytes of text that differ for every `seed`, so nothing on the way can share or
/// shrink them.
fn filler(seed: u64, len: usize) -> String {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        out.push_str(&format!("{:016x} ", rng.next()));
    }
    out.truncate(len);
    out
}

/// SplitMix64: trace shapes and kill moments. The seed is printed, and
/// `GENCOL_TEST_SEED` replays a run.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("GENCOL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("{test}: seed {seed} (GENCOL_TEST_SEED={seed} replays it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Short backoff, but a long `max_elapsed_time`: a batch is never given up during a test.
const RETRY: &str = "{initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 10m}";

/// An `otlp/NAME` exporter to `url`; `queue` is its `queue:` value (empty: the default).
fn otlp_exporter(name: &str, url: &str, queue: &str) -> String {
    let queue = if queue.is_empty() { String::new() } else { format!("    queue: {queue}\n") };
    format!("  otlp/{name}:\n    endpoint: {url}\n    compression: none\n    retry: {RETRY}\n{queue}")
}

/// A disk queue in `dir`, fsynced before every 202, pushing back when full.
fn disk_queue(dir: &str) -> String {
    format!("{{kind: disk, dir: {dir}, max_bytes: 64MiB, sync: always, when_full: block}}")
}

/// `generations` and `otlp` → `processors` → the `otlp/NAME` exporters in `names`, with
/// `service.data_dir` inside the test's own directory (never the working directory).
fn config(exporters: &[String], names: &[&str], processors: &str, group_window: &str) -> String {
    let ids: Vec<String> = names.iter().map(|n| format!("otlp/{n}")).collect();
    let processors = if processors.is_empty() { String::new() } else { format!("      processors: [{processors}]\n") };
    format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\n  otlp:\n    endpoint: 127.0.0.1:{{OTLP_PORT}}\n\
         processors:\n  hierarchy:\n    group_window: {group_window}\n  namespace: {{}}\n\
         exporters:\n{exporters}\
         service:\n  data_dir: {{DIR}}/data\n  shutdown_timeout: 2s\n  pipelines:\n    traces:\n      receivers: [generations, otlp]\n{processors}      exporters: [{ids}]\n",
        exporters = exporters.concat(),
        ids = ids.join(", "),
    )
}

/// POSTs one JSON body until gencol answers 202, as a gateway that retries would: through
/// 503s and while gencol is down or restarting. `Err` says why it gave up at `give_up`.
async fn send_until_accepted(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    give_up: Instant,
    stats: &SendStats,
) -> Result<(), String> {
    loop {
        match try_post_with(client, url, "application/json", body.to_vec()).await {
            Ok((202, answer, _)) => {
                let rejected = answer["rejected"].as_array().map_or(0, Vec::len);
                if answer["accepted"].as_u64() == Some(0) || rejected > 0 {
                    return Err(format!("gencol rejected a valid record: {answer}"));
                }
                return Ok(());
            }
            Ok((status, answer, _)) if status == 503 || status == 429 => {
                stats.refusals.fetch_add(1, Ordering::Relaxed);
                if Instant::now() > give_up {
                    return Err(format!("still refused ({status} {answer}) at the deadline"));
                }
            }
            Ok((status, answer, _)) => return Err(format!("unexpected answer {status}: {answer}")),
            Err(e) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                if Instant::now() > give_up {
                    return Err(format!("gencol unreachable at the deadline: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Default)]
struct SendStats {
    refusals: AtomicU64,
    connection_errors: AtomicU64,
}

/// Bytes of the segment files in a queue directory.
fn segment_bytes(dir: &Path) -> u64 {
    segment_files(dir).iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
}

/// The segment files of a queue directory (`<20 digits>.seg`), in seq order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.len() == 24 && name.ends_with(".seg") && name[..20].bytes().all(|b| b.is_ascii_digit())
    });
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------
// The queue's file format, read independently of gencol (the layout in the contract)
// ---------------------------------------------------------------------------------------

const SEGMENT_HEADER: usize = 20;
const RECORD_HEADER: usize = 28;

/// One record found in a segment file.
#[derive(Clone, Debug)]
struct SegmentRecord {
    file: PathBuf,
    seq: u64,
    payload: std::ops::Range<usize>,
}

/// CRC-32 (IEEE), as the queue checksums headers and records.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    parts.iter().for_each(|p| hasher.update(p));
    hasher.finalize()
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Every record of an undamaged segment file, checked against the contract's layout: the
/// 20-byte header ("GCQSEG01", first seq = the file name, CRC-32), then records of a
/// 28-byte header ("GCR1", len, seq, time_ms, CRC-32 of len..time and the payload) and
/// their payload, back to back to the end of the file.
fn read_segment(path: &Path) -> (Vec<u8>, Vec<SegmentRecord>) {
    let bytes = std::fs::read(path).expect("read segment");
    let name_seq: u64 = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).expect("seq name");
    assert!(bytes.len() >= SEGMENT_HEADER, "{}: shorter than a segment header", path.display());
    assert_eq!(&bytes[..8], b"GCQSEG01", "{}: segment magic", path.display());
    assert_eq!(le_u64(&bytes[8..]), name_seq, "{}: first seq in the header = the file name", path.display());
    assert_eq!(le_u32(&bytes[16..]), crc32(&[&bytes[..16]]), "{}: segment header CRC", path.display());
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at < bytes.len() {
        assert!(at + RECORD_HEADER <= bytes.len(), "{}: a cut record header at {at}", path.display());
        let h = &bytes[at..at + RECORD_HEADER];
        assert_eq!(&h[..4], b"GCR1", "{}: record magic at {at}", path.display());
        let len = le_u32(&h[4..]) as usize;
        let payload = at + RECORD_HEADER..at + RECORD_HEADER + len;
        assert!(payload.end <= bytes.len(), "{}: a cut record at {at}", path.display());
        assert_eq!(le_u32(&h[24..]), crc32(&[&h[4..24], &bytes[payload.clone()]]), "{}: CRC at {at}", path.display());
        records.push(SegmentRecord { file: path.to_owned(), seq: le_u64(&h[8..]), payload: payload.clone() });
        at = payload.end;
    }
    (bytes, records)
}

/// Which of `ids` (ASCII, all `width` bytes long and starting with `prefix`) a payload
/// names: how a test knows which generations a record holds without decoding it.
fn ids_in(payload: &[u8], prefix: &[u8], width: usize) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut at = 0;
    while at + width <= payload.len() {
        if payload[at] == prefix[0] && payload[at..].starts_with(prefix) {
            found.insert(String::from_utf8_lossy(&payload[at..at + width]).into_owned());
            at += width;
        } else {
            at += 1;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// `gencol queue inspect` output
// ---------------------------------------------------------------------------------------

/// The value after `label:` on a line of `gencol queue inspect` output (labels compared
/// without case).
fn inspect_field(out: &str, label: &str) -> Option<String> {
    let label = format!("{}:", label.to_ascii_lowercase());
    out.lines().find_map(|l| {
        let l = l.trim();
        l.to_ascii_lowercase().starts_with(&label).then(|| l[label.len()..].trim().to_owned())
    })
}

fn inspect_number(out: &str, label: &str) -> u64 {
    let v = inspect_field(out, label).unwrap_or_else(|| panic!("no `{label}:` in queue inspect output:\n{out}"));
    v.split_whitespace()
        .next()
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("`{label}: {v}` is not a number:\n{out}"))
}

/// Seconds in a human duration such as `2s`, `1m 5s`, `3m`, `1h 2m 3s` or `250ms`.
fn human_seconds(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for token in text.split_whitespace() {
        let digits: String = token.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let unit = &token[digits.len()..];
        let n: f64 = digits.parse().ok()?;
        total += n * match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "d" | "days" | "day" => 86400.0,
            _ => return None,
        };
        any = true;
    }
    any.then_some(total)
}

// ---------------------------------------------------------------------------------------
// 1. Overload with the default (memory) queue
// ---------------------------------------------------------------------------------------

/// 16 connections post as fast as they are answered for at least OVERLOAD_AT_LEAST and
/// until OVERLOAD_REFUSALS 503s were seen, at most OVERLOAD_AT_MOST: a busy machine takes
/// longer to fill the queue, and the test must see it full.
const OVERLOAD_AT_LEAST: Duration = Duration::from_secs(10);
const OVERLOAD_AT_MOST: Duration = Duration::from_secs(40);
const OVERLOAD_REFUSALS: u64 = 50;
const OVERLOAD_CONNECTIONS: usize = 16;
const SPANS_PER_BODY: u64 = 100;
/// How long the sink takes per export request while the connections post. gencol sends at
/// most 4 requests of at most 1,024 spans at once, so delivery tops out near
/// 4 × 1,024 / SLOW_SINK = 2,000 spans a second, far below what 16 connections post: the
/// queue (100,000 spans) fills and the receiver has to push back. Then the sink answers at
/// once, so the backlog drains quickly.
const SLOW_SINK: Duration = Duration::from_secs(2);

/// An OTLP/JSON body of 100 spans whose span ids belong to body `n` alone.
fn overload_body(n: u64) -> Vec<u8> {
    let spans: Vec<String> = (0..SPANS_PER_BODY)
        .map(|i| {
            let start = T0_NS + n * 1_000_000 + i;
            format!(
                r#"{{"traceId":"{:032x}","spanId":"{}","name":"overload {n}/{i}","kind":1,"startTimeUnixNano":"{start}","endTimeUnixNano":"{}"}}"#,
                (1u128 << 100) + u128::from(n),
                overload_span_id(n, i),
                start + 1000
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"overload"}}}}]}},"scopeSpans":[{{"scope":{{"name":"durability"}},"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
    .into_bytes()
}

fn overload_span_id(body: u64, i: u64) -> String {
    format!("{:016x}", (1u64 << 62) + body * SPANS_PER_BODY + i)
}

/// What one connection saw.
#[derive(Default)]
struct Overload {
    accepted: Vec<u64>,
    refused: Vec<u64>,
    refused_without_retry_after: usize,
    slowest_refusal: Duration,
    other: Vec<String>,
}

// Multi-threaded: the sink answers while the test thread waits on gencol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_with_defaults_never_drops_what_was_answered_2xx() {
    let mut sink = PortSink::start(SinkOptions::default().fallback(Answer::delay(SLOW_SINK))).await;
    // No queue settings: the default memory queue, whose default is to block when full.
    let mut gencol = Gencol::start(&config(&[otlp_exporter("sink", &sink.url(), "")], &["sink"], "", "1s"));
    let url = gencol.otlp_url();
    let next_body = Arc::new(AtomicU64::new(0));
    let refusals = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let connections: Vec<_> = (0..OVERLOAD_CONNECTIONS)
        .map(|_| {
            let (url, next_body, refusals, stop) = (url.clone(), next_body.clone(), refusals.clone(), stop.clone());
            tokio::spawn(async move {
                // One client per connection: requests on it go one after the other.
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
                let mut seen = Overload::default();
                while !stop.load(Ordering::Relaxed) {
                    let n = next_body.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    match try_post_with(&client, &url, "application/json", overload_body(n)).await {
                        Ok((status, _, _)) if (200..300).contains(&status) => seen.accepted.push(n),
                        Ok((503, _, headers)) => {
                            refusals.fetch_add(1, Ordering::Relaxed);
                            seen.refused.push(n);
                            seen.slowest_refusal = seen.slowest_refusal.max(sent.elapsed());
                            if headers.get("retry-after").is_none() {
                                seen.refused_without_retry_after += 1;
                            }
                        }
                        Ok((status, body, _)) => seen.other.push(format!("body {n}: {status} {body}")),
                        Err(e) => seen.other.push(format!("body {n}: {e}")),
                    }
                }
                seen
            })
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < OVERLOAD_AT_MOST
        && (started.elapsed() < OVERLOAD_AT_LEAST || refusals.load(Ordering::Relaxed) < OVERLOAD_REFUSALS)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let posted_for = started.elapsed();
    let mut all = Overload::default();
    for c in connections {
        let seen = c.await.expect("connection task");
        all.accepted.extend(seen.accepted);
        all.refused.extend(seen.refused);
        all.refused_without_retry_after += seen.refused_without_retry_after;
        all.slowest_refusal = all.slowest_refusal.max(seen.slowest_refusal);
        all.other.extend(seen.other);
    }
    eprintln!(
        "overload: {} bodies answered 2xx, {} answered 503 (slowest 503 after {:?}), {} other, in {posted_for:?}",
        all.accepted.len(),
        all.refused.len(),
        all.slowest_refusal,
        all.other.len()
    );
    assert!(all.other.is_empty(), "answers other than 2xx or 503: {:?}", &all.other[..all.other.len().min(5)]);
    assert!(
        !all.refused.is_empty(),
        "never overloaded: no 503 in {posted_for:?} ({} bodies accepted); slow the sink more (SLOW_SINK)",
        all.accepted.len()
    );
    assert_eq!(all.refused_without_retry_after, 0, "every 503 carries Retry-After");

    // Drain fast: gencol's sends in flight to the slow sink fail and are sent again.
    sink.down().await;
    sink.set_fallback(None);
    sink.up().await;
    let want: Vec<String> =
        all.accepted.iter().flat_map(|&n| (0..SPANS_PER_BODY).map(move |i| overload_span_id(n, i))).collect();
    sink.assert_all_arrive(&want, Duration::from_secs(150), "spans answered 2xx", &gencol).await;
    // SPEC §2: a 503 keeps nothing of its request (the sender sends it again). Anything
    // kept would have been queued beside the accepted spans, so a second is enough.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sink.absorb().await;
    let leaked = all.refused.iter().filter(|&&n| (0..SPANS_PER_BODY).any(|i| sink.tally.has(&overload_span_id(n, i))));
    let leaked: Vec<u64> = leaked.copied().collect();
    assert!(
        leaked.is_empty(),
        "{} bodies answered 503 reached the sink anyway (e.g. {:?})",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    eprintln!("overload: {} spans delivered, {} repeats", sink.tally.unique(), sink.tally.duplicates());
    assert!(gencol.is_running(), "gencol survived:\n{}", tail(&gencol.stderr(), 30));
}

// ---------------------------------------------------------------------------------------
// 2. SIGKILL loop with a disk queue and `hierarchy`
// ---------------------------------------------------------------------------------------

const KILL_GENERATIONS: usize = 20_000;
/// Generations a second over all senders (one generation per request).
const KILL_RATE: u64 = 700;
const KILL_SENDERS: usize = 16;
const KILLS: usize = 5;
/// Generations of one trace that reach gencol at most this far apart share a group
/// window for sure (the pipeline's `group_window` is 1 s).
const WINDOW_SAFE_MS: u64 = 700;

struct Trace {
    hex: String,
    raw: String,
    name: String,
    root: String,
    gens: Vec<Gen>,
}

struct Gen {
    id: String,
    span: String,
    start: u64,
    end: u64,
}

impl Trace {
    fn earliest_start(&self) -> u64 {
        self.gens.iter().map(|g| g.start).min().expect("a generation")
    }

    fn latest_end(&self) -> u64 {
        self.gens.iter().map(|g| g.end).max().expect("a generation")
    }
}

/// Traces of 1–5 generations, `total` generations in all. Within a trace the starts and
/// the ends are out of sending order (the earliest start and the latest end usually come
/// from generations other than the first and the last sent), so a root that covers only
/// part of its generations shows.
fn kill_loop_traces(rng: &mut Rng, total: usize) -> Vec<Trace> {
    let mut traces = Vec::new();
    let mut made = 0;
    while made < total {
        let k = traces.len();
        let n = (1 + rng.below(5) as usize).min(total - made);
        let raw = format!("kill-loop-{k}");
        let hex = sha_hex(&raw, 16);
        let name = format!("Kill Loop {k}");
        let t0 = T0_NS + k as u64 * 60 * SECOND_NS;
        let gens = (0..n)
            .map(|j| {
                let id = format!("kl-{k:05}-{j}");
                let start = t0 + ((j + 1) % n) as u64 * SECOND_NS;
                let end = t0 + 20 * SECOND_NS + ((j + 2) % n) as u64 * SECOND_NS;
                Gen { span: gen_span_id(&id), id, start, end }
            })
            .collect();
        traces.push(Trace { root: root_span_id(&hex, &name), hex, raw, name, gens });
        made += n;
    }
    traces
}

/// What the senders have done, read by the killer and by the checks.
struct KillProgress {
    /// Counts kills; taken before a trace's first send and after its last 202, so a trace
    /// with both the same was accepted whole by one gencol process.
    run: AtomicUsize,
    accepted: Vec<Vec<AtomicBool>>,
    /// Per generation, ms after `epoch`: when its first attempt was sent, when it got 202.
    epoch: Instant,
    sent_ms: Vec<Vec<AtomicU64>>,
    accepted_ms: Vec<Vec<AtomicU64>>,
    first_run: Vec<AtomicUsize>,
    last_run: Vec<AtomicUsize>,
    senders_done: AtomicUsize,
    accepted_count: AtomicUsize,
    stats: SendStats,
}

impl KillProgress {
    fn new(traces: &[Trace]) -> KillProgress {
        KillProgress {
            run: AtomicUsize::new(0),
            accepted: traces.iter().map(|t| t.gens.iter().map(|_| AtomicBool::new(false)).collect()).collect(),
            epoch: Instant::now(),
            sent_ms: traces.iter().map(|t| t.gens.iter().map(|_| AtomicU64::new(0)).collect()).collect(),
            accepted_ms: traces.iter().map(|t| t.gens.iter().map(|_| AtomicU64::new(0)).collect()).collect(),
            first_run: traces.iter().map(|_| AtomicUsize::new(usize::MAX)).collect(),
            last_run: traces.iter().map(|_| AtomicUsize::new(usize::MAX)).collect(),
            senders_done: AtomicUsize::new(0),
            accepted_count: AtomicUsize::new(0),
            stats: SendStats::default(),
        }
    }

    /// (generations answered 202, of those not at the sink, traces with a generation
    /// answered 202 but no root at the sink: roots that only gencol's disk holds).
    fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// An upper bound of the time between the arrivals at gencol of two generations of
    /// trace `t` sent one after the other: from the first send of one to the 202 of the
    /// next. Below the group window, the window cannot have closed between them.
    fn widest_gap_ms(&self, t: usize) -> u64 {
        let sent = &self.sent_ms[t];
        let accepted = &self.accepted_ms[t];
        (1..sent.len())
            .map(|j| accepted[j].load(Ordering::SeqCst).saturating_sub(sent[j - 1].load(Ordering::SeqCst)))
            .max()
            .unwrap_or(0)
    }

    fn at_risk(&self, traces: &[Trace], tally: &SpanTally) -> (usize, usize, usize) {
        let (mut accepted, mut missing, mut open_roots) = (0, 0, 0);
        for (t, trace) in traces.iter().enumerate() {
            let mut any = false;
            for (j, g) in trace.gens.iter().enumerate() {
                if self.accepted[t][j].load(Ordering::Acquire) {
                    any = true;
                    accepted += 1;
                    if !tally.has(&g.span) {
                        missing += 1;
                    }
                }
            }
            if any && !tally.has(&trace.root) {
                open_roots += 1;
            }
        }
        (accepted, missing, open_roots)
    }
}

/// One SIGKILL and what was at stake when it landed.
#[derive(Debug)]
#[allow(dead_code)] // Read through Debug in the report.
struct Kill {
    at: Duration,
    accepted: usize,
    missing_at_sink: usize,
    roots_not_at_sink: usize,
    senders_done: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_nothing_answered_202() {
    let mut rng = Rng::seeded("sigkill_loop_loses_nothing_answered_202");
    let traces = Arc::new(kill_loop_traces(&mut rng, KILL_GENERATIONS));
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let exporter = otlp_exporter("sink", &sink.url(), &disk_queue("{DIR}/queues/sink"));
    let mut gencol = Gencol::start(&config(&[exporter], &["sink"], "hierarchy, namespace", "1s"));
    let url = gencol.generations_url();
    let progress = Arc::new(KillProgress::new(&traces));
    let send_for = Duration::from_secs_f64(KILL_GENERATIONS as f64 / KILL_RATE as f64);
    // Only a failing request looks at this; requests that succeed go on past it.
    let give_up = Instant::now() + send_for + Duration::from_secs(120);

    // Each sender takes every KILL_SENDERS-th trace and sends its generations one after
    // the other, paced so all senders together make KILL_RATE a second.
    let senders: Vec<_> = (0..KILL_SENDERS)
        .map(|s| {
            let (traces, progress, url) = (traces.clone(), progress.clone(), url.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut pace = tokio::time::interval(Duration::from_secs_f64(KILL_SENDERS as f64 / KILL_RATE as f64));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for t in (s..traces.len()).step_by(KILL_SENDERS) {
                    let trace = &traces[t];
                    progress.first_run[t].store(progress.run.load(Ordering::SeqCst), Ordering::SeqCst);
                    for (j, g) in trace.gens.iter().enumerate() {
                        pace.tick().await;
                        progress.sent_ms[t][j].store(progress.ms(), Ordering::SeqCst);
                        let body = record(&g.id, Some((&trace.raw, &trace.name)), g.start, g.end, "kill loop");
                        let body = serde_json::to_vec(&body).expect("json");
                        send_until_accepted(&client, &url, &body, give_up, &progress.stats).await?;
                        progress.accepted_ms[t][j].store(progress.ms(), Ordering::SeqCst);
                        progress.accepted[t][j].store(true, Ordering::Release);
                        progress.accepted_count.fetch_add(1, Ordering::SeqCst);
                    }
                    progress.last_run[t].store(progress.run.load(Ordering::SeqCst), Ordering::SeqCst);
                }
                progress.senders_done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            })
        })
        .collect();

    // One kill in each fifth of the sending, somewhere in its middle 60% (counted in
    // generations answered 202, so the kills spread over the sending however fast it goes).
    let started = Instant::now();
    let slot = KILL_GENERATIONS / KILLS;
    let mut kills = Vec::new();
    for i in 0..KILLS {
        let at = slot * i + (slot as f64 * (0.2 + 0.6 * rng.unit())) as usize;
        while progress.accepted_count.load(Ordering::SeqCst) < at {
            sink.absorb().await;
            assert!(
                Instant::now() < give_up,
                "sending stalled at {} generations",
                progress.accepted_count.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kill only while the sink still lacks something gencol answered 202 for.
        let waiting = Instant::now();
        let (accepted, missing, open_roots) = loop {
            sink.absorb().await;
            let seen = progress.at_risk(&traces, &sink.tally);
            if seen.1 > 0 || waiting.elapsed() > Duration::from_secs(5) {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let senders_done = progress.senders_done.load(Ordering::SeqCst);
        progress.run.fetch_add(1, Ordering::SeqCst);
        gencol.kill();
        kills.push(Kill {
            at: started.elapsed(),
            accepted,
            missing_at_sink: missing,
            roots_not_at_sink: open_roots,
            senders_done,
        });
        tokio::task::block_in_place(|| gencol.restart());
    }
    for s in senders {
        if let Err(e) = s.await.expect("sender task") {
            panic!("a sender gave up: {e}\n{}", tail(&gencol.stderr(), 40));
        }
    }
    let sent_in = started.elapsed();
    eprintln!(
        "kill loop: {KILL_GENERATIONS} generations in {} traces sent in {sent_in:?} ({} refusals, {} connection errors); kills: {kills:#?}",
        traces.len(),
        progress.stats.refusals.load(Ordering::Relaxed),
        progress.stats.connection_errors.load(Ordering::Relaxed)
    );
    for k in &kills {
        assert!(k.senders_done < KILL_SENDERS && k.accepted < KILL_GENERATIONS, "a kill after sending ended: {k:?}");
        assert!(k.missing_at_sink > 0, "a kill landed when the sink had everything: {k:?}");
    }
    assert!(
        kills.iter().any(|k| k.roots_not_at_sink > 0),
        "no kill landed while a root was still held (the hierarchy state was never at stake)"
    );

    // Everything got a 202 (the senders retried until it did): wait for every generation
    // span and every root.
    let want: Vec<String> =
        traces.iter().flat_map(|t| t.gens.iter().map(|g| g.span.clone()).chain([t.root.clone()])).collect();
    let missing = sink.wait_for_ids(&want, Duration::from_secs(60)).await;
    // Late repeats (an unacknowledged batch sent again) may still come; let them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.absorb().await;
    let tally = &sink.tally;
    let missing_gens: Vec<&Gen> = traces.iter().flat_map(|t| &t.gens).filter(|g| !tally.has(&g.span)).collect();
    let missing_roots: Vec<&Trace> = traces.iter().filter(|t| !tally.has(&t.root)).collect();
    assert!(
        missing.is_empty() && missing_gens.is_empty() && missing_roots.is_empty(),
        "lost after {KILLS} SIGKILLs: {} of {KILL_GENERATIONS} generations answered 202 (e.g. {:?}), {} of {} roots (e.g. {:?})\n{}",
        missing_gens.len(),
        missing_gens.iter().take(5).map(|g| &g.id).collect::<Vec<_>>(),
        missing_roots.len(),
        traces.len(),
        missing_roots.iter().take(5).map(|t| &t.raw).collect::<Vec<_>>(),
        tail(&gencol.stderr(), 40)
    );

    // One root per trace: every span named after a trace's trace_name carries the SPEC §3
    // root id, and every generation span hangs under it.
    let by_trace: HashMap<&str, &Trace> = traces.iter().map(|t| (t.hex.as_str(), t)).collect();
    let mut foreign_roots = Vec::new();
    for (id, copies) in &tally.by_id {
        for c in copies {
            let Some(trace) = by_trace.get(c.trace_id.as_str()) else {
                panic!("span {id} in an unknown trace {}", c.trace_id);
            };
            if c.name == trace.name && *id != trace.root {
                foreign_roots.push(format!("{} has a second root {id}", trace.raw));
            }
        }
    }
    assert!(foreign_roots.is_empty(), "more than one root id: {:?}", &foreign_roots[..foreign_roots.len().min(5)]);
    for trace in traces.iter() {
        for g in &trace.gens {
            for c in &tally.by_id[&g.span] {
                assert_eq!(c.parent.as_deref(), Some(trace.root.as_str()), "{} hangs under its trace's root", g.id);
                assert_eq!((c.start, c.end), (g.start, g.end), "{} keeps its times", g.id);
            }
        }
    }

    // Root ranges. Every generation got a 202, so the range a root must span is
    // [earliest start, latest end] of all of its trace's generations. What is asserted:
    //  - every delivered copy of every root lies inside that range (a root never covers
    //    time none of its generations had);
    //  - for a trace whose generations reached gencol close together (each at most
    //    WINDOW_SAFE_MS after the one before, by the bound `widest_gap_ms`; the group
    //    window is 1 s), its window was open from the first generation to the last,
    //    whether or not a kill and a restart came in between; so every delivered copy of
    //    its root spans exactly that range (SPEC §7: "spanning the earliest start to the
    //    latest end of all its generations accepted before and after the crash");
    //  - a trace with a longer gap (a restart, or a slow answer, between two of its
    //    generations) may legitimately have had its window close in the gap and its root
    //    sent before the later generations came (SPEC §3: those attach without a new root).
    //    Such roots are counted and printed with their gaps, not failed.
    let mut wider = Vec::new();
    let mut inexact = Vec::new();
    let (mut straddled, mut straddled_checked, mut loose, mut loose_narrower) = (0, 0, 0, Vec::new());
    for (t, trace) in traces.iter().enumerate() {
        let range = (trace.earliest_start(), trace.latest_end());
        let gap = progress.widest_gap_ms(t);
        let strict = gap <= WINDOW_SAFE_MS;
        if progress.first_run[t].load(Ordering::SeqCst) != progress.last_run[t].load(Ordering::SeqCst) {
            straddled += 1;
            straddled_checked += usize::from(strict);
        }
        loose += usize::from(!strict);
        let mut narrower = None;
        for c in &tally.by_id[&trace.root] {
            assert_eq!(c.parent, None, "{}: the root has no parent", trace.raw);
            if c.start < range.0 || c.end > range.1 {
                wider.push(format!("{}: root {}..{} outside {}..{}", trace.raw, c.start, c.end, range.0, range.1));
            } else if (c.start, c.end) != range {
                narrower = Some(format!(
                    "{} ({} generations, widest gap {gap} ms): root {}..{} but generations span {}..{}",
                    trace.raw,
                    trace.gens.len(),
                    c.start,
                    c.end,
                    range.0,
                    range.1
                ));
            }
        }
        match narrower {
            Some(n) if strict => inexact.push(n),
            Some(n) => loose_narrower.push(n),
            None => {}
        }
    }
    eprintln!(
        "kill loop: {} unique spans, {} copies, {} repeats; {straddled} traces straddled a kill ({straddled_checked} of them with gaps short enough for the exact-range check); {loose} traces had a gap over {WINDOW_SAFE_MS} ms, {} of them have a root copy narrower than their generations: {:#?}",
        tally.unique(),
        tally.copies,
        tally.duplicates(),
        loose_narrower.len(),
        &loose_narrower[..loose_narrower.len().min(10)]
    );
    assert!(wider.is_empty(), "roots wider than their generations: {:?}", &wider[..wider.len().min(5)]);
    assert!(
        inexact.is_empty(),
        "{} traces whose generations came within {WINDOW_SAFE_MS} ms of each other have a root copy not spanning them all, e.g. {:#?}",
        inexact.len(),
        &inexact[..inexact.len().min(5)]
    );
    assert!(gencol.is_running(), "gencol runs:\n{}", tail(&gencol.stderr(), 30));
    assert!(!gencol.stderr().contains("panicked"), "a panic:\n{}", gencol.stderr());
}

// ---------------------------------------------------------------------------------------
// 3. A long outage: the backlog lives on disk
// ---------------------------------------------------------------------------------------

/// How long the destination is down while generations keep coming.
const OUTAGE: Duration = Duration::from_secs(60);
const OUTAGE_RATE: u64 = 200;
/// Prompt size of each generation: 12,000 of them make a backlog (~280 MiB on disk) larger
/// than the memory bound below, so staying under it shows the backlog is not held in memory.
/// A busy machine that takes only 55% of the rate still passes the bound.
const OUTAGE_CONTENT_BYTES: usize = 12 * 1024;
/// Peak resident memory (VmHWM) allowed to gencol, debug build, over the outage and the
/// replay. Measured (debug build, 2 cores): 28 MiB during the outage, 94–106 MiB at the
/// peak of the replay (four 4 MiB batches in flight and their encodings); 150 MiB leaves
/// room for a busier machine and stays below the ~280 MiB backlog.
const OUTAGE_RSS_BOUND_MIB: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_backlog_lives_on_disk() {
    let mut sink = PortSink::down_on_free_port(SinkOptions::default());
    // The default bound (1 GiB): the whole outage fits.
    let queue = "{kind: disk, dir: {DIR}/queues/sink, sync: always, when_full: block}";
    let exporter = otlp_exporter("sink", &sink.url(), queue);
    let mut gencol = Gencol::start(&config(&[exporter], &["sink"], "namespace", "1s"));
    let queue_dir = gencol.dir.path().join("queues/sink");
    let url = gencol.generations_url();
    let stats = Arc::new(SendStats::default());
    let outage_ends = Instant::now() + OUTAGE;
    // Eight senders, each a steady OUTAGE_RATE / 8 a second: each waits for its answer
    // (fsynced), so eight keep the rate up even when a busy machine makes fsyncs slow.
    const SENDERS: u64 = 8;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (url, stats) = (url.clone(), stats.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut pace = tokio::time::interval(Duration::from_secs_f64(SENDERS as f64 / OUTAGE_RATE as f64));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut ids = Vec::new();
                let mut n = s;
                while Instant::now() < outage_ends {
                    pace.tick().await;
                    let id = format!("outage-{n:06}");
                    let body = plain_record(&id, n, OUTAGE_CONTENT_BYTES);
                    send_until_accepted(&client, &url, &body, outage_ends + Duration::from_secs(30), &stats).await?;
                    ids.push(gen_span_id(&id));
                    n += SENDERS;
                }
                Ok::<Vec<String>, String>(ids)
            })
        })
        .collect();
    let mut peak_rss_kib = 0;
    while Instant::now() < outage_ends {
        peak_rss_kib = peak_rss_kib.max(gencol.proc_status_kib("VmRSS").unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut want = Vec::new();
    for s in senders {
        want.extend(s.await.expect("sender task").unwrap_or_else(|e| panic!("{e}\n{}", tail(&gencol.stderr(), 30))));
    }
    let backlog = segment_bytes(&queue_dir);
    let outage_rss_kib = peak_rss_kib;
    eprintln!(
        "outage: {} generations accepted in {OUTAGE:?} ({} refusals); {} MiB on disk; peak VmRSS {} MiB",
        want.len(),
        stats.refusals.load(Ordering::Relaxed),
        backlog >> 20,
        peak_rss_kib >> 10
    );
    // How many got through depends on how busy the machine is (a speed, not a behaviour, so
    // not asserted); what makes the test mean something is that the backlog outgrew the bound.
    assert!(!want.is_empty(), "nothing was accepted during the outage");
    assert!(
        backlog > OUTAGE_RSS_BOUND_MIB << 20,
        "the backlog on disk ({backlog} bytes) must exceed the memory bound for the bound to mean anything"
    );

    sink.up().await;
    let replay_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let missing = loop {
        peak_rss_kib = peak_rss_kib.max(gencol.proc_status_kib("VmRSS").unwrap_or(0));
        let missing = sink.wait_for_ids(&want, Duration::ZERO).await;
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let hwm_kib = gencol.proc_status_kib("VmHWM").expect("gencol runs");
    eprintln!(
        "outage: replayed in {:?}; VmRSS peak {} MiB during the outage, {} MiB overall; VmHWM {} MiB (bound {OUTAGE_RSS_BOUND_MIB} MiB); {} repeats",
        replay_started.elapsed(),
        outage_rss_kib >> 10,
        peak_rss_kib >> 10,
        hwm_kib >> 10,
        sink.tally.duplicates()
    );
    assert!(
        missing.is_empty(),
        "{} of {} generations accepted during the outage never arrived (e.g. {:?})\n{}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(3)],
        tail(&gencol.stderr(), 30)
    );
    assert!(
        hwm_kib <= OUTAGE_RSS_BOUND_MIB << 10,
        "gencol's peak RSS {} MiB is over {OUTAGE_RSS_BOUND_MIB} MiB with a {} MiB backlog",
        hwm_kib >> 10,
        backlog >> 20
    );
    assert!(gencol.is_running(), "{}", tail(&gencol.stderr(), 30));
}

// ---------------------------------------------------------------------------------------
// 4. Fan-out with a dead destination, and a SIGKILL
// ---------------------------------------------------------------------------------------

const FAN_OUT_GENERATIONS: usize = 2_000;

/// With every exporter on a disk queue fsynced before the 202, the `hierarchy` journal is
/// not fsynced before each 202: its entries since its last fsync are given back by the
/// queue. A power loss is played by cutting the journal back to what its start fsynced (more
/// than a real power loss can take: it also fsyncs on a timer) after a SIGKILL, with the
/// destination down so that the queue still holds every record: after the restart each
/// trace gets one root from its earliest start to its latest end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_that_takes_the_journal_tail_loses_no_root() {
    let mut sink = PortSink::down_on_free_port(SinkOptions::default());
    let exporter = otlp_exporter("sink", &sink.url(), &disk_queue("{DIR}/queues/sink"));
    let mut gencol = Gencol::start(&config(&[exporter], &["sink"], "hierarchy, namespace", "3s"));
    let journal = gencol.dir.path().join("data/state/traces/hierarchy/journal");
    let fsynced_at_start = std::fs::metadata(&journal).map(|m| m.len()).expect("the journal is written at start");
    let t0 = T0_NS + 9 * 3600 * SECOND_NS;
    // Two traces; (start, end) in seconds after t0, not in sending order.
    let traces =
        [("power-loss-a", "Trace A", vec![(4, 6), (1, 9), (2, 3)]), ("power-loss-b", "Trace B", vec![(5, 7), (3, 12)])];
    let mut want = Vec::new();
    for (raw, name, times) in &traces {
        for (j, (start, end)) in times.iter().enumerate() {
            let id = format!("{raw}-{j}");
            let body = record(&id, Some((raw, name)), t0 + start * SECOND_NS, t0 + end * SECOND_NS, "power loss");
            let (status, answer) = post_json(&gencol.generations_url(), &body).await;
            assert_eq!(status, 202, "{answer}");
            want.push(gen_span_id(&id));
        }
    }
    gencol.kill();
    let written = std::fs::metadata(&journal).expect("journal").len();
    assert!(written > fsynced_at_start, "the journal was written after its start ({written} bytes)");
    std::fs::OpenOptions::new().write(true).open(&journal).and_then(|f| f.set_len(fsynced_at_start)).expect("cut");

    tokio::task::block_in_place(|| gencol.restart());
    sink.up().await;
    let roots: Vec<(String, &str, u64, u64)> = traces
        .iter()
        .map(|(raw, name, times)| {
            let start = times.iter().map(|t| t.0).min().expect("times");
            let end = times.iter().map(|t| t.1).max().expect("times");
            (root_span_id(&sha_hex(raw, 16), name), *name, t0 + start * SECOND_NS, t0 + end * SECOND_NS)
        })
        .collect();
    want.extend(roots.iter().map(|r| r.0.clone()));
    sink.assert_all_arrive(&want, Duration::from_secs(30), "generations and roots after the power loss", &gencol).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sink.absorb().await;
    for (root, name, start, end) in &roots {
        for copy in &sink.tally.by_id[root] {
            assert_eq!((copy.start, copy.end), (*start, *end), "{name}: the root spans every generation");
        }
    }
    let names: HashSet<&str> = roots.iter().map(|r| r.1).collect();
    let root_ids: HashSet<&String> = sink
        .tally
        .by_id
        .iter()
        .filter(|(_, copies)| copies.iter().any(|c| names.contains(c.name.as_str())))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(root_ids.len(), roots.len(), "one root id a trace: {root_ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_dead_destination_gets_everything_after_sigkill() {
    // The live destination is slow, so data is still on its way to it when gencol dies.
    let mut live = PortSink::start(SinkOptions::default().fallback(Answer::delay(Duration::from_secs(1)))).await;
    let mut dead = PortSink::down_on_free_port(SinkOptions::default());
    let exporters = [
        otlp_exporter("live", &live.url(), &disk_queue("{DIR}/queues/live")),
        otlp_exporter("dead", &dead.url(), &disk_queue("{DIR}/queues/dead")),
    ];
    let mut gencol = Gencol::start(&config(&exporters, &["live", "dead"], "namespace", "1s"));
    let url = gencol.generations_url();
    let stats = Arc::new(SendStats::default());
    let give_up = Instant::now() + Duration::from_secs(60);
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (url, stats, next) = (url.clone(), stats.clone(), next.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= FAN_OUT_GENERATIONS {
                        return Ok::<(), String>(());
                    }
                    let body = plain_record(&format!("fan-{n:05}"), n as u64, 512);
                    send_until_accepted(&client, &url, &body, give_up, &stats).await?;
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender").unwrap_or_else(|e| panic!("{e}\n{}", tail(&gencol.stderr(), 30)));
    }
    let want: Vec<String> = (0..FAN_OUT_GENERATIONS).map(|n| gen_span_id(&format!("fan-{n:05}"))).collect();
    live.absorb().await;
    let missing_live = want.iter().filter(|id| !live.tally.has(id)).count();
    assert!(missing_live > 0, "the kill must land while the live destination still lacks data");
    gencol.kill();
    let dead_backlog = segment_bytes(&gencol.dir.path().join("queues/dead"));
    eprintln!(
        "fan-out: SIGKILL with {missing_live} spans not yet at the live sink, {dead_backlog} bytes queued for the dead one"
    );
    assert!(dead_backlog > 0, "the dead destination's records are on disk");
    tokio::task::block_in_place(|| gencol.restart());

    live.assert_all_arrive(&want, Duration::from_secs(60), "live destination, after the restart", &gencol).await;
    dead.up().await;
    dead.assert_all_arrive(&want, Duration::from_secs(60), "dead destination, once up", &gencol).await;
    eprintln!("fan-out: repeats live {}, dead {}", live.tally.duplicates(), dead.tally.duplicates());
}

// ---------------------------------------------------------------------------------------
// 5. Retry-After, end to end
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_end_to_end() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    sink.sink().script([Answer::status(429).retry_after(3)]);
    // Own backoff 100 ms, capped at 1 s: only the destination's Retry-After makes it wait 3 s.
    let exporter = otlp_exporter("sink", &sink.url(), &disk_queue("{DIR}/queues/sink"));
    let gencol = Gencol::start(&config(&[exporter], &["sink"], "namespace", "1s"));
    let (status, body) = post_json(&gencol.generations_url(), &generation("retry-after-1")).await;
    assert_eq!(status, 202, "{body}");
    let requests = sink.sink().wait_for_requests(2, Duration::from_secs(20)).await;
    assert!(requests.len() >= 2, "a retry came: {} requests\n{}", requests.len(), tail(&gencol.stderr(), 20));
    assert_eq!(requests[0].status(), Some(429));
    let waited = requests[1].received_at - requests[0].received_at;
    eprintln!("retry-after: the retry came {waited:?} after the 429");
    assert!(waited >= Duration::from_secs(3), "Retry-After: 3 honoured in full, but the retry came after {waited:?}");
    assert!(waited < Duration::from_secs(6), "and not much later: {waited:?}");
    let missing = sink.wait_for_ids(&[gen_span_id("retry-after-1")], Duration::from_secs(10)).await;
    assert!(missing.is_empty(), "delivered after the wait");
}

// ---------------------------------------------------------------------------------------
// 6. Damaged queue files
// ---------------------------------------------------------------------------------------

/// Enough generations of CORRUPT_CONTENT_BYTES to fill more than one 8 MiB segment.
const CORRUPT_GENERATIONS: u64 = 400;
const CORRUPT_CONTENT_BYTES: usize = 24 * 1024;

/// Ids of this test, all `cq-` and five digits: found in a record's bytes by that prefix.
fn corrupt_id(n: u64) -> String {
    format!("cq-{n:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_skipped_and_intact_records_delivered() {
    // The destination is down: every record stays on disk.
    let mut sink = PortSink::down_on_free_port(SinkOptions::default());
    let exporter = otlp_exporter("sink", &sink.url(), &disk_queue("{DIR}/queues/sink"));
    let mut gencol = Gencol::start(&config(&[exporter], &["sink"], "namespace", "1s"));
    let queue_dir = gencol.dir.path().join("queues/sink");
    let client = reqwest::Client::new();
    for n in 0..CORRUPT_GENERATIONS {
        let body = plain_record(&corrupt_id(n), n, CORRUPT_CONTENT_BYTES);
        let (status, answer, _) =
            try_post_with(&client, &gencol.generations_url(), "application/json", body).await.expect("gencol answers");
        assert_eq!(status, 202, "{answer}");
    }
    assert!(gencol.stop(), "SIGTERM with the destination down still exits 0:\n{}", tail(&gencol.stderr(), 20));

    // Which generations each record holds, read from the files as the contract lays them out.
    let files = segment_files(&queue_dir);
    assert!(!files.is_empty(), "no segment in {}", queue_dir.display());
    let mut records: Vec<(SegmentRecord, HashSet<String>)> = Vec::new();
    let mut contents = HashMap::new();
    for f in &files {
        let (bytes, found) = read_segment(f);
        for r in found {
            let ids = ids_in(&bytes[r.payload.clone()], b"cq-", 8);
            records.push((r, ids));
        }
        contents.insert(f.clone(), bytes);
    }
    let on_disk: HashSet<&String> = records.iter().flat_map(|(_, ids)| ids).collect();
    assert_eq!(
        on_disk.len() as u64,
        CORRUPT_GENERATIONS,
        "every generation answered 202 is in a record on disk ({} segments, {} records)",
        files.len(),
        records.len()
    );
    eprintln!("corruption: {} records in {} segments before the damage", records.len(), files.len());
    assert!(records.len() >= 4, "enough records to damage some and keep others");

    // Damage: three bytes flipped in the payload of a record in the middle of the first
    // segment, the last segment cut in the middle of its last record, a segment-named file
    // of garbage and a foreign file.
    let first = &files[0];
    let last = files.last().expect("a segment");
    let in_first: Vec<usize> = (0..records.len()).filter(|&i| records[i].0.file == *first).collect();
    let flipped = in_first[in_first.len() / 2];
    let torn = records.len() - 1;
    assert_ne!(flipped, torn, "two different records damaged");
    {
        let r = &records[flipped].0;
        let mut bytes = contents[first].clone();
        let mid = (r.payload.start + r.payload.end) / 2;
        for b in &mut bytes[mid..mid + 3] {
            *b ^= 0x5A;
        }
        std::fs::write(first, &bytes).expect("flip bytes");
    }
    {
        let r = &records[torn].0;
        let cut = (r.payload.start + r.payload.end) / 2;
        std::fs::OpenOptions::new().write(true).open(last).and_then(|f| f.set_len(cut as u64)).expect("truncate");
    }
    let last_seq = records[torn].0.seq;
    let garbage = queue_dir.join(format!("{:020}.seg", last_seq + 1000));
    std::fs::write(&garbage, filler(7, 4096)).expect("garbage segment");
    let foreign = queue_dir.join("notes.txt");
    std::fs::write(&foreign, "not a queue file\n").expect("foreign file");

    let damaged: HashSet<&String> = [flipped, torn].iter().flat_map(|&i| &records[i].1).collect();
    let intact: HashSet<&String> =
        (0..records.len()).filter(|&i| i != flipped && i != torn).flat_map(|i| &records[i].1).collect();
    let lost: Vec<&&String> = damaged.iter().filter(|id| !intact.contains(*id)).collect();
    eprintln!(
        "corruption: flipped record seq {} in {}, tore record seq {} in {}; {} generations only in damaged records",
        records[flipped].0.seq,
        first.display(),
        last_seq,
        last.display(),
        lost.len()
    );

    let (ok, out, err) = queue_inspect(&queue_dir);
    eprintln!("queue inspect:\n{out}{err}");
    assert!(ok, "gencol queue inspect on a damaged queue exits 0:\n{out}{err}");
    assert_eq!(inspect_number(&out, "records"), records.len() as u64 - 2, "intact records:\n{out}");
    assert!(inspect_number(&out, "corrupt records skipped") >= 1, "the flipped record counts as corrupt:\n{out}");
    assert!(inspect_number(&out, "bytes") > 0, "{out}");

    sink.up().await;
    tokio::task::block_in_place(|| gencol.restart());
    let want: Vec<String> = intact.iter().map(|id| gen_span_id(id)).collect();
    sink.assert_all_arrive(&want, Duration::from_secs(60), "generations in intact records", &gencol).await;
    // The neighbours of the flipped record, named for a readable failure.
    for i in [flipped - 1, flipped + 1] {
        if i != torn {
            for id in &records[i].1 {
                assert!(sink.tally.has(&gen_span_id(id)), "{id}, next to the damage, was delivered");
            }
        }
    }
    assert!(gencol.is_running(), "gencol survives damaged queue files:\n{}", tail(&gencol.stderr(), 40));
    let arrived_lost = lost.iter().filter(|id| sink.tally.has(&gen_span_id(id))).count();
    eprintln!(
        "corruption: {} of {CORRUPT_GENERATIONS} delivered, {} lost to the damage ({} of those arrived anyway)",
        sink.tally.unique(),
        lost.len() - arrived_lost,
        arrived_lost
    );

    // An error log names each damaged file.
    let log = gencol.stderr();
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).expect("file name").to_owned();
    for file in [first, last, &garbage, &foreign] {
        let file = name(file);
        assert!(
            log.lines().any(|l| l.contains("ERROR") && l.contains(&file)),
            "no error log names {file}:\n{}",
            tail(&log, 40)
        );
    }

    // Intake goes on after the damage.
    let fresh: Vec<String> = (90_000..90_005).map(corrupt_id).collect();
    for (i, id) in fresh.iter().enumerate() {
        let body = plain_record(id, 90_000 + i as u64, 64);
        let (status, answer, _) =
            try_post_with(&client, &gencol.generations_url(), "application/json", body).await.expect("gencol answers");
        assert_eq!(status, 202, "{answer}");
    }
    let fresh: Vec<String> = fresh.iter().map(|id| gen_span_id(id)).collect();
    let missing = sink.wait_for_ids(&fresh, Duration::from_secs(20)).await;
    assert!(missing.is_empty(), "records written after the restart are delivered\n{}", tail(&gencol.stderr(), 20));
    assert!(!gencol.stderr().contains("panicked"), "{}", gencol.stderr());
}

// ---------------------------------------------------------------------------------------
// 7. A full disk
// ---------------------------------------------------------------------------------------

/// `name (bytes)` of every file in `dir`, for failure messages.
fn listing(dir: &Path) -> String {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| format!("{} ({} bytes)", e.file_name().to_string_lossy(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.join(", ")
}

/// A tmpfs mounted on a fresh directory, unmounted on drop (lazily if still busy).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { dir },
            Ok(o) => panic!(
                "this test needs root to mount a {size} tmpfs (mount -t tmpfs) at {}: {}",
                dir.path().display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs root and `mount` to mount a tmpfs: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |args: &[&str]| {
            std::process::Command::new("umount").args(args).arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(&[]) {
            umount(&["-l"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_503_and_resumes() {
    // Declared first so it is unmounted after gencol (declared later) is killed.
    let tmpfs = Tmpfs::mount("2m");
    let mut sink = PortSink::down_on_free_port(SinkOptions::default());
    // max_bytes far above the filesystem's size: it is the disk that fills, not the bound.
    let queue =
        format!("{{kind: disk, dir: {}, max_bytes: 64MiB, sync: always, when_full: block}}", tmpfs.path().display());
    let gencol = Gencol::start(&config(&[otlp_exporter("sink", &sink.url(), &queue)], &["sink"], "namespace", "1s"));
    let url = gencol.generations_url();
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut n = 0u64;
    let post = |n: u64| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let id = format!("full-{n:05}");
            let sent = Instant::now();
            let answer = try_post_with(&client, &url, "application/json", plain_record(&id, n, 4096)).await;
            (id, sent.elapsed(), answer.expect("gencol answers"))
        }
    };
    // Fill the disk.
    let first_refusal = loop {
        assert!(n < 2_000, "2,000 generations of 4 KiB into a 2 MiB disk and never a 503");
        let (id, took, (status, body, headers)) = post(n).await;
        n += 1;
        match status {
            202 => accepted.push(id),
            503 => break (took, headers, body),
            other => panic!("{other} {body} while the disk filled\n{}", tail(&gencol.stderr(), 20)),
        }
    };
    let (took, headers, body) = first_refusal;
    eprintln!("disk full: 503 after {} accepted, answered in {took:?}: {body}", accepted.len());
    assert!(headers.get("retry-after").is_some(), "503 with Retry-After");
    assert!(took < Duration::from_secs(2), "a full disk is answered at once, not after {took:?}");
    for _ in 0..5 {
        let (_, _, (status, body, headers)) = post(n).await;
        n += 1;
        assert_eq!(status, 503, "still full: {body}");
        assert!(headers.get("retry-after").is_some());
    }

    // The destination comes back: delivered records are deleted and intake resumes by
    // itself, without a restart.
    sink.up().await;
    let resumed_by = Instant::now() + Duration::from_secs(30);
    loop {
        let (id, _, (status, body, _)) = post(n).await;
        n += 1;
        match status {
            202 => {
                accepted.push(id);
                break;
            }
            503 => assert!(
                Instant::now() < resumed_by,
                "intake did not resume within 30 s of the destination coming back; sink holds {} unique; the disk holds {}\n{}",
                sink.tally.unique(),
                listing(tmpfs.path()),
                tail(&gencol.stderr(), 30)
            ),
            other => panic!("{other} {body}"),
        }
        sink.absorb().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = SendStats::default();
    for _ in 0..50 {
        let id = format!("full-{n:05}");
        send_until_accepted(
            &client,
            &url,
            &plain_record(&id, n, 4096),
            Instant::now() + Duration::from_secs(30),
            &stats,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&gencol.stderr(), 20)));
        accepted.push(id);
        n += 1;
    }
    let want: Vec<String> = accepted.iter().map(|id| gen_span_id(id)).collect();
    sink.assert_all_arrive(&want, Duration::from_secs(60), "generations answered 202 around a full disk", &gencol)
        .await;
    assert!(!gencol.stderr().contains("panicked"), "{}", gencol.stderr());
}

// ---------------------------------------------------------------------------------------
// 8. `gencol queue inspect`
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_inspect_reports_records_bytes_and_age() {
    let sink = PortSink::down_on_free_port(SinkOptions::default());
    // No `dir`: the queue goes to <data_dir>/queues/<exporter id>.
    let queue = "{kind: disk, sync: always}";
    let mut gencol = Gencol::start(&config(&[otlp_exporter("sink", &sink.url(), queue)], &["sink"], "namespace", "1s"));
    for n in 0..10 {
        let (status, body) = post_json(&gencol.generations_url(), &generation(&format!("inspect-{n}"))).await;
        assert_eq!(status, 202, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(gencol.stop(), "{}", tail(&gencol.stderr(), 20));
    let queues = gencol.dir.path().join("data/queues");
    let queue_dir = queues.join("otlp/sink");
    let files = segment_files(&queue_dir);
    assert!(!files.is_empty(), "the default queue directory is <data_dir>/queues/otlp/sink: {}", queue_dir.display());
    let records: usize = files.iter().map(|f| read_segment(f).1.len()).sum();

    let (ok, out, err) = queue_inspect(&queues);
    eprintln!("queue inspect:\n{out}{err}");
    assert!(ok, "{out}{err}");
    assert!(out.contains(&queue_dir.display().to_string()), "names the queue directory:\n{out}");
    assert_eq!(inspect_number(&out, "records"), records as u64, "records on disk:\n{out}");
    assert!((1..=10).contains(&records), "10 generations made {records} records");
    assert_eq!(inspect_number(&out, "bytes"), segment_bytes(&queue_dir), "bytes of the segment files:\n{out}");
    assert_eq!(inspect_number(&out, "corrupt records skipped"), 0, "{out}");
    let age = inspect_field(&out, "oldest record age").unwrap_or_else(|| panic!("no oldest record age:\n{out}"));
    let age = human_seconds(&age).unwrap_or_else(|| panic!("oldest record age `{age}` is not a duration"));
    assert!((2.0..120.0).contains(&age), "the oldest record was written ~2.5 s ago, inspect says {age} s");

    let empty = tempfile::tempdir().expect("temp dir");
    let (ok, out, err) = queue_inspect(empty.path());
    assert!(!ok, "a directory without a queue is an error: {out}{err}");
    assert!(!err.trim().is_empty(), "and says why");
}

// ---------------------------------------------------------------------------------------
// 9. SIGTERM with open traces
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_open_roots_on_disk_for_the_next_start() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let exporter = otlp_exporter("sink", &sink.url(), &disk_queue("{DIR}/queues/sink"));
    // A window long enough to still be open at the SIGTERM and across the restart.
    let mut gencol = Gencol::start(&config(&[exporter], &["sink"], "hierarchy, namespace", "5s"));
    let (raw, name) = ("sigterm-open-trace", "Open At Shutdown");
    let hex = sha_hex(raw, 16);
    let root = root_span_id(&hex, name);
    let t0 = T0_NS + 7 * 3600 * SECOND_NS;
    // (start, end) of four generations: the earliest start is the second's, the latest end
    // the fourth's, which is sent after the restart.
    let times = [(2, 10), (0, 11), (3, 12), (1, 15)].map(|(s, e)| (t0 + s * SECOND_NS, t0 + e * SECOND_NS));
    let ids: Vec<String> = (0..4).map(|j| format!("sigterm-open-{j}")).collect();
    for j in 0..3 {
        let body = record(&ids[j], Some((raw, name)), times[j].0, times[j].1, "before the SIGTERM");
        let (status, answer) = post_json(&gencol.generations_url(), &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let first_three: Vec<String> = ids[..3].iter().map(|id| gen_span_id(id)).collect();
    let missing = sink.wait_for_ids(&first_three, Duration::from_secs(10)).await;
    assert!(missing.is_empty(), "generation spans go out at once: {missing:?}");
    assert!(tokio::task::block_in_place(|| gencol.stop()), "clean exit:\n{}", tail(&gencol.stderr(), 20));
    sink.absorb().await;
    assert!(!sink.tally.has(&root), "the open trace's root stays on disk at a SIGTERM, not sent early");

    tokio::task::block_in_place(|| gencol.restart());
    let body = record(&ids[3], Some((raw, name)), times[3].0, times[3].1, "after the restart");
    let (status, answer) = post_json(&gencol.generations_url(), &body).await;
    assert_eq!(status, 202, "{answer}");
    let missing = sink.wait_for_ids(&[root.clone(), gen_span_id(&ids[3])], Duration::from_secs(20)).await;
    assert!(
        missing.is_empty(),
        "the root is released after the next start: missing {missing:?}\n{}",
        tail(&gencol.stderr(), 20)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    sink.absorb().await;
    let earliest = times.iter().map(|t| t.0).min().expect("times");
    let latest = times.iter().map(|t| t.1).max().expect("times");
    for c in &sink.tally.by_id[&root] {
        assert_eq!((c.start, c.end), (earliest, latest), "the root spans all four generations, before and after");
    }
    let roots: HashSet<&String> =
        sink.tally.by_id.iter().filter(|(_, copies)| copies.iter().any(|c| c.name == name)).map(|(id, _)| id).collect();
    assert_eq!(roots, HashSet::from([&root]), "one root id");
}
