//! Hostile and broken senders against the real binary (issue 16): thousands of idle
//! connections under a low open files limit, bodies of millions of empty spans or records, spans whose ids destinations refuse, and transfer codings
//! gencol does not read. Each case asserts what gencol does (closes, refuses, answers,
//! delivers, stays within its memory formula), never how fast; waits are bounded by
//! generous timeouts. Cases that share nothing run as parallel tasks.
//!
//! Uploads that stall are in `stalled_uploads.rs`, a process of their own. The decoders
//! themselves are fuzzed in `crates/gencol-model/tests/decoders_fuzz.rs`.

mod common;

use std::time::Duration;

use common::hostile::{PATIENCE, config, post_until_accepted, raise_open_files_limit};
use common::*;
use gencol_testkit::OtlpSink;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// POSTs a body; returns the status and the answer's bytes.
async fn post_raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let sent = reqwest::Client::new().post(url).header("content-type", content_type).body(body).send();
    let resp = tokio::time::timeout(PATIENCE, sent).await.expect("an answer").expect("request reaches gencol");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("answer body").to_vec())
}

fn spans_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn good_span(request: u32, n: u32) -> Span {
    let mut trace_id = vec![0xaa; 16];
    trace_id[..4].copy_from_slice(&request.to_be_bytes());
    let mut span_id = vec![0xbb; 8];
    span_id[..4].copy_from_slice(&(request * 1000 + n).to_be_bytes());
    Span {
        trace_id,
        span_id,
        parent_span_id: vec![0xcc; 8],
        name: format!("chat {request}/{n}"),
        start_time_unix_nano: 1_764_000_000_000_000_000,
        end_time_unix_nano: 1_764_000_001_000_000_000,
        ..Default::default()
    }
}

