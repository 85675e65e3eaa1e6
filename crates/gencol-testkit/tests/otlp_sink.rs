//! End-to-end tests of the OTLP sink over real HTTP on 127.0.0.1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use gencol_testkit::pretty::render_request;
use gencol_testkit::{Answer, Encoding, OtlpSink, Outcome, SinkOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const WAIT: Duration = Duration::from_secs(5);

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

/// POSTs (or sends `method`) over a fresh HTTP/1.1 connection with a plain hyper client.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut builder = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, headers, body }
}

async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    send(addr, "POST", "/v1/traces", headers, body).await
}

async fn post_json(addr: SocketAddr, req: &ExportTraceServiceRequest) -> Reply {
    post(addr, &[("content-type", "application/json")], json_bytes(req)).await
}

fn json_bytes(req: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(req).expect("serialize OTLP/JSON")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_owned())
}

/// A two-span trace (root + child) with every attribute type.
fn sample() -> ExportTraceServiceRequest {
    let trace_id: Vec<u8> = (1..=16).collect();
    let root = Span {
        trace_id: trace_id.clone(),
        span_id: vec![0xaa, 1, 2, 3, 4, 5, 6, 7],
        name: "openrouter.request".to_owned(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_500_000_000,
        attributes: vec![kv("trace.name", s("checkout"))],
        status: Some(Status { code: 1, message: String::new() }),
        ..Default::default()
    };
    let child = Span {
        trace_id,
        span_id: vec![0xbb, 1, 2, 3, 4, 5, 6, 7],
        parent_span_id: root.span_id.clone(),
        name: "chat openai/gpt-4o".to_owned(),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_100_000_000,
        end_time_unix_nano: 1_700_000_001_400_000_000,
        attributes: vec![
            kv("gen_ai.request.model", s("openai/gpt-4o")),
            kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(12)),
            kv("gen_ai.usage.cost", any_value::Value::DoubleValue(0.0025)),
            kv("gen_ai.stream", any_value::Value::BoolValue(true)),
            kv(
                "gen_ai.response.finish_reasons",
                any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("stop")) }] }),
            ),
            kv("blob", any_value::Value::BytesValue(vec![0, 1, 255])),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s("gencol"))], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "gencol".to_owned(),
                    version: "0.1.0".to_owned(),
                    ..Default::default()
                }),
                spans: vec![root, child],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test]
async fn json_protobuf_and_gzip_bodies_decode_to_the_same_request() {
    let sink = OtlpSink::start().await.expect("start");
    let addr = sink.addr();
    assert_eq!(sink.url(), format!("http://{addr}/v1/traces"));
    let original = sample();
    let json = json_bytes(&original);
    let proto = original.encode_to_vec();

    let cases: [(&str, Option<&str>, Vec<u8>); 4] = [
        ("application/json", None, json.clone()),
        ("application/x-protobuf", None, proto.clone()),
        ("application/json; charset=utf-8", Some("gzip"), gzip(&json)),
        ("application/x-protobuf", Some("gzip"), gzip(&proto)),
    ];
    for (content_type, encoding, body) in cases {
        let mut headers = vec![("content-type", content_type)];
        if let Some(e) = encoding {
            headers.push(("content-encoding", e));
        }
        let reply = post(addr, &headers, body).await;
        assert_eq!(reply.status, 200, "{content_type} {encoding:?}");
        if content_type.starts_with("application/json") {
            assert_eq!(reply.headers["content-type"], "application/json");
            assert_eq!(&reply.body[..], b"{}");
        } else {
            assert_eq!(reply.headers["content-type"], "application/x-protobuf");
            let response = ExportTraceServiceResponse::decode(reply.body.as_ref()).expect("proto");
            assert_eq!(response.partial_success, None);
        }
    }

    let requests = sink.wait_for_requests(4, WAIT).await;
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert_eq!(request.decoded.as_ref(), Some(&original), "{request:?}");
        assert_eq!(request.answer.status(), Some(200));
        assert_eq!(request.decode_error, None);
    }
    assert_eq!(requests[0].encoding, Some(Encoding::Json));
    assert_eq!(requests[1].encoding, Some(Encoding::Protobuf));
    assert_eq!(requests[2].content_type.as_deref(), Some("application/json; charset=utf-8"));
    assert_eq!(requests[2].content_encoding.as_deref(), Some("gzip"));
    assert_eq!(requests[2].raw_len, gzip(&json).len());
    assert_eq!(requests[2].decompressed_len, Some(json.len()));
    assert_eq!(requests[3].decompressed_len, Some(proto.len()));
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].header("Content-Type"), Some("application/json"));

    let spans = sink.wait_for_spans(8, WAIT).await;
    assert_eq!(spans.len(), 8);
    let child = &spans[1];
    assert_eq!(child.span.name, "chat openai/gpt-4o");
    assert_eq!(child.trace_id_hex(), "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(child.span_id_hex(), "bb01020304050607");
    assert_eq!(child.parent_span_id_hex().as_deref(), Some("aa01020304050607"));
    assert_eq!(spans[0].parent_span_id_hex(), None);
    assert_eq!(child.attr_str("gen_ai.request.model"), Some("openai/gpt-4o"));
    assert_eq!(child.attr_i64("gen_ai.usage.input_tokens"), Some(12));
    assert_eq!(child.attr_f64("gen_ai.usage.cost"), Some(0.0025));
    assert_eq!(child.attr_f64("gen_ai.usage.input_tokens"), None, "types are strict");
    assert_eq!(child.attr_bool("gen_ai.stream"), Some(true));
    assert_eq!(child.attr_str_array("gen_ai.response.finish_reasons"), Some(vec!["stop"]));
    assert!(child.attr("missing").is_none());
    assert_eq!(child.resource_attr_str("service.name"), Some("gencol"));
    assert_eq!(child.scope_name(), Some("gencol"));
    assert_eq!(child.scope.as_ref().map(|s| s.version.as_str()), Some("0.1.0"));
}

