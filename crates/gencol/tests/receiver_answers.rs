//! Every row of SPEC §2's answers table, against the real binary, and the rule that
//! one bad record never sinks its batch.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use gencol_testkit::OtlpSink;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn config_with_auth(sink: &str) -> String {
    format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
    auth: {{bearer_tokens: ["${{env:TEST_GENCOL_TOKEN}}"]}}
    max_request_body_size: 64KiB
processors:
  namespace: {{}}
exporters:
  otlp/sink: {{endpoint: "{sink}"}}
service:
  pipelines:
    traces: {{receivers: [generations], processors: [namespace], exporters: [otlp/sink]}}
"#
    )
}

const TOKEN: &str = "tok-e2e-9f8d7c";

#[tokio::test]
async fn answers_table() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start_with_env(&config_with_auth(&sink.url()), &[("TEST_GENCOL_TOKEN", TOKEN)]);
    let url = gencol.generations_url();
    let auth = format!("Bearer {TOKEN}");
    let auth = [("authorization", auth.as_str())];
    let body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();

    // 202, all accepted: object, array, NDJSON, gzip.
    let (st, b, _) = post(&url, "application/json", body(generation("a-1")), &auth).await;
    assert_eq!((st, b), (202, json!({"accepted": 1, "rejected": []})));
    let (st, b, _) =
        post(&url, "application/json; charset=utf-8", body(json!([generation("a-2"), generation("a-3")])), &auth).await;
    assert_eq!((st, b), (202, json!({"accepted": 2, "rejected": []})));
    let ndjson = format!("{}\n{}\n", generation("a-4"), generation("a-5"));
    let (st, b, _) = post(&url, "application/x-ndjson", ndjson.into_bytes(), &auth).await;
    assert_eq!((st, b), (202, json!({"accepted": 2, "rejected": []})));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body(generation("a-6"))).unwrap();
    let gz = gz.finish().unwrap();
    let (st, b, _) = post(&url, "application/json", gz, &[auth[0], ("content-encoding", "gzip")]).await;
    assert_eq!((st, b), (202, json!({"accepted": 1, "rejected": []})));

    // 202 with rejected: the valid ones go on.
    let mut bad = generation("a-bad");
    bad["request"].as_object_mut().unwrap().remove("model");
    let (st, b, _) = post(&url, "application/json", body(json!([generation("a-7"), bad])), &auth).await;
    assert_eq!(st, 202);
    assert_eq!(b, json!({"accepted": 1, "rejected": [{"index": 1, "error": "[1].request.model: missing"}]}));

    // 400: none valid, or not JSON; the error names index and field path.
    let mut bad3 = generation("x");
    bad3["request"].as_object_mut().unwrap().remove("model");
    let (st, b, _) =
        post(&url, "application/json", body(json!([bad3.clone(), bad3.clone(), bad3.clone(), bad3])), &auth).await;
    assert_eq!(st, 400);
    assert!(b["error"].as_str().unwrap().contains("[0].request.model: missing"), "{b}");
    assert_eq!(b["rejected"][3], json!({"index": 3, "error": "[3].request.model: missing"}));
    let (st, b, _) = post(&url, "application/json", b"{not json".to_vec(), &auth).await;
    assert_eq!(st, 400);
    assert!(b["error"].as_str().unwrap().contains("JSON"), "{b}");

    // 401: missing or wrong token; nothing kept.
    let (st, _, h) = post(&url, "application/json", body(generation("u-1")), &[]).await;
    assert_eq!(st, 401);
    assert!(h.get("www-authenticate").is_some());
    let (st, _, _) =
        post(&url, "application/json", body(generation("u-2")), &[("authorization", "Bearer wrong")]).await;
    assert_eq!(st, 401);

    // 413 over max_request_body_size (64KiB), 415 other content types.
    let mut big = generation("big");
    big["request"]["messages"][0]["content"] = json!("x".repeat(70 * 1024));
    let (st, _, _) = post(&url, "application/json", body(big), &auth).await;
    assert_eq!(st, 413);
    let (st, _, _) = post(&url, "text/plain", body(generation("t")), &auth).await;
    assert_eq!(st, 415);

    // Exactly the accepted records reached the destination, none of the refused ones.
    sink.wait_for_spans(7, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids: Vec<String> =
        sink.spans().iter().filter_map(|s| s.attr_str("gen_ai.response.id").map(str::to_owned)).collect();
    ids.sort();
    assert_eq!(ids, ["a-1", "a-2", "a-3", "a-4", "a-5", "a-6", "a-7"]);
    let logs = gencol.stderr();
    assert!(!logs.contains(TOKEN), "the token must never be logged");
}

