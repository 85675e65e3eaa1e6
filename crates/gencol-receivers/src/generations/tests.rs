//! The `generations` receiver over real HTTP: every row of SPEC §2's answers table.

use std::net::SocketAddr;
use std::time::Duration;

use gencol_config::ByteSize;
use gencol_engine::{CancellationToken, PipelineMessage};
use gencol_model::attributes as attr;
use gencol_model::budget::MemoryBudget;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::GenerationsReceiverConfig;
use super::config::GenerationsSettings;
use crate::settings::AuthSettings;
use crate::test_support::{Client, drain, gzip, pipeline, post, raw_request, read_until_closed, until_closed};

const PATH: &str = "/v1/generations";
const JSON: (&str, &str) = ("content-type", "application/json");

struct Running {
    addr: SocketAddr,
    rx: mpsc::Receiver<PipelineMessage>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_with(settings: GenerationsSettings, capacity: usize) -> Running {
    start_with_memory(settings, capacity, MemoryBudget::new(256 << 20)).await
}

async fn start_with_memory(settings: GenerationsSettings, capacity: usize, memory: MemoryBudget) -> Running {
    let settings = GenerationsSettings { endpoint: "127.0.0.1:0".into(), ..settings };
    let config = GenerationsReceiverConfig::new(
        "generations/test".into(),
        settings.check(std::path::Path::new(".")).expect("valid settings"),
    );
    let (consumer, rx) = pipeline(capacity);
    let shutdown = CancellationToken::new();
    let (addr, task) = config.bind(consumer, memory, shutdown.clone()).await.expect("bind");
    Running { addr, rx, shutdown, task }
}

async fn start() -> Running {
    start_with(GenerationsSettings::default(), 16).await
}

fn record(id: &str) -> Value {
    json!({
        "id": id,
        "created_at": "2026-11-22T10:00:00.000Z",
        "completed_at": "2026-11-22T10:00:01.250Z",
        "provider": "OpenAI",
        "request": {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "user": "user_1"},
        "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}
    })
}

fn without_model(id: &str) -> Value {
    let mut r = record(id);
    r["request"].as_object_mut().expect("object").remove("model");
    r
}

/// Generation ids of every span that reached the pipeline, in order.
fn received_ids(rx: &mut mpsc::Receiver<PipelineMessage>) -> Vec<String> {
    drain(rx)
        .into_iter()
        .flat_map(|m| m.items)
        .map(|item| item.generation.expect("a generation span").generation_id.clone())
        .collect()
}

#[tokio::test]
async fn one_object_becomes_one_generation_span() {
    let mut r = start().await;
    let a = post(r.addr, PATH, &[JSON], record("gen-1").to_string()).await;
    assert_eq!(a.status, 202);
    assert_eq!(a.json(), json!({"accepted": 1, "rejected": []}));
    assert_eq!(a.header("content-type"), Some("application/json"));
    let messages = drain(&mut r.rx);
    assert_eq!(messages.len(), 1);
    let item = &messages[0].items[0];
    assert_eq!(item.span.name, "openai/gpt-4o");
    assert_eq!(attr::get_str(&item.origin.resource.attributes, "service.name"), Some("gencol"));
    assert_eq!(item.origin.scope.name, "gencol");
}

#[tokio::test]
async fn array_ndjson_and_gzip_bodies() {
    let mut r = start().await;
    let array = json!([record("a"), record("b"), record("c")]).to_string();
    let a = post(r.addr, PATH, &[JSON], array.clone()).await;
    assert_eq!(a.json(), json!({"accepted": 3, "rejected": []}));
    assert_eq!(received_ids(&mut r.rx), ["a", "b", "c"]);

    let ndjson = format!("{}\n{}\n", record("d"), record("e"));
    for content_type in ["application/x-ndjson; charset=utf-8", "application/jsonl"] {
        let a = post(r.addr, PATH, &[("content-type", content_type)], ndjson.clone()).await;
        assert_eq!(a.json(), json!({"accepted": 2, "rejected": []}), "{content_type}");
        assert_eq!(received_ids(&mut r.rx), ["d", "e"]);
    }

    let a = post(r.addr, PATH, &[JSON, ("content-encoding", "gzip")], gzip(array.as_bytes())).await;
    assert_eq!(a.json(), json!({"accepted": 3, "rejected": []}));
    let a = post(
        r.addr,
        PATH,
        &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
        gzip(ndjson.as_bytes()),
    )
    .await;
    assert_eq!(a.json(), json!({"accepted": 2, "rejected": []}));
    assert_eq!(received_ids(&mut r.rx), ["a", "b", "c", "d", "e"]);

    // No Content-Type at all: read as JSON.
    let a = post(r.addr, PATH, &[], record("f").to_string()).await;
    assert_eq!(a.status, 202);
    assert_eq!(received_ids(&mut r.rx), ["f"]);
}

#[tokio::test]
async fn one_bad_record_in_a_hundred_is_rejected_and_the_rest_go_on() {
    let mut r = start().await;
    let batch: Vec<Value> =
        (0..100).map(|i| if i == 42 { without_model("bad") } else { record(&format!("g{i}")) }).collect();
    let a = post(r.addr, PATH, &[JSON], Value::Array(batch).to_string()).await;
    assert_eq!(a.status, 202);
    assert_eq!(a.json(), json!({"accepted": 99, "rejected": [{"index": 42, "error": "[42].request.model: missing"}]}));
    let ids = received_ids(&mut r.rx);
    assert_eq!(ids.len(), 99);
    assert!(!ids.contains(&"bad".to_owned()));
}

#[tokio::test]
async fn nothing_valid_or_not_json_is_400_and_keeps_nothing() {
    let mut r = start().await;
    let a = post(r.addr, PATH, &[JSON], json!([record("x"), without_model("y")]).to_string()).await;
    assert_eq!(a.status, 202, "sanity: one good record goes on");
    drain(&mut r.rx);

    let a = post(r.addr, PATH, &[JSON], without_model("y").to_string()).await;
    assert_eq!(a.status, 400);
    let body = a.json();
    assert_eq!(body["error"], "no valid generation: [0].request.model: missing");
    assert_eq!(body["rejected"], json!([{"index": 0, "error": "[0].request.model: missing"}]));

    let batch = json!([without_model("a"), without_model("b"), without_model("c"), without_model("d")]);
    let body = post(r.addr, PATH, &[JSON], batch.to_string()).await.json();
    assert!(body["error"].as_str().expect("message").contains("[0].request.model: missing"), "{body}");
    assert_eq!(body["rejected"].as_array().expect("list").len(), 4);

    for not_json in ["{\"id\": ", "", "42"] {
        let a = post(r.addr, PATH, &[JSON], not_json).await;
        assert_eq!(a.status, 400, "{not_json:?}");
        assert!(a.json()["error"].is_string());
    }
    let a = post(r.addr, PATH, &[JSON, ("content-encoding", "gzip")], "not gzip").await;
    assert_eq!(a.status, 400);
    assert!(drain(&mut r.rx).is_empty());
}

#[tokio::test]
async fn bearer_auth_is_checked_before_the_body_is_read() {
    let settings = GenerationsSettings {
        auth: Some(AuthSettings { bearer_tokens: vec!["tok-one".into(), "tok-two".into()] }),
        ..Default::default()
    };
    let mut r = start_with(settings, 16).await;
    for headers in
        [vec![JSON], vec![JSON, ("authorization", "Bearer tok-three")], vec![JSON, ("authorization", "tok-one")]]
    {
        let a = post(r.addr, PATH, &headers, record("x").to_string()).await;
        assert_eq!(a.status, 401, "{headers:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        assert!(a.json()["error"].is_string());
        assert!(!String::from_utf8_lossy(&a.body).contains("tok-"), "the answer never echoes a token");
    }
    for token in ["tok-one", "tok-two"] {
        let a =
            post(r.addr, PATH, &[JSON, ("authorization", &format!("Bearer {token}"))], record(token).to_string()).await;
        assert_eq!(a.status, 202);
    }
    assert_eq!(received_ids(&mut r.rx), ["tok-one", "tok-two"]);

    // Headers announcing a body that never comes: the 401 is immediate.
    let raw = raw_request(
        r.addr,
        "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\nauthorization: Bearer no\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let settings = GenerationsSettings { max_request_body_size: ByteSize(2048), ..Default::default() };
    let mut r = start_with(settings, 16).await;

    // Declared too large: refused from the headers alone.
    let raw = raw_request(r.addr, "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-length: 4096\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("max_request_body_size"), "{raw}");

    // Declared and sent too large.
    let big: Vec<Value> = (0..40).map(|i| record(&format!("g{i}"))).collect();
    let big = Value::Array(big).to_string();
    assert!(big.len() > 2048);
    let a = post(r.addr, PATH, &[JSON], big.clone()).await;
    assert_eq!(a.status, 413);
    assert!(a.json()["error"].is_string());

    // Chunked, so no length is declared: the limit is enforced while reading.
    let chunk = "x".repeat(1500);
    let chunked = format!(
        "POST /v1/generations HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let raw = raw_request(r.addr, &chunked).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");

    // A small gzip body that expands past the limit (a zip bomb).
    let compressed = gzip(big.as_bytes());
    assert!(compressed.len() < 2048);
    let a = post(r.addr, PATH, &[JSON, ("content-encoding", "gzip")], compressed).await;
    assert_eq!(a.status, 413);
    assert!(drain(&mut r.rx).is_empty());
}

#[tokio::test]
async fn other_content_types_are_415() {
    let mut r = start().await;
    for headers in [
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/x-protobuf")],
        vec![JSON, ("content-encoding", "br")],
    ] {
        let a = post(r.addr, PATH, &headers, record("x").to_string()).await;
        assert_eq!(a.status, 415, "{headers:?}");
        assert!(a.json()["error"].is_string());
    }
    assert!(drain(&mut r.rx).is_empty());
}

#[tokio::test]
async fn a_full_pipeline_is_503_with_retry_after_and_keeps_nothing() {
    let mut r = start_with(GenerationsSettings::default(), 1).await;
    let a = post(r.addr, PATH, &[JSON], record("first").to_string()).await;
    assert_eq!(a.status, 202);
    let a = post(r.addr, PATH, &[JSON], json!([record("second"), record("third")]).to_string()).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.json(), json!({"error": "pipeline full, retry"}));
    assert_eq!(received_ids(&mut r.rx), ["first"]);
    // Room again: the retry is accepted.
    let a = post(r.addr, PATH, &[JSON], json!([record("second"), record("third")]).to_string()).await;
    assert_eq!(a.status, 202);
    assert_eq!(received_ids(&mut r.rx), ["second", "third"]);
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let r = start().await;
    let a = post(r.addr, "/v1/traces", &[JSON], record("x").to_string()).await;
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].is_string());
    let mut client = Client::connect(r.addr).await;
    let get = http::Request::get(PATH).header("host", "x").body(Default::default()).expect("request");
    let a = client.send(get).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("POST"));
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let mut r = start().await;
    let mut client = Client::connect(r.addr).await;
    for i in 0..5 {
        let a = client.post(PATH, &[JSON], record(&format!("k{i}")).to_string()).await;
        assert_eq!(a.status, 202);
    }
    // A refused request (body never read) does not break the connection for the next.
    let a = client.post(PATH, &[("content-type", "text/plain")], "x").await;
    assert_eq!(a.status, 415);
    let a = client.post(PATH, &[JSON], record("k5").to_string()).await;
    assert_eq!(a.status, 202);
    assert_eq!(received_ids(&mut r.rx).len(), 6);
}