#[tokio::test]
async fn unsupported_or_missing_content_type_is_415() {
    let sink = OtlpSink::start().await.expect("start");
    let json = json_bytes(&sample());
    let reply = post(sink.addr(), &[("content-type", "text/plain")], json.clone()).await;
    assert_eq!(reply.status, 415);
    assert!(String::from_utf8_lossy(&reply.body).contains("text/plain"));
    let reply = post(sink.addr(), &[], json.clone()).await;
    assert_eq!(reply.status, 415);
    let reply = post(sink.addr(), &[("content-type", "application/json"), ("content-encoding", "br")], json).await;
    assert_eq!(reply.status, 415);

    let requests = sink.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.decoded.is_none()));
    assert!(requests[0].decode_error.as_deref().is_some_and(|e| e.contains("unsupported Content-Type")));
    assert!(sink.spans().is_empty());
}

#[tokio::test]
async fn garbage_and_snake_case_bodies_are_400_with_a_message() {
    let sink = OtlpSink::start().await.expect("start");
    let addr = sink.addr();

    let reply = post(addr, &[("content-type", "application/json")], b"not json".to_vec()).await;
    assert_eq!(reply.status, 400);
    let status: serde_json::Value = serde_json::from_slice(&reply.body).expect("Status JSON");
    assert_eq!(status["code"], 3);
    assert!(status["message"].as_str().is_some_and(|m| m.contains("invalid JSON")));

    let reply = post(addr, &[("content-type", "application/x-protobuf")], vec![0xff, 0xff, 0xff, 0xff, 0x0f]).await;
    assert_eq!(reply.status, 400);

    let reply =
        post(addr, &[("content-type", "application/json"), ("content-encoding", "gzip")], b"not gzip".to_vec()).await;
    assert_eq!(reply.status, 400);

    // snake_case keys: serde would silently ignore them and see zero resourceSpans.
    let snake = br#"{"resource_spans":[{"scope_spans":[{"spans":[{"name":"x"}]}]}]}"#;
    let reply = post(addr, &[("content-type", "application/json")], snake.to_vec()).await;
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("resource_spans"));

    // snake_case deeper down would lose the ids.
    let mut value = serde_json::to_value(sample()).expect("json");
    let span = &mut value["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    let trace_id = span["traceId"].take();
    span["trace_id"] = trace_id;
    let reply = post(addr, &[("content-type", "application/json")], serde_json::to_vec(&value).expect("json")).await;
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("spans[0]"));

    // Malformed ids are refused, as a collector would.
    let mut short_ids = sample();
    short_ids.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 8];
    let reply = post(addr, &[("content-type", "application/x-protobuf")], short_ids.encode_to_vec()).await;
    assert_eq!(reply.status, 400);

    // An empty request is valid OTLP.
    let reply = post(addr, &[("content-type", "application/json")], b"{}".to_vec()).await;
    assert_eq!(reply.status, 200);

    let requests = sink.wait_for_requests(7, WAIT).await;
    let statuses: Vec<_> = requests.iter().map(|r| r.status()).collect();
    assert_eq!(statuses, [400, 400, 400, 400, 400, 400, 200].map(Some).to_vec());
    assert!(requests[..6].iter().all(|r| r.decode_error.is_some()));
    assert!(sink.spans().is_empty());
}

