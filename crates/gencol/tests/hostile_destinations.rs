//! End to end: destinations that try to get a secret printed. They answer 400/401 with a
//! body echoing the credential gencol sent them (as is, across the 512-byte excerpt cut,
//! JSON-escaped, as a Basic credential in base64, lower-cased), a partial success whose
//! message echoes it, or a 307 to another listener with a token in the query. The real
//! binary runs `gencol test-connection` and `gencol run` against them; no line of its
//! stdout or stderr may hold a secret in any of those forms, and the redirect target
//! must receive nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use common::*;
use gencol_testkit::{Answer, OtlpSink, RaindropOptions, RaindropSink, SinkOptions};

const WAIT: Duration = Duration::from_secs(20);

/// The bearer token of the `otlp` exporters (with `/` and `+`, which escaping changes).
const TOKEN: &str = "hostile-Tok/3n+Zq8xW5v";
const BASIC_USER: &str = "gencol-user";
const BASIC_PASSWORD: &str = "Pa55/w0rd+Basic!";
const RAMP_KEY: &str = "rk_live_Hostile9Zq8xW3v";
const RAINDROP_KEY: &str = "rd_write_Hostile7Kp2Lm";
/// In the redirecting exporter's own endpoint (`?api_key=`).
const QUERY_KEY: &str = "query-key-Hostile5Rt6";
/// In the `Location` the redirecting destination answers with.
const REDIRECT_TOKEN: &str = "redirect-token-Hostile1Ab2";

fn basic_credential() -> String {
    STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"))
}

/// Every secret of the config (and the Basic credential's parts).
fn secrets() -> Vec<String> {
    vec![
        TOKEN.to_owned(),
        BASIC_PASSWORD.to_owned(),
        format!("{BASIC_USER}:{BASIC_PASSWORD}"),
        basic_credential(),
        RAMP_KEY.to_owned(),
        RAINDROP_KEY.to_owned(),
        QUERY_KEY.to_owned(),
        REDIRECT_TOKEN.to_owned(),
    ]
}

/// How a secret may show: as is, short of its last character (cut before masking),
/// JSON-escaped, percent-encoded, and in base64. Compared ignoring case.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_owned(),
        secret[..secret.len() - 1].to_owned(),
        secret.replace('/', "\\/"),
        secret.replace('/', "\\u002f").replace('+', "\\u002b"),
        secret.replace('/', "%2f").replace('+', "%2b"),
    ];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        forms.push(engine.encode(secret));
    }
    forms
}

/// Fails naming the line and the form if any secret shows in `output`.
fn assert_no_secret(output: &str) {
    let lower = output.to_lowercase();
    for secret in secrets() {
        for form in forms(&secret) {
            if let Some(at) = lower.find(&form.to_lowercase()) {
                let line = output[..at].lines().count();
                panic!("a secret ({form}) is printed, line {line}:\n{output}");
            }
        }
    }
}

/// The destinations: each exporter id with its sink and the YAML of its settings.
struct Destinations {
    plain: OtlpSink,
    straddle: OtlpSink,
    json: OtlpSink,
    basic: OtlpSink,
    lower: OtlpSink,
    partial: OtlpSink,
    redirect: OtlpSink,
    /// Where the redirect points: must never be reached.
    redirect_target: OtlpSink,
    ramp: OtlpSink,
    raindrop: RaindropSink,
}

/// An OTLP sink that requires `authorization` (so the test knows gencol sent the
/// credential) and then always gives `answer`.
async fn sink(authorization: &str, answer: Answer) -> OtlpSink {
    let options = SinkOptions::default().expect_header("authorization", authorization).fallback(answer);
    OtlpSink::start_with(options).await.expect("sink starts")
}

impl Destinations {
    async fn start() -> Destinations {
        let bearer = format!("Bearer {TOKEN}");
        // One character of the token past byte 512 of the body.
        let straddling = format!("{}{TOKEN}{}", "x".repeat(512 - TOKEN.len() + 1), "y".repeat(200));
        let escaped = TOKEN.replace('/', "\\/").replace('+', "\\u002B");
        let redirect_target = OtlpSink::start().await.expect("sink starts");
        let location = format!("{}?token={REDIRECT_TOKEN}", redirect_target.url());
        Destinations {
            plain: sink(&bearer, Answer::status(401).body(format!("invalid token {TOKEN} for this dataset"))).await,
            straddle: sink(&bearer, Answer::status(400).body(straddling)).await,
            json: sink(
                &bearer,
                Answer::status(401)
                    .body(format!(r#"{{"error":"unauthorized","authorization":"Bearer {escaped}"}}"#))
                    .header("content-type", "application/json"),
            )
            .await,
            basic: sink(
                &format!("Basic {}", basic_credential()),
                Answer::status(401).body(format!(
                    "bad credentials: Authorization: Basic {} ({BASIC_USER}:{BASIC_PASSWORD})",
                    basic_credential()
                )),
            )
            .await,
            lower: sink(&bearer, Answer::status(401).body(format!("token {} revoked", TOKEN.to_lowercase()))).await,
            partial: sink(
                &bearer,
                Answer::status(200)
                    .body(format!(
                        r#"{{"partialSuccess":{{"rejectedSpans":"1","errorMessage":"span dropped: token {escaped} is read-only"}}}}"#
                    ))
                    .header("content-type", "application/json"),
            )
            .await,
            redirect: sink(&bearer, Answer::status(307).header("location", &location)).await,
            redirect_target,
            ramp: OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY).fallback(Answer::status(401).body(format!(
                "key {RAMP_KEY} is not enabled (base64 {})",
                URL_SAFE_NO_PAD.encode(RAMP_KEY)
            ))))
            .await
            .expect("sink starts"),
            raindrop: RaindropSink::start_with(
                RaindropOptions::new(RAINDROP_KEY)
                    .fallback(Answer::status(403).body(format!("write key {RAINDROP_KEY} has no access to this project"))),
            )
            .await
            .expect("sink starts"),
        }
    }