/// Under an open files limit of 256, 2,000 connections that never send a request, then
/// connections opened and dropped as fast as a few tasks can: the connection limit
/// (derived from the open files limit) keeps gencol clear of "Too many open files", it
/// closes idle connections to make room, and every normal request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_churn_under_a_low_open_files_limit() {
    const IDLE: usize = 2_000;
    let limit = raise_open_files_limit(IDLE as u64 + 1024);
    let idle = IDLE.min(usize::try_from(limit).unwrap_or(IDLE).saturating_sub(512));
    let sink = OtlpSink::start().await.expect("sink");
    let gencol = Gencol::start_under(&["prlimit", "--nofile=256:256"], &config(&sink.url(), "", ""));
    let url = gencol.generations_url();
    assert_eq!(post_until_accepted(&url, "before").await, 1);

    let port = gencol.generations_port;
    let mut held = Vec::with_capacity(idle);
    for batch in 0..idle.div_ceil(100) {
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..100.min(idle - batch * 100) {
            connects.spawn(TcpStream::connect(("127.0.0.1", port)));
        }
        while let Some(stream) = connects.join_next().await {
            held.push(stream.expect("connect task").expect("connect (the kernel queues it)"));
        }
    }
    let mut attempts = vec![post_until_accepted(&url, "after-idle").await];

    // Churn: connections opened, given half a request line, and dropped.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let churners: Vec<_> = (0..8)
        .map(|_| {
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let mut opened = 0usize;
                while !*stopped.borrow() {
                    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = s.write_all(b"POST /v1/gen").await;
                        opened += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                opened
            })
        })
        .collect();
    for n in 0..20 {
        attempts.push(post_until_accepted(&url, &format!("churn-{n}")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop churning");
    let mut churned = 0;
    for c in churners {
        churned += c.await.expect("churner");
    }
    // gencol closed the idle connections for newer ones: only about max_connections
    // (64 under this limit) can still be open.
    let mut buf = [0u8; 16];
    let still_open = held.iter().filter(|s| s.try_read(&mut buf).is_err()).count();
    assert!(still_open <= 128, "{still_open} of {idle} idle connections still open");
    drop(held);
    attempts.push(post_until_accepted(&url, "after").await);

    let stderr = gencol.stderr();
    eprintln!(
        "{idle} idle connections ({still_open} left open by gencol), {churned} churned; attempts per request: {attempts:?}"
    );
    assert!(!stderr.contains("Too many open files"), "the connection limit did not answer first:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let want: Vec<String> = ["before", "after-idle", "after"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..20).map(|n| format!("churn-{n}")))
        .collect();
    let got = sink.wait_for_spans(want.len(), PATIENCE).await;
    let ids: std::collections::BTreeSet<String> =
        got.iter().filter_map(|s| s.attr_str("gen_ai.response.id").map(str::to_owned)).collect();
    for id in &want {
        assert!(ids.contains(id), "{id} never reached the sink");
    }
}

/// The README's bound on one request's memory ("Limits and hostile senders"): the body
/// twice (its bytes and the text decoded out of them), what decoding makes, and the
/// decoder's 64 KiB of credit; `received` is the compressed size for a gzip body.
fn request_memory_bound(received: u64, decompressed: u64, decoding: u64) -> u64 {
    received.max(decompressed) + decompressed + decoding + 64 * 1024
}

/// What the README adds for gencol around its requests: the allocator's caches and the
/// thread a large body is decoded on.
const PROCESS_OVERHEAD: u64 = 16 * MIB;

/// What one span costs decoded (README: 1.2 KiB), as gencol pays it.
const SPAN_COST: u64 = gencol_model::budget::SPAN_COST as u64;

struct Bomb {
    name: &'static str,
    url: fn(&Gencol) -> String,
    content_type: &'static str,
    body: Vec<u8>,
    /// What decoding may make before the request is refused (README formula).
    decoding: u64,
    /// What the 413 says.
    refusal: &'static str,
}

/// 10 MiB bodies of empty spans (OTLP/JSON and protobuf) and of empty records, each
/// against its own gencol: refused at the span or record limit with a small answer, and
/// gencol's peak memory stays under the README's formula for one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_millions_of_empty_things_are_refused_within_the_memory_formula() {
    const TEN_MIB: usize = 10 * 1024 * 1024;
    // The defaults: max_spans_per_request 20,000, max_records_per_request 10,000.
    let max_spans = 20_000u64;
    let empty_spans_json = {
        let (head, tail) = (r#"{"resourceSpans":[{"scopeSpans":[{"spans":["#, "{}]}]}]}");
        let n = (TEN_MIB - head.len() - tail.len()) / 3;
        format!("{head}{}{tail}", "{},".repeat(n)).into_bytes()
    };
    let empty_spans_proto = {
        let n = (TEN_MIB - 16) / 2;
        let req = spans_request(vec![Span::default(); n]);
        req.encode_to_vec()
    };
    let empty_records = format!("[{}{{}}]", "{},".repeat((TEN_MIB - 4) / 3)).into_bytes();
    let bombs = vec![
        Bomb {
            name: "OTLP/JSON of empty spans",
            url: Gencol::otlp_url,
            content_type: "application/json",
            body: empty_spans_json,
            decoding: (max_spans + 1) * SPAN_COST + 4096,
            refusal: "more than 20000 spans (max_spans_per_request)",
        },
        Bomb {
            name: "OTLP/protobuf of empty spans",
            url: Gencol::otlp_url,
            content_type: "application/x-protobuf",
            body: empty_spans_proto,
            decoding: 0, // refused by the walk before prost decodes anything
            refusal: "more than 20000 spans (max_spans_per_request)",
        },
        Bomb {
            name: "generations [{},{},...]",
            url: Gencol::generations_url,
            content_type: "application/json",
            body: empty_records,
            // One record's parse at a time, 100 listed errors.
            decoding: 8 * 1024 + 100 * 512,
            refusal: "more than 10000 records (max_records_per_request)",
        },
    ];
    let cases: Vec<_> = bombs
        .into_iter()
        .map(|bomb| {
            tokio::spawn(async move {
                assert!(bomb.body.len() <= TEN_MIB, "{}: {} bytes", bomb.name, bomb.body.len());
                let sink = OtlpSink::start().await.expect("sink");
                let gencol = Gencol::start(&config(&sink.url(), "", ""));
                // Warm: the first request's one-time allocations are not the bomb's.
                assert_eq!(post_until_accepted(&gencol.generations_url(), "warm-up").await, 1);
                let start_rss = gencol.proc_status_kib("VmRSS").expect("VmRSS") * 1024;
                let len = bomb.body.len() as u64;
                let (status, answer) = post_raw(&(bomb.url)(&gencol), bomb.content_type, bomb.body).await;
                let peak = gencol.proc_status_kib("VmHWM").expect("VmHWM") * 1024;
                let bound = start_rss + request_memory_bound(len, len, bomb.decoding) + PROCESS_OVERHEAD;
                eprintln!(
                    "{}: {status}, peak {:.1} MiB over a start of {:.1} MiB, bound {:.1} MiB",
                    bomb.name,
                    (peak - start_rss) as f64 / MIB as f64,
                    start_rss as f64 / MIB as f64,
                    (bound - start_rss) as f64 / MIB as f64
                );
                // The answer is in the request's encoding; its message is text either way.
                let text = String::from_utf8_lossy(&answer);
                assert_eq!(status, 413, "{}: {text}", bomb.name);
                assert!(answer.len() < 64 * 1024, "{}: an answer of {} bytes", bomb.name, answer.len());
                assert!(text.contains(bomb.refusal), "{}: {text}", bomb.name);
                assert!(peak <= bound, "{}: peak {} MiB over the formula's {} MiB", bomb.name, peak / MIB, bound / MIB);
                (gencol, sink)
            })
        })
        .collect();
    let mut running = Vec::new();
    for case in cases {
        running.push(case.await.expect("case"));
    }

    // Just under the limits: every span or record is decoded and rejected, and the answer
    // still lists at most 100 of them.
    let (otlp, _) = &running[0];
    let spans = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}{{}}]}}]}}]}}"#, "{},".repeat(19_999));
    let (status, answer, _) = post(&otlp.otlp_url(), "application/json", spans.into_bytes(), &[]).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().expect("message");
    assert!(message.starts_with("20000 of 20000 span(s) rejected and not forwarded"), "{message}");
    assert!(message.len() < 1024, "{message}");
    let (generations, _) = &running[2];
    let records = format!("[{}{{}}]", "{},".repeat(9_999)).into_bytes();
    let (status, answer, _) = post(&generations.generations_url(), "application/json", records, &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["rejected"].as_array().expect("rejected").len(), 100);
    assert_eq!(answer["rejected_total"], json!(10_000));
    assert!(answer.to_string().len() < 64 * 1024);
}