#[tokio::test]
async fn scripted_503_with_retry_after_then_200_records_both_attempts() {
    let sink = OtlpSink::start().await.expect("start");
    sink.script([Answer::status(503).retry_after(1)]);
    let req = sample();

    let first = post_json(sink.addr(), &req).await;
    assert_eq!(first.status, 503);
    assert_eq!(first.headers["retry-after"], "1");
    let status: serde_json::Value = serde_json::from_slice(&first.body).expect("Status JSON");
    assert_eq!(status["code"], 14);
    assert!(sink.spans().is_empty(), "a refused batch is not stored");

    let second = post_json(sink.addr(), &req).await;
    assert_eq!(second.status, 200);
    assert!(second.headers.get("retry-after").is_none());

    let requests = sink.wait_for_requests(2, WAIT).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status(), Some(503));
    assert_eq!(requests[0].decoded.as_ref(), Some(&req), "failed attempt still decoded");
    assert_eq!(requests[1].status(), Some(200));
    assert!(requests[1].received_at >= requests[0].received_at);
    assert_eq!(sink.spans().len(), 2);
}

#[tokio::test]
async fn scripted_answers_are_used_in_order_with_custom_bodies() {
    let sink = OtlpSink::start().await.expect("start");
    sink.script([
        Answer::status(400).body("bad"),
        Answer::status(401),
        Answer::status(429).header("x-why", "slow down"),
    ]);
    let req = sample();
    let a = post_json(sink.addr(), &req).await;
    assert_eq!((a.status, &a.body[..]), (400, &b"bad"[..]));
    assert_eq!(a.headers["content-type"], "text/plain; charset=utf-8");
    let b = post_json(sink.addr(), &req).await;
    assert_eq!(b.status, 401);
    let c = post_json(sink.addr(), &req).await;
    assert_eq!(c.status, 429);
    assert_eq!(c.headers["x-why"], "slow down");
    let d = post_json(sink.addr(), &req).await;
    assert_eq!(d.status, 200);
    assert_eq!(
        sink.requests()[0].answer,
        Outcome::Replied {
            status: 400,
            headers: vec![("content-type".to_owned(), "text/plain; charset=utf-8".to_owned())],
            body: Bytes::from_static(b"bad"),
        }
    );
}

#[tokio::test]
async fn partial_success_is_encoded_like_the_request() {
    let sink = OtlpSink::start().await.expect("start");
    sink.script([
        Answer::status(200).partial_success(1, "span too big"),
        Answer::status(200).partial_success(2, "quota"),
    ]);
    let req = sample();
    let json = post_json(sink.addr(), &req).await;
    assert_eq!(json.status, 200);
    let parsed: ExportTraceServiceResponse = serde_json::from_slice(&json.body).expect("OTLP/JSON response");
    let partial = parsed.partial_success.expect("partialSuccess");
    assert_eq!((partial.rejected_spans, partial.error_message.as_str()), (1, "span too big"));

    let proto = post(sink.addr(), &[("content-type", "application/x-protobuf")], req.encode_to_vec()).await;
    let parsed = ExportTraceServiceResponse::decode(proto.body.as_ref()).expect("proto");
    let partial = parsed.partial_success.expect("partial_success");
    assert_eq!((partial.rejected_spans, partial.error_message.as_str()), (2, "quota"));
    assert_eq!(sink.wait_for_spans(4, WAIT).await.len(), 4);
}

