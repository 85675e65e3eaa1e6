//! What can be checked here of `deploy/`: the container's and the Kubernetes ConfigMap's
//! gencol configs validate and run (health answers where the probes look), the manifests
//! parse and agree with that config (ports, probes, volume at `service.data_dir`), the
//! Dockerfile runs the binary as non-root with that config, and `systemd-analyze verify`
//! accepts the unit.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// `gencol validate` on `text`, with the backend's environment set.
fn validate(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(gencol_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .env("OTLP_ENDPOINT", "http://127.0.0.1:9/v1/traces")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn manifests() -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read("kubernetes/gencol.yaml")).expect("the manifests are YAML")
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes/gencol.yaml"))
}

#[test]
fn the_shipped_configs_validate() {
    let (ok, stderr) = validate(&read("config.yaml"));
    assert!(ok, "deploy/config.yaml: {stderr}");
    let docs = manifests();
    let config = kind(&docs, "ConfigMap")["data"]["config.yaml"].as_str().expect("config.yaml in the ConfigMap");
    let (ok, stderr) = validate(config);
    assert!(ok, "the ConfigMap's config.yaml: {stderr}");
    // The container image and the ConfigMap run the same pipeline.
    let parse = |t: &str| serde_saphyr::from_str::<Value>(t).expect("config YAML");
    assert_eq!(parse(config), parse(&read("config.yaml")));
}

#[test]
fn the_manifests_agree_with_the_config() {
    let docs = manifests();
    for doc in &docs {
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string() && doc["metadata"]["name"].is_string(),
            "{doc}"
        );
    }
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: Vec<(String, i64)> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_owned(), p["containerPort"].as_i64().unwrap_or_default()))
        .collect();
    // Each port the config listens on (0.0.0.0:PORT) is a container port, and back.
    let config: Value =
        serde_saphyr::from_str(kind(&docs, "ConfigMap")["data"]["config.yaml"].as_str().unwrap()).expect("config YAML");
    let listens = [
        &config["receivers"]["generations"]["endpoint"],
        &config["receivers"]["otlp"]["endpoint"],
        &config["receivers"]["otlp"]["grpc"]["endpoint"],
        &config["extensions"]["health_check"]["endpoint"],
        &config["service"]["telemetry"]["metrics"]["prometheus"]["endpoint"],
    ];
    let mut wanted: Vec<i64> =
        listens.iter().map(|e| e.as_str().and_then(|e| e.rsplit(':').next()?.parse().ok()).expect("a port")).collect();
    let mut exposed: Vec<i64> = ports.iter().map(|(_, p)| *p).collect();
    wanted.sort();
    exposed.sort();
    assert_eq!(wanted, exposed);
    let health_port = ports.iter().find(|(n, _)| n == "health").map(|(_, p)| *p);
    assert_eq!(health_port, Some(13133));
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/");
    // The disk queue's volume is mounted where service.data_dir points.
    let data_dir = config["service"]["data_dir"].as_str().expect("data_dir");
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let data = mounts.iter().find(|m| m["mountPath"] == data_dir).expect("a volume at service.data_dir");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == data["name"]).expect("its volume");
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], kind(&docs, "PersistentVolumeClaim")["metadata"]["name"]);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "one gencol at a time on the disk queue");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // The Service sends the receivers' ports to the pod.
    let service = kind(&docs, "Service");
    let targets: Vec<&str> =
        service["spec"]["ports"].as_array().unwrap().iter().filter_map(|p| p["targetPort"].as_str()).collect();
    assert_eq!(targets, ["generations", "otlp-grpc", "otlp-http"]);
}

#[tokio::test]
async fn the_container_config_runs_and_health_answers_where_the_probes_look() {
    let sink = gencol_testkit::OtlpSink::start().await.unwrap();
    // The deploy config, on free ports and a temporary data_dir, as a container would run it.
    let health = free_port();
    let metrics = free_port();
    let yaml = read("config.yaml")
        .replace("0.0.0.0:4320", "127.0.0.1:{GEN_PORT}")
        .replace("0.0.0.0:4318", "127.0.0.1:{OTLP_PORT}")
        .replace("0.0.0.0:4317", &format!("127.0.0.1:{}", free_port()))
        .replace("0.0.0.0:13133", &format!("127.0.0.1:{health}"))
        .replace("0.0.0.0:8888", &format!("127.0.0.1:{metrics}"))
        .replace("/var/lib/gencol", "{DIR}/data");
    let gencol = Gencol::start_with_env(&yaml, &[("OTLP_ENDPOINT", &sink.url())]);
    let resp = reqwest::get(format!("http://127.0.0.1:{health}/")).await.expect("health answers");
    assert_eq!(resp.status(), 200);
    let (status, _) = post_json(&gencol.generations_url(), &generation("deploy-1")).await;
    assert_eq!(status, 202);
    let spans = sink.wait_for_spans(1, std::time::Duration::from_secs(15)).await;
    assert_eq!(spans.len(), 1);
    assert!(
        gencol.stderr().lines().any(|l| serde_json::from_str::<Value>(l).is_ok()),
        "logs are JSON: {}",
        gencol.stderr()
    );
}

#[test]
fn the_image_runs_gencol_as_non_root_on_the_shipped_config() {
    let dockerfile = read("Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().expect("stages");
    assert!(last_stage.starts_with("gcr.io/distroless/cc-debian12:nonroot"), "{last_stage}");
    assert!(last_stage.contains("USER 65532:65532"));
    assert!(last_stage.contains("COPY deploy/config.yaml /etc/gencol/config.yaml"));
    assert!(last_stage.contains(r#"CMD ["run", "--config", "/etc/gencol/config.yaml"]"#));
    assert!(dockerfile.contains("cargo build --release --locked -p gencol"));
}

#[test]
fn systemd_accepts_the_unit() {
    let analyze = which("systemd-analyze").expect("systemd-analyze (package `systemd`; .ci/run installs it)");
    // The unit as installed, pointing at this build's binary.
    let dir = tempfile::tempdir().unwrap();
    let unit = read("systemd/gencol.service").replace("/usr/local/bin/gencol", gencol_bin());
    let path = dir.path().join("gencol.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about the host (no running systemd in a container) are not about the unit.
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("gencol.service")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "{stderr}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(program)).find(|p| p.is_file())
}