/// A span whose `parentSpanId` is 5 bytes, sent among good ones while other senders send
/// good spans: it alone is rejected (partial success saying why) and never forwarded,
/// and every good span of every request reaches the destination, which would refuse a
/// whole batch holding the bad one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_parent_span_id_is_rejected_alone_and_every_good_span_arrives() {
    const SENDERS: u32 = 8;
    const SPANS: u32 = 25;
    let sink = OtlpSink::start().await.expect("sink");
    let gencol = Gencol::start(&config(&sink.url(), "", ""));
    let url = gencol.otlp_url();

    let mut bad = good_span(0, 7);
    bad.parent_span_id = vec![1, 2, 3, 4, 5];
    let bad_id = hex::encode(&bad.span_id);
    let mut mixed: Vec<Span> = (0..SPANS).map(|n| good_span(0, n)).collect();
    mixed[7] = bad;
    let mut senders = tokio::task::JoinSet::new();
    for request in 1..=SENDERS {
        let url = url.clone();
        senders.spawn(async move {
            let body = spans_request((0..SPANS).map(|n| good_span(request, n)).collect()).encode_to_vec();
            let (status, answer) = post_raw(&url, "application/x-protobuf", body).await;
            assert_eq!(status, 200);
            let answer = ExportTraceServiceResponse::decode(answer.as_slice()).expect("an OTLP answer");
            assert_eq!(answer.partial_success, None, "request {request}: all good");
        });
    }
    let (status, answer) = post_raw(&url, "application/x-protobuf", spans_request(mixed).encode_to_vec()).await;
    assert_eq!(status, 200);
    let partial = ExportTraceServiceResponse::decode(answer.as_slice())
        .expect("an OTLP answer")
        .partial_success
        .expect("a partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("`parentSpanId`"), "{}", partial.error_message);
    assert!(partial.error_message.contains("`chat 0/7`: 5 bytes"), "{}", partial.error_message);
    while let Some(sent) = senders.join_next().await {
        sent.expect("sender");
    }

    let good = (SENDERS + 1) * SPANS - 1;
    let arrived = sink.wait_for_spans(good as usize, PATIENCE).await;
    let ids: std::collections::BTreeSet<String> = arrived.iter().map(|s| s.span_id_hex()).collect();
    assert_eq!(ids.len(), good as usize, "every good span, once");
    for request in 0..=SENDERS {
        for n in (0..SPANS).filter(|n| request > 0 || *n != 7) {
            assert!(ids.contains(&hex::encode(good_span(request, n).span_id)), "span {request}/{n} is missing");
        }
    }
    assert!(!ids.contains(&bad_id), "the bad span was forwarded");
    assert!(sink.requests().iter().all(|r| r.is_success()), "the destination refused a batch");
}

/// `Transfer-Encoding: gzip, chunked`: hyper reads the chunks but not the gzip, so the
/// body would be taken as plain; it is refused instead, with what to send.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let sink = OtlpSink::start().await.expect("sink");
    let gencol = Gencol::start(&config(&sink.url(), "", ""));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, generation("te-1").to_string().as_bytes()).expect("in memory");
    let gz = gz.finish().expect("in memory");
    let mut request = format!(
        "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n",
        gz.len()
    )
    .into_bytes();
    request.extend_from_slice(&gz);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", gencol.generations_port)).await.expect("connect");
    stream.write_all(&request).await.expect("send");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut answer)).await.expect("an answer").expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("unsupported Transfer-Encoding `gzip, chunked`"), "{answer}");
    assert!(answer.contains("Content-Encoding: gzip"), "{answer}");
    // The same record sent the supported way is accepted.
    assert_eq!(post_until_accepted(&gencol.generations_url(), "te-2").await, 1);
    let spans = sink.wait_for_spans(1, PATIENCE).await;
    assert_eq!(spans.iter().filter_map(|s| s.attr_str("gen_ai.response.id")).collect::<Vec<_>>(), ["te-2"]);
}