    /// The `exporters:` section, credentials from the environment (see [`env`]).
    fn exporters(&self) -> String {
        let otlp = |id: &str, url: &str, auth: &str| {
            format!("  otlp/{id}:\n    endpoint: {url}\n    headers: {{Authorization: \"{auth}\"}}\n")
        };
        let bearer = "Bearer ${env:HOSTILE_TOKEN}";
        [
            otlp("plain", &self.plain.url(), bearer),
            otlp("straddle", &self.straddle.url(), bearer),
            otlp("json", &self.json.url(), bearer),
            otlp("basic", &self.basic.url(), "Basic ${env:HOSTILE_BASIC}"),
            otlp("lower", &self.lower.url(), bearer),
            otlp("partial", &self.partial.url(), bearer),
            otlp("redirect", &format!("{}?api_key=${{env:HOSTILE_QUERY_KEY}}", self.redirect.url()), bearer),
            format!("  ramp:\n    api_key: \"${{env:HOSTILE_RAMP_KEY}}\"\n    base_url: {}\n", self.ramp.url()),
            format!(
                "  raindrop:\n    write_key: \"${{env:HOSTILE_RAINDROP_KEY}}\"\n    base_url: {}\n",
                self.raindrop.url()
            ),
        ]
        .concat()
    }

    /// Every destination but the redirect target, with how many requests it received.
    fn received(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("otlp/plain", self.plain.requests().len()),
            ("otlp/straddle", self.straddle.requests().len()),
            ("otlp/json", self.json.requests().len()),
            ("otlp/basic", self.basic.requests().len()),
            ("otlp/lower", self.lower.requests().len()),
            ("otlp/partial", self.partial.requests().len()),
            ("otlp/redirect", self.redirect.requests().len()),
            ("ramp", self.ramp.requests().len()),
            ("raindrop", self.raindrop.requests().len()),
        ]
    }

    /// gencol sent every destination its credential, so each had the secret to echo
    /// (and answered with its scripted echo, not the sink's own 401).
    fn assert_credentials_were_sent(&self) {
        let bearer = format!("Bearer {TOKEN}");
        let basic = format!("Basic {}", basic_credential());
        let ramp = format!("Bearer {RAMP_KEY}");
        for (id, sink, want) in [
            ("otlp/plain", &self.plain, &bearer),
            ("otlp/straddle", &self.straddle, &bearer),
            ("otlp/json", &self.json, &bearer),
            ("otlp/basic", &self.basic, &basic),
            ("otlp/lower", &self.lower, &bearer),
            ("otlp/partial", &self.partial, &bearer),
            ("otlp/redirect", &self.redirect, &bearer),
            ("ramp", &self.ramp, &ramp),
        ] {
            let requests = sink.requests();
            assert!(!requests.is_empty(), "{id} got no request");
            assert!(
                requests.iter().all(|r| r.header("authorization") == Some(want.as_str())),
                "{id}: wrong credential"
            );
        }
        let raindrop = self.raindrop.requests();
        assert!(!raindrop.is_empty(), "raindrop got no request");
        let want = format!("Bearer {RAINDROP_KEY}");
        assert!(raindrop.iter().all(|r| r.header("authorization") == Some(want.as_str())), "raindrop: wrong key");
    }

    fn assert_redirect_target_untouched(&self) {
        let n = self.redirect_target.requests().len();
        assert_eq!(n, 0, "the redirect target received {n} requests: a redirect was followed");
    }
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("HOSTILE_TOKEN", TOKEN.to_owned()),
        ("HOSTILE_BASIC", basic_credential()),
        ("HOSTILE_QUERY_KEY", QUERY_KEY.to_owned()),
        ("HOSTILE_RAMP_KEY", RAMP_KEY.to_owned()),
        ("HOSTILE_RAINDROP_KEY", RAINDROP_KEY.to_owned()),
    ]
}

const IDS: [&str; 9] = [
    "otlp/plain",
    "otlp/straddle",
    "otlp/json",
    "otlp/basic",
    "otlp/lower",
    "otlp/partial",
    "otlp/redirect",
    "ramp",
    "raindrop",
];

