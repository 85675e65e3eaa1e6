//! What the hostile-client tests share (`hostile_clients.rs`, `stalled_uploads.rs`).

use std::time::{Duration, Instant};

use super::generation;

/// Generous: nothing here asserts speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Raises this test process's open files limit (gencol inherits it) so thousands of
/// client sockets fit; returns the limit in force.
pub fn raise_open_files_limit(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let raised = limit.maximum.map_or(want, |max| want.min(max));
    if setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum }).is_ok() {
        raised
    } else {
        current
    }
}

/// A pipeline from both receivers to `sink`, with extra receiver and service settings.
pub fn config(sink: &str, receiver_extra: &str, service_extra: &str) -> String {
    format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
{receiver_extra}
  otlp:
    endpoint: 127.0.0.1:{{OTLP_PORT}}
{receiver_extra}
exporters:
  otlp/sink:
    endpoint: {sink}
    encoding: proto
    retry: {{initial_interval: 100ms}}
service:
  shutdown_timeout: 5s
{service_extra}
  pipelines:
    traces: {{receivers: [generations, otlp], exporters: [otlp/sink]}}
"#
    )
}

/// Posts one generation on a new connection until it is accepted, as a gateway does: a
/// connection closed under it (by the connection limit) is tried again; any HTTP answer
/// other than 202 fails the test. Returns the attempts it took.
pub async fn post_until_accepted(url: &str, id: &str) -> usize {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let deadline = Instant::now() + PATIENCE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let body = serde_json::to_vec(&generation(id)).expect("JSON");
        let sent = client.post(url).header("content-type", "application/json").body(body).send();
        match tokio::time::timeout(PATIENCE, sent).await {
            Ok(Ok(resp)) => {
                assert_eq!(resp.status().as_u16(), 202, "{id}: {:?}", resp.text().await);
                return attempts;
            }
            Ok(Err(e)) => assert!(Instant::now() < deadline, "{id} never accepted: {e}"),
            Err(_) => panic!("{id}: no answer within {PATIENCE:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