#[tokio::test]
async fn one_bad_record_in_a_hundred_loses_none_of_the_99() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "200ms", "", ""));
    let mut batch: Vec<serde_json::Value> = (0..100).map(|i| generation(&format!("b-{i:03}"))).collect();
    batch[37]["completed_at"] = json!("2026-11-22T09:00:00Z");
    let (st, b) = post_json(&gencol.generations_url(), &json!(batch)).await;
    assert_eq!(st, 202);
    assert_eq!(b["accepted"], 99);
    assert_eq!(b["rejected"], json!([{"index": 37, "error": "[37].completed_at: before created_at"}]));
    let spans = sink.wait_for_spans(99, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.spans().len(), 99);
    assert_eq!(spans.iter().filter(|s| s.attr_str("gen_ai.response.id") == Some("b-037")).count(), 0);
}

#[tokio::test]
async fn backpressure_answers_503_with_retry_after_and_keeps_nothing() {
    // A destination that never answers in time, a one-item queue that blocks, so the
    // pipeline channel fills and the receiver must say 503.
    let sink = OtlpSink::start_with(
        gencol_testkit::SinkOptions::default().fallback(gencol_testkit::Answer::delay(Duration::from_secs(30))),
    )
    .await
    .unwrap();
    let yaml = format!(
        r#"
receivers:
  generations: {{endpoint: "127.0.0.1:{{GEN_PORT}}"}}
processors:
  namespace: {{}}
exporters:
  otlp/slow:
    endpoint: "{}"
    timeout: 60s
    queue: {{max_items: 1, when_full: block, consumers: 1}}
service:
  pipelines:
    traces: {{receivers: [generations], processors: [namespace], exporters: [otlp/slow]}}
"#,
        sink.url()
    );
    let gencol = Gencol::start(&yaml);
    let mut saw_503 = None;
    let client = reqwest::Client::new();
    for i in 0..3000 {
        let (st, b, h) = post_with(
            &client,
            &gencol.generations_url(),
            "application/json",
            serde_json::to_vec(&generation(&format!("p-{i}"))).unwrap(),
            &[],
        )
        .await;
        if st == 503 {
            saw_503 = Some((b, h.get("retry-after").map(|v| v.to_str().unwrap().to_owned())));
            break;
        }
        assert_eq!(st, 202);
    }
    let (body, retry_after) = saw_503.expect("the receiver answered 503 once the pipeline was full");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert!(body["error"].as_str().is_some());
}

#[tokio::test]
async fn zstd_and_deflate_bodies_are_read_and_a_zstd_bomb_is_413() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start_with_env(&config_with_auth(&sink.url()), &[("TEST_GENCOL_TOKEN", TOKEN)]);
    let url = gencol.generations_url();
    let auth = format!("Bearer {TOKEN}");
    let with = |encoding: &'static str| [("authorization", auth.clone()), ("content-encoding", encoding.to_owned())];
    let send = |body: Vec<u8>, encoding: &'static str| {
        let headers = with(encoding);
        let url = url.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(&url, "application/json", body, &headers).await
        }
    };

    let record = |id: &str| serde_json::to_vec(&generation(id)).unwrap();
    let zstd_body = zstd::encode_all(&record("z-1")[..], 3).unwrap();
    let (st, b, _) = send(zstd_body, "zstd").await;
    assert_eq!((st, b), (202, json!({"accepted": 1, "rejected": []})));
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&record("d-1")).unwrap();
    let (st, b, _) = send(zlib.finish().unwrap(), "deflate").await;
    assert_eq!((st, b), (202, json!({"accepted": 1, "rejected": []})));

    // 100 MiB of spaces in a few KiB: refused once it passes the 64 KiB limit, not expanded.
    let bomb = zstd::encode_all(std::io::Read::take(std::io::repeat(b' '), 100 << 20), 19).unwrap();
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let (st, b, _) = send(bomb, "zstd").await;
    assert_eq!(st, 413, "{b}");
    assert!(b["error"].as_str().unwrap_or_default().contains("max_request_body_size"), "{b}");
    let (st, b, _) = send(b"garbage".to_vec(), "zstd").await;
    assert_eq!(st, 400, "{b}");
    assert!(b["error"].as_str().unwrap_or_default().contains("not valid zstd"), "{b}");

    // The process lives on and both bodies arrived.
    let spans = sink.wait_for_spans(2, WAIT).await;
    let ids: std::collections::BTreeSet<&str> = spans.iter().filter_map(|s| s.attr_str("gen_ai.response.id")).collect();
    assert_eq!(ids, ["d-1", "z-1"].into());
}