fn yaml(exporters: &str) -> String {
    format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\nprocessors:\n  namespace: {{}}\nexporters:\n{exporters}service:\n  shutdown_timeout: 5s\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [namespace]\n      exporters: [{}]\n",
        IDS.join(", ")
    )
}

/// `gencol test-connection --config FILE` to its exit (killed after 60 s).
fn test_connection(config: &Path) -> Output {
    let mut cmd = Command::new(gencol_bin());
    cmd.arg("test-connection").arg("--config").arg(config).env_remove("RUST_LOG");
    for (k, v) in env() {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("gencol starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

// Multi-threaded: the sinks answer while gencol runs as a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_prints_no_secret_a_destination_echoes_and_follows_no_redirect() {
    let d = Destinations::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml(&d.exporters()).replace("{GEN_PORT}", &free_port().to_string())).unwrap();
    let out = tokio::task::spawn_blocking(move || test_connection(&config)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("{stdout}\n{stderr}");
    assert_ne!(out.status.code(), Some(0), "{all}");

    let line = |id: &str| -> String {
        let prefix = format!("{id}: ");
        stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no line for {id}:\n{all}")).to_owned()
    };
    // Each echo reached the output, masked.
    assert!(
        line("otlp/plain").starts_with("otlp/plain: FAILED: 401 invalid token *** for this dataset (from "),
        "{all}"
    );
    let straddle = line("otlp/straddle");
    assert!(straddle.starts_with("otlp/straddle: FAILED: 400 xxx") && straddle.contains("x***y"), "{straddle}");
    assert!(line("otlp/json").contains(r#"{"error":"unauthorized","authorization":"***"}"#), "{all}");
    let basic = line("otlp/basic");
    assert!(basic.starts_with("otlp/basic: FAILED: 401 bad credentials: Authorization: *** (***)"), "{basic}");
    assert!(line("otlp/lower").starts_with("otlp/lower: FAILED: 401 token *** revoked"), "{all}");
    assert_eq!(line("otlp/partial"), "otlp/partial: ok (200 OK)");
    assert!(stderr.contains("destination accepted the batch partially: span dropped: token *** is read-only"), "{all}");
    assert_eq!(
        line("otlp/redirect"),
        format!(
            "otlp/redirect: FAILED: 307 Temporary Redirect (redirect to http://127.0.0.1:{} not followed: exporters do not follow redirects; set endpoint to the final URL) (from {}?***)",
            port_of(&d.redirect_target.url()),
            d.redirect.url()
        )
    );
    assert!(line("ramp").starts_with("ramp: FAILED: 401 key *** is not enabled (base64 ***)"), "{all}");
    assert!(line("raindrop").starts_with("raindrop: FAILED: 403 write key *** has no access"), "{all}");

    d.assert_credentials_were_sent();
    d.assert_redirect_target_untouched();
    assert_no_secret(&all);
}

fn port_of(url: &str) -> String {
    url.split(':').nth(2).and_then(|rest| rest.split('/').next()).expect("a port").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_no_secret_a_destination_echoes_and_follows_no_redirect() {
    let d = Destinations::start().await;
    let env = env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Debug logs include the HTTP client's own lines: no secret in those either.
    let mut gencol = Gencol::start_configs(&[], &yaml(&d.exporters()), &["--log-level", "debug"], &env);
    let (status, _) = post_json(&gencol.generations_url(), &generation("hostile-1")).await;
    assert_eq!(status, 202);

    // Every destination answers the batch; then gencol has logged what it answered (a
    // 400 refuses the batch's content: "refused … spans", other 4xx "rejected the batch").
    let deadline = Instant::now() + WAIT;
    let answered = |l: &str| l.contains("destination rejected the batch") || l.contains("destination refused");
    let expected = |log: &str| {
        IDS.iter().filter(|id| **id != "otlp/partial").all(|id| {
            log.lines().any(|l| answered(l) && l.contains(&format!("\"{id}\"")))
                || log.lines().any(|l| answered(l) && l.contains(&format!("={id} ")))
        }) && log.contains("destination accepted the batch partially")
    };
    while !expected(&gencol.stderr()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = gencol.stderr();
    assert!(expected(&log), "not every destination's answer was logged within {WAIT:?}: {:?}\n{log}", d.received());
    assert!(gencol.stop(), "gencol exits 0 on SIGTERM:\n{}", gencol.stderr());
    let all = format!("{}\n{}", gencol.stdout(), gencol.stderr());

    assert!(all.contains("401 invalid token *** for this dataset"), "{all}");
    assert!(all.contains("x***y"), "the straddling token is masked whole: {all}");
    assert!(all.contains("rejected_spans=1"), "{all}");
    assert!(
        all.contains(&format!(
            "307 Temporary Redirect (redirect to http://127.0.0.1:{} not followed",
            port_of(&d.redirect_target.url())
        )),
        "{all}"
    );
    d.assert_credentials_were_sent();
    d.assert_redirect_target_untouched();
    assert_no_secret(&all);
}
