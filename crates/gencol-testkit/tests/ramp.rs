//! The Ramp-like endpoint over real HTTP on 127.0.0.1: Ramp's path, the bearer key
//! required, and otherwise the OTLP sink (decoding, scripted failures, printing).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use gencol_testkit::{Answer, OtlpSink, RAMP_PATH, SinkOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const KEY: &str = "rk_test_0123456789";
const WAIT: Duration = Duration::from_secs(5);
/// The smallest valid OTLP/JSON body: one span with proper ids.
const ONE_SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"a5475f808fa6162b8e6ef2f8c7720f77","spanId":"0123456789abcdef","name":"Analyze Report","kind":3,"startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{"key":"user.id","value":{"stringValue":"user_12345"}}]}]}]}]}"#;

/// POSTs `ONE_SPAN` to `url` (`http://ADDR/PATH`) with a plain hyper client.
async fn post(url: &str, auth: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json");
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    let response = sender.send_request(builder.body(Full::new(Bytes::from(ONE_SPAN))).unwrap()).await.expect("answer");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn only_the_bearer_key_at_ramps_path_is_accepted() {
    let ramp = OtlpSink::start_with(SinkOptions::ramp(KEY)).await.unwrap();
    assert!(ramp.url().ends_with(RAMP_PATH), "{}", ramp.url());

    let (status, body) = post(&ramp.url(), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(&ramp.url(), Some("Bearer wrong-key")).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(KEY), "the 401 must not reveal the expected key: {body}");
    let (status, _) = post(&ramp.url(), Some(KEY)).await;
    assert_eq!(status, 401, "the key without its Bearer scheme is refused");
    let (status, _) = post(&format!("http://{}/v1/traces", ramp.addr()), Some(&format!("Bearer {KEY}"))).await;
    assert_eq!(status, 404);

    let (status, _) = post(&ramp.url(), Some(&format!("Bearer {KEY}"))).await;
    assert_eq!(status, 200);
    let spans = ramp.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].attr_str("user.id"), Some("user_12345"));
    assert_eq!(ramp.requests().len(), 5, "refused requests are recorded too");
}

#[tokio::test]
async fn scripted_failures_apply_once_the_key_is_right() {
    let ramp = OtlpSink::start_with(SinkOptions::ramp(KEY)).await.unwrap();
    ramp.script([Answer::status(429).retry_after(1), Answer::status(503)]);
    let auth = format!("Bearer {KEY}");
    // A wrong key does not use up the script.
    assert_eq!(post(&ramp.url(), None).await.0, 401);
    assert_eq!(post(&ramp.url(), Some(&auth)).await.0, 429);
    assert_eq!(post(&ramp.url(), Some(&auth)).await.0, 503);
    assert_eq!(post(&ramp.url(), Some(&auth)).await.0, 200);
}

/// Kills the child on drop so a failing assertion leaves no server behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_ramp_command_prints_what_it_received_without_the_key() {
    let child = Command::new(env!("CARGO_BIN_EXE_gencol-testkit"))
        .args(["ramp", "--listen", "127.0.0.1:0", "--fail-status", "503", "--fail-count", "1"])
        .env("RAMP_API_KEY", KEY)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gencol-testkit ramp");
    let mut child = Child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("a listening line");
    let url = first.strip_prefix("gencol-testkit ramp: listening on ").expect(&first).to_owned();
    assert!(url.ends_with(RAMP_PATH), "{url}");

    let auth = format!("Bearer {KEY}");
    assert_eq!(post(&url, Some(&auth)).await.0, 503);
    assert_eq!(post(&url, Some(&auth)).await.0, 200);
    let mut printed = vec![first];
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        let done = line.contains("user.id");
        printed.push(line);
        if done {
            break;
        }
    }
    let printed = printed.join("\n");
    assert!(printed.contains("answering 503 to the first 1 request(s)"), "{printed}");
    assert!(printed.contains(&format!("POST {RAMP_PATH} -> 503")), "{printed}");
    assert!(printed.contains(&format!("POST {RAMP_PATH} -> 200")), "{printed}");
    assert!(printed.contains("authorization=***"), "{printed}");
    assert!(printed.contains("user_12345"), "{printed}");
    assert!(!printed.contains(KEY), "the key was printed:\n{printed}");
}