#[tokio::test]
async fn delay_holds_the_answer_and_the_request_is_pending_meanwhile() {
    let sink = OtlpSink::start().await.expect("start");
    let delay = Duration::from_millis(400);
    sink.script([Answer::delay(delay)]);
    let addr = sink.addr();
    let req = sample();
    let started = Instant::now();
    let client = tokio::spawn(async move { post_json(addr, &req).await.status });

    let pending = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(r) = sink.requests().first() {
                return r.answer.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("request arrives");
    assert_eq!(pending, Outcome::Pending);
    assert!(sink.spans().is_empty(), "not accepted before the answer");

    assert_eq!(client.await.expect("client"), 200);
    assert!(started.elapsed() >= delay);
    assert_eq!(sink.wait_for_spans(2, WAIT).await.len(), 2);
    let answered = sink.wait_for_request(0, WAIT).await.expect("answered");
    assert_eq!(answered.status(), Some(200));
}

#[tokio::test]
async fn close_drops_the_connection_without_a_response_and_is_recorded() {
    let sink = OtlpSink::start().await.expect("start");
    sink.script([Answer::close()]);
    let addr = sink.addr();
    let body = json_bytes(&sample());

    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write head");
        stream.write_all(&body).expect("write body");
        let mut received = Vec::new();
        // EOF (Ok) or a reset (Err) both mean "closed"; a timeout would leave the loop too
        // but with an error kind we reject below.
        match stream.read_to_end(&mut received) {
            Ok(_) => Ok(received),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(received),
            Err(e) => Err(e),
        }
    })
    .await
    .expect("join");
    let received = response.expect("connection closed, not timed out");
    assert!(received.is_empty(), "no response bytes: {received:?}");

    let requests = sink.wait_for_requests(1, WAIT).await;
    assert_eq!(requests[0].answer, Outcome::Closed);
    assert!(requests[0].decoded.is_some());
    assert!(sink.spans().is_empty());

    // The script is used up: the next delivery succeeds.
    assert_eq!(post_json(addr, &sample()).await.status, 200);
}

#[tokio::test]
async fn expect_header_refuses_requests_without_it_and_keeps_the_script() {
    let sink = OtlpSink::start_with(SinkOptions::default().expect_header("Authorization", "Bearer s3cret"))
        .await
        .expect("start");
    sink.script([Answer::status(503)]);
    let req = sample();
    let json = json_bytes(&req);

    let missing = post(sink.addr(), &[("content-type", "application/json")], json.clone()).await;
    assert_eq!(missing.status, 401);
    let wrong =
        post(sink.addr(), &[("content-type", "application/json"), ("authorization", "Bearer nope")], json.clone())
            .await;
    assert_eq!(wrong.status, 401);
    let good_headers = [("content-type", "application/json"), ("authorization", "Bearer s3cret")];
    // The scripted 503 was not consumed by the refused requests.
    assert_eq!(post(sink.addr(), &good_headers, json.clone()).await.status, 503);
    assert_eq!(post(sink.addr(), &good_headers, json).await.status, 200);

    let requests = sink.wait_for_requests(4, WAIT).await;
    let statuses: Vec<_> = requests.iter().map(|r| r.status()).collect();
    assert_eq!(statuses, [401, 401, 503, 200].map(Some).to_vec());
    assert_eq!(requests[0].decoded.as_ref(), Some(&req));
    assert_eq!(requests[3].header("authorization"), Some("Bearer s3cret"));
    assert_eq!(sink.spans().len(), 2);
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let sink = OtlpSink::start_with(SinkOptions::default().path("/custom/traces")).await.expect("start");
    assert!(sink.url().ends_with("/custom/traces"));
    let json = json_bytes(&sample());
    let headers = [("content-type", "application/json")];
    let wrong_path = send(sink.addr(), "POST", "/v1/traces", &headers, json.clone()).await;
    assert_eq!(wrong_path.status, 404);
    let get = send(sink.addr(), "GET", "/custom/traces", &[], Vec::new()).await;
    assert_eq!(get.status, 405);
    let ok = send(sink.addr(), "POST", "/custom/traces?x=1", &headers, json).await;
    assert_eq!(ok.status, 200);
    let requests = sink.wait_for_requests(3, WAIT).await;
    assert_eq!(requests[0].path, "/v1/traces");
    assert_eq!(requests[2].query.as_deref(), Some("x=1"));
    assert_eq!(sink.spans().len(), 2);

    assert!(OtlpSink::start_with(SinkOptions::default().path("no-slash")).await.is_err());
}

