//! `decode`: typed settings with errors at the key or value to fix.
//!
//! What `serde_path_to_error` reports, verified here: for an unknown field the path
//! ends with the unknown key itself (`inner.zz`) and the message is serde's
//! "unknown field `zz`, expected `a` or `b`"; for a missing field the path is the map;
//! for an unknown enum variant the path is the value; inside a newtype the newtype adds
//! no segment; inside an externally tagged enum the variant is one segment.

use gencol_config::{ByteSize, Duration, Located, Node, decode, load_str};
use serde::Deserialize;

fn env(name: &str) -> Option<String> {
    match name {
        "DIGITS" => Some("123456".into()),
        "GENCOL_TOKEN" => Some("s3cr3t-t0ken".into()),
        "PORT" => Some("4318".into()),
        _ => None,
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Exporter {
    endpoint: String,
    #[serde(default)]
    headers: Vec<Header>,
    #[serde(default)]
    encoding: Option<Encoding>,
    #[serde(default)]
    timeout: Option<Duration>,
    #[serde(default)]
    max_size: Option<ByteSize>,
    #[serde(default)]
    retry: Option<Retry>,
    #[serde(default)]
    sink: Option<Sink>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Encoding {
    Json,
    Proto,
}

/// A newtype around a struct.
#[derive(Debug, Deserialize, PartialEq)]
struct Retry(RetrySettings);

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct RetrySettings {
    attempts: u32,
    #[serde(default)]
    backoff: Option<Duration>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Sink {
    File { path: String },
    Stdout,
}

fn load(text: &str) -> Located<Node> {
    load_str("d.yaml", text, &env).unwrap_or_else(|d| panic!("{d}"))
}

fn error(text: &str) -> String {
    match decode::<Exporter>(&load(text)) {
        Ok(v) => panic!("decoded {v:?}"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn good_settings_decode() {
    let text = "\
endpoint: https://x
headers:
  - {name: a, value: b}
encoding: proto
timeout: 250ms
max_size: 10MiB
retry: {attempts: 3, backoff: 1s}
sink: {file: {path: /tmp/x}}
port: ${env:PORT}
";
    let e: Exporter = decode(&load(text)).unwrap();
    assert_eq!(e.encoding, Some(Encoding::Proto));
    assert_eq!(e.timeout, Some(Duration(std::time::Duration::from_millis(250))));
    assert_eq!(e.max_size, Some(ByteSize(10 << 20)));
    assert_eq!(e.retry.map(|r| r.0.attempts), Some(3));
    assert_eq!(e.sink, Some(Sink::File { path: "/tmp/x".into() }));
    assert_eq!(e.port, Some(4318));
    let unit: Exporter = decode(&load("endpoint: x\nsink: stdout\n")).unwrap();
    assert_eq!(unit.sink, Some(Sink::Stdout));
}

#[test]
fn unknown_key_points_at_the_key() {
    assert_eq!(
        error("endpoint: x\nendpiont: y\n"),
        "d.yaml:2:1: unknown key `endpiont`, did you mean `endpoint`? (expected one of: endpoint, headers, \
         encoding, timeout, max_size, retry, sink, port)"
    );
}

#[test]
fn unknown_key_in_a_list_item() {
    assert_eq!(
        error("endpoint: x\nheaders:\n  - name: a\n    value: b\n  - name: c\n    valeu: d\n"),
        "d.yaml:6:5: headers[1]: unknown key `valeu`, did you mean `value`? (expected one of: name, value)"
    );
}

#[test]
fn unknown_key_inside_a_newtype() {
    assert_eq!(
        error("endpoint: x\nretry:\n  attempts: 1\n  jitter: true\n"),
        "d.yaml:4:3: retry: unknown key `jitter` (expected one of: attempts, backoff)"
    );
}

#[test]
fn unknown_key_inside_an_enum_variant() {
    assert_eq!(
        error("endpoint: x\nsink:\n  file:\n    path: /x\n    mode: 644\n"),
        "d.yaml:5:5: sink.file: unknown key `mode` (expected one of: path)"
    );
}

#[test]
fn missing_key_points_at_the_map() {
    assert_eq!(error("headers: []\n"), "d.yaml:1:1: missing key `endpoint`");
    assert_eq!(error("endpoint: x\nretry:\n  backoff: 1s\n"), "d.yaml:3:3: retry: missing key `attempts`");
    assert_eq!(error("endpoint: x\nheaders: [{name: a}]\n"), "d.yaml:2:11: headers[0]: missing key `value`");
}

#[test]
fn unknown_enum_value_with_suggestion() {
    assert_eq!(
        error("endpoint: x\nencoding: protobuf\n"),
        "d.yaml:2:11: encoding: unknown value `protobuf`, did you mean `proto`? (expected one of: json, proto)"
    );
    assert_eq!(
        error("endpoint: x\nsink: {fil: {path: x}}\n"),
        "d.yaml:2:7: sink: unknown value `fil`, did you mean `file`? (expected one of: file, stdout)"
    );
}

#[test]
fn bad_values_point_at_the_value() {
    assert_eq!(
        error("endpoint: x\ntimeout: 30\n"),
        "d.yaml:2:10: timeout: duration `30` has no unit: add one, e.g. `30s` or `30ms`"
    );
    assert_eq!(
        error("endpoint: x\nretry: {attempts: 1, backoff: often}\n"),
        "d.yaml:2:31: retry.backoff: invalid duration \"often\": write a number with a unit, e.g. 250ms, 5s, 10m or 1h30m"
    );
    assert_eq!(
        error("endpoint: x\nmax_size: 10 mebibytes\n"),
        "d.yaml:2:11: max_size: invalid size \"10 mebibytes\": write a number of bytes (4096) or a number with a \
         unit (512KiB, 10MiB, 1GB)"
    );
    assert_eq!(error("endpoint: x\nport: 70000\n"), "d.yaml:2:7: port: invalid value: integer `70000`, expected u16");
    assert_eq!(
        error("endpoint: x\nsink: {file: {path: [a]}}\n"),
        "d.yaml:2:21: sink.file.path: expected a string, found list"
    );
}

#[test]
fn type_errors_never_show_the_value() {
    // A secret under the wrong key must not be echoed back.
    let line = error("endpoint: x\nport: ${env:GENCOL_TOKEN}\n");
    assert_eq!(line, "d.yaml:2:7: port: expected u16, found string");
    let line = error("endpoint: x\nheaders: \"${env:GENCOL_TOKEN}\"\n");
    assert_eq!(line, "d.yaml:2:10: headers: expected a sequence, found string");
}

#[test]
fn numbers_and_booleans_read_as_text_where_text_is_wanted() {
    let e: Exporter = decode(&load("endpoint: ${env:DIGITS}\nheaders: [{name: 1, value: true}]\n")).unwrap();
    assert_eq!(e.endpoint, "123456");
    assert_eq!(e.headers, [Header { name: "1".into(), value: "true".into() }]);
}

#[test]
fn null_settings_are_an_empty_map() {
    // `retry:` with nothing after it where a struct is required: the struct's own
    // message (the missing key) shows, at the empty value.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Required {
        retry: RetrySettings,
    }
    let d = decode::<Required>(&load("retry:\n")).unwrap_err().to_string();
    assert_eq!(d, "d.yaml:1:6: retry: missing key `attempts`");
    // An optional struct left empty is simply absent.
    assert_eq!(decode::<Exporter>(&load("endpoint: x\nretry:\n")).map(|e| e.retry), Ok(None));
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct AllDefault {
        #[serde(default)]
        _verbosity: Option<String>,
    }
    let root = load("debug:\n");
    let debug = root.value.get("debug").unwrap();
    assert!(decode::<AllDefault>(debug).is_ok());
}

#[test]
fn struct_without_fields_and_single_field() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nothing {}
    let d = decode::<Nothing>(&load("a: 1\n")).unwrap_err().to_string();
    assert_eq!(d, "d.yaml:1:1: unknown key `a` (no keys are allowed here)");
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct One {
        level: String,
    }
    let d = decode::<One>(&load("level: x\nlevle: y\n")).unwrap_err().to_string();
    assert_eq!(d, "d.yaml:2:1: unknown key `levle`, did you mean `level`? (expected one of: level)");
}

#[test]
fn node_helpers() {
    let root = load("a: {b: [1, x]}\n");
    assert_eq!(root.value.to_json(), serde_json::json!({"a": {"b": [1, "x"]}}));
    let a = root.value.get("a").unwrap();
    assert_eq!(a.value.kind(), "map");
    assert_eq!(a.value.get("b").unwrap().value.kind(), "list");
    assert_eq!(root.value.key_loc("a").map(ToString::to_string), Some("d.yaml:1:1".into()));
    assert!(root.value.get("zz").is_none());
    assert!(Node::Int(1).get("a").is_none());
    assert_eq!(Node::Null.kind(), "null");
    assert_eq!(Node::String("s".into()).as_str(), Some("s"));
}