#[tokio::test]
async fn the_service_name_setting_names_the_resource() {
    let settings = GenerationsSettings { service_name: "my-gateway".into(), ..Default::default() };
    let mut r = start_with(settings, 16).await;
    post(r.addr, PATH, &[JSON], json!([record("a"), record("b")]).to_string()).await;
    let items: Vec<_> = drain(&mut r.rx).into_iter().flat_map(|m| m.items).collect();
    assert_eq!(attr::get_str(&items[0].origin.resource.attributes, "service.name"), Some("my-gateway"));
    assert!(std::sync::Arc::ptr_eq(&items[0].origin, &items[1].origin), "one shared resource");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_the_task() {
    let r = start().await;
    let mut idle = Client::connect(r.addr).await;
    assert_eq!(idle.post(PATH, &[JSON], record("a").to_string()).await.status, 202);
    r.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), r.task).await.expect("stops within 5s").expect("no panic");
    assert!(tokio::net::TcpStream::connect(r.addr).await.is_err(), "no longer listening");
}

/// Generous: these tests assert what happens when a limit is reached, never how fast.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_its_connection_closed() {
    let settings = GenerationsSettings {
        read_timeout: gencol_config::Duration(Duration::from_secs(3)),
        read_idle_timeout: gencol_config::Duration(Duration::from_millis(300)),
        ..Default::default()
    };
    let mut r = start_with(settings, 16).await;
    // Half a body, then silence: the idle timeout ends it.
    let head = "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[{\"id\":";
    let raw = until_closed(r.addr, head.as_bytes(), PATIENCE).await.expect("closed by gencol");
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("connection: close"), "{raw}");
    assert!(raw.contains("read_idle_timeout"), "{raw}");

    // A body that keeps trickling, never pausing long, ends at the total timeout.
    let mut stream = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
    use tokio::io::AsyncWriteExt;
    stream.write_all(head.as_bytes()).await.expect("head");
    let trickle = async {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
        read_until_closed(&mut stream, PATIENCE).await
    };
    let raw = trickle.await.expect("closed by gencol");
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("read_timeout"), "{raw}");
    assert!(drain(&mut r.rx).is_empty());

    // The receiver still answers.
    assert_eq!(post(r.addr, PATH, &[JSON], record("after").to_string()).await.status, 202);
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_501() {
    let mut r = start().await;
    let body = record("te").to_string();
    let raw = format!(
        "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let raw = raw_request(r.addr, &raw).await;
    assert!(raw.starts_with("HTTP/1.1 501"), "{raw}");
    assert!(raw.contains("only `chunked`") && raw.contains("Content-Encoding: gzip"), "{raw}");
    assert!(drain(&mut r.rx).is_empty());
}

#[tokio::test]
async fn more_records_than_allowed_is_413_and_many_rejections_are_listed_in_part() {
    let settings = GenerationsSettings { max_records_per_request: 300, ..Default::default() };
    let mut r = start_with(settings, 16).await;
    let too_many = format!("[{}]", vec!["{}"; 301].join(","));
    let a = post(r.addr, PATH, &[JSON], too_many).await;
    assert_eq!(a.status, 413);
    let error = a.json()["error"].as_str().expect("error").to_owned();
    assert!(error.contains("more than 300 records (max_records_per_request)"), "{error}");

    // 250 bad records and a good one: 100 listed, all counted, the good one kept.
    let mut records = vec![json!({}); 250];
    records.push(record("good"));
    let a = post(r.addr, PATH, &[JSON], Value::Array(records).to_string()).await;
    assert_eq!(a.status, 202);
    let body = a.json();
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"].as_array().expect("list").len(), 100);
    assert_eq!(body["rejected_total"], 250);
    assert_eq!(received_ids(&mut r.rx), ["good"]);

    // None valid: 400 with the same cut list.
    let a = post(r.addr, PATH, &[JSON], Value::Array(vec![json!({}); 250]).to_string()).await;
    assert_eq!(a.status, 400);
    let body = a.json();
    assert_eq!(body["rejected"].as_array().expect("list").len(), 100);
    assert_eq!(body["rejected_total"], 250);
    assert!(body["error"].as_str().expect("error").contains("among 250 records"), "{body}");
}

#[tokio::test]
async fn request_memory_is_taken_from_the_shared_budget() {
    let budget = MemoryBudget::new(1 << 20);
    let settings = GenerationsSettings {
        read_timeout: gencol_config::Duration(Duration::from_secs(30)),
        read_idle_timeout: gencol_config::Duration(Duration::from_secs(30)),
        ..Default::default()
    };
    let mut r = start_with_memory(settings, 16, budget.clone()).await;
    // Larger than all requests together may hold: 413, without reading it.
    let raw = raw_request(r.addr, "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 413") && raw.contains("max_inflight_memory"), "{raw}");

    // One request holds most of the budget while its body arrives: the next is 503.
    let mut holder = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
    use tokio::io::AsyncWriteExt;
    holder
        .write_all(b"POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-length: 800000\r\n\r\n[")
        .await
        .expect("head");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while budget.in_use() < 800_000 {
        assert!(tokio::time::Instant::now() < deadline, "the first request never took its share");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let raw = raw_request(r.addr, "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-length: 300000\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.contains("retry-after: 1") && raw.contains("max_inflight_memory"), "{raw}");
    // A small request still fits.
    assert_eq!(post(r.addr, PATH, &[JSON], record("small").to_string()).await.status, 202);
    assert_eq!(received_ids(&mut r.rx), ["small"]);
    // The holder goes away: its share comes back.
    drop(holder);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while budget.in_use() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{} bytes still held", budget.in_use());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn at_max_connections_idle_ones_make_room_and_busy_ones_refuse() {
    let settings = GenerationsSettings { max_connections: 2, ..Default::default() };
    let mut r = start_with(settings, 16).await;
    use tokio::io::AsyncWriteExt;
    // Two connections that never send a request fill the listener.
    let mut idle_a = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _idle_b = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A sender arrives: the longest idle connection is closed for it, and it is served.
    assert_eq!(post(r.addr, PATH, &[JSON], record("served").to_string()).await.status, 202);
    assert_eq!(read_until_closed(&mut idle_a, PATIENCE).await.as_deref(), Some(""), "closed, nothing sent");

    // Two requests in progress (bodies on their way) are never closed for a newcomer.
    let stalled = "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n[";
    let mut busy_a = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
    busy_a.write_all(stalled.as_bytes()).await.expect("head");
    let mut busy_b = tokio::net::TcpStream::connect(r.addr).await.expect("connect");
    busy_b.write_all(stalled.as_bytes()).await.expect("head");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raw = until_closed(r.addr, b"", PATIENCE).await.expect("answered and closed at once");
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.contains("retry-after: 1") && raw.contains("max_connections"), "{raw}");
    assert_eq!(received_ids(&mut r.rx), ["served"]);
}

#[test]
fn settings_defaults_and_checks() {
    let d = GenerationsSettings::default();
    assert_eq!(d.endpoint, "127.0.0.1:4320");
    assert_eq!(d.max_request_body_size, ByteSize(10 * 1024 * 1024));
    assert_eq!(d.service_name, "gencol");
    assert_eq!(d.read_timeout.0, Duration::from_secs(30));
    assert_eq!(d.read_idle_timeout.0, Duration::from_secs(10));
    assert_eq!(d.max_records_per_request, 10_000);
    assert!(d.max_connections >= 16);
    let e = GenerationsSettings { max_records_per_request: 0, ..Default::default() }
        .check(std::path::Path::new("."))
        .expect_err("zero");
    assert_eq!(e.key, "max_records_per_request");
    let e = GenerationsSettings { service_name: " ".into(), ..Default::default() }
        .check(std::path::Path::new("."))
        .expect_err("empty name");
    assert_eq!(e.key, "service_name");
}