#[tokio::test]
async fn fallback_answer_applies_to_every_request_after_the_script() {
    let sink = OtlpSink::start_with(SinkOptions::default().fallback(Answer::status(503))).await.expect("start");
    sink.script([Answer::status(200)]);
    let req = sample();
    assert_eq!(post_json(sink.addr(), &req).await.status, 200);
    assert_eq!(post_json(sink.addr(), &req).await.status, 503);
    assert_eq!(post_json(sink.addr(), &req).await.status, 503);
    assert_eq!(sink.spans().len(), 2);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let sink = OtlpSink::start_with(SinkOptions::default().max_body_bytes(64)).await.expect("start");
    let json = json_bytes(&sample());
    assert!(json.len() > 64);
    let reply = post(sink.addr(), &[("content-type", "application/json")], json.clone()).await;
    assert_eq!(reply.status, 413);
    // A small gzip body that inflates past the limit is refused too.
    let bomb = gzip(&vec![b' '; 10_000]);
    assert!(bomb.len() <= 64, "{}", bomb.len());
    let reply = post(sink.addr(), &[("content-type", "application/json"), ("content-encoding", "gzip")], bomb).await;
    assert_eq!(reply.status, 413);
}

#[tokio::test]
async fn waits_return_what_there_is_at_the_timeout() {
    let sink = OtlpSink::start().await.expect("start");
    let started = Instant::now();
    let spans = sink.wait_for_spans(1, Duration::from_millis(150)).await;
    assert!(spans.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(sink.wait_for_request(0, Duration::from_millis(50)).await.is_none());
    assert_eq!(post_json(sink.addr(), &sample()).await.status, 200);
    let requests = sink.wait_for_requests(5, Duration::from_millis(50)).await;
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn stopping_the_sink_frees_the_port_for_clients_to_fail_fast() {
    let sink = OtlpSink::start().await.expect("start");
    let addr = sink.addr();
    sink.shutdown();
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepting after shutdown");
}

#[tokio::test]
async fn rendering_shows_spans_and_masks_secrets() {
    let sink = OtlpSink::start().await.expect("start");
    let started = Instant::now();
    let reply = post(
        sink.addr(),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer s3cret"),
            ("x-api-key", "k3y"),
            ("x-test-connection", "true"),
        ],
        json_bytes(&sample()),
    )
    .await;
    assert_eq!(reply.status, 200);
    let request = sink.wait_for_request(0, WAIT).await.expect("request");
    let text = render_request(&request, 1, started);
    assert!(!text.contains("s3cret") && !text.contains("k3y"), "{text}");
    assert!(text.contains("authorization=***"), "{text}");
    assert!(text.contains("x-api-key=***"), "{text}");
    assert!(text.contains("x-test-connection=true"), "{text}");
    assert!(text.contains("-> 200 | json"), "{text}");
    assert!(text.contains("2 spans"), "{text}");
    assert!(text.contains("trace 0102030405060708090a0b0c0d0e0f10"), "{text}");
    assert!(text.contains("- chat openai/gpt-4o span=bb01020304050607 parent=aa01020304050607"), "{text}");
    assert!(text.contains("gen_ai.request.model=\"openai/gpt-4o\""), "{text}");
    assert!(text.contains("gen_ai.usage.input_tokens=12"), "{text}");
    assert!(text.contains("service.name=\"gencol\""), "{text}");
    // The child is nested under the root.
    let root_line = text.find("- openrouter.request").expect("root");
    let child_line = text.find("- chat openai/gpt-4o").expect("child");
    assert!(root_line < child_line, "{text}");
}

#[tokio::test]
async fn a_client_that_gives_up_during_a_delay_is_recorded_as_abandoned() {
    let sink = OtlpSink::start().await.expect("start");
    sink.script([Answer::delay(Duration::from_secs(3))]);
    let gave_up = tokio::time::timeout(Duration::from_millis(200), post_json(sink.addr(), &sample())).await;
    assert!(gave_up.is_err(), "the client timed out");
    let started = Instant::now();
    let request = sink.wait_for_request(0, WAIT).await.expect("final outcome");
    assert_eq!(request.answer, Outcome::Abandoned);
    assert!(started.elapsed() < Duration::from_secs(2), "noticed before the delay ended");
    assert!(request.decoded.is_some());
    assert!(sink.spans().is_empty());
}
