//! Ids here are recomputed from SHA-256 of the strings SPEC §3 documents, not taken from
//! `gencol_model::ids`, so a change to either side is caught.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gencol_config::{Loc, Located, Node};
use gencol_engine::{ComponentContext, Processor, ProcessorFactory};
use gencol_model::{Generation, Origin, SpanItem, generation_span};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{HierarchyFactory, HierarchySettings, SpanHierarchy};

fn sha(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn span_id(text: &str) -> String {
    hex::encode(&sha(text)[..8])
}

fn origin() -> Arc<Origin> {
    Arc::new(Origin {
        resource: gencol_model::service_resource("gencol"),
        scope: gencol_model::scope(),
        ..Default::default()
    })
}

/// A generation record as a gateway posts it; `start`/`end` in seconds after 10:00:00.
fn record(id: &str, trace: Value, start: f64, end: f64) -> Value {
    let at = |s: f64| 1_795_341_600_000_000_000u64 + (s * 1e9) as u64;
    json!({
        "id": id,
        "created_at": at(start),
        "completed_at": at(end),
        "provider": "OpenAI",
        "request": {
            "model": "openai/gpt-4o",
            "messages": [{"role": "user", "content": "Hello!"}],
            "user": "user_12345",
            "session_id": "session_abc",
            "trace": trace
        },
        "response": {
            "model": "openai/gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        }
    })
}

fn item(record: Value, origin: &Arc<Origin>) -> SpanItem {
    let g: Generation = serde_json::from_value(record).expect("valid record");
    generation_span(&g, origin)
}

fn settings(window_secs: u64, remember_secs: u64, max_traces: usize) -> HierarchySettings {
    HierarchySettings {
        group_window: gencol_config::Duration(Duration::from_secs(window_secs)),
        remember_for: gencol_config::Duration(Duration::from_secs(remember_secs)),
        max_traces,
    }
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

fn run(h: &mut SpanHierarchy, items: Vec<SpanItem>, now: Instant) -> Vec<SpanItem> {
    let mut items = items;
    h.process(&mut items, now);
    items
}

fn flushed(h: &mut SpanHierarchy, now: Instant, force: bool) -> Vec<SpanItem> {
    let mut out = Vec::new();
    h.flush(now, force, &mut out);
    out
}

fn hex_of(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn names(items: &[SpanItem]) -> Vec<&str> {
    items.iter().map(|i| i.span.name.as_str()).collect()
}

#[test]
fn seed_traces_get_one_root_named_after_trace_name() {
    // (seed, record id, trace metadata, expected trace id hex, root name, generation name)
    let ramp_trace = hex::encode(&sha("expense_analysis_001")[..16]);
    assert_eq!(ramp_trace, "a5475f808fa6162b8e6ef2f8c7720f77");
    let cases = [
        (
            "000 Ramp",
            "gen-ramp-1",
            json!({"trace_id": "expense_analysis_001", "trace_name": "Expense Processing Pipeline",
                   "generation_name": "Analyze Report", "department": "finance", "cost_center": "CC-1234"}),
            ramp_trace,
            "Expense Processing Pipeline",
            "Analyze Report",
        ),
        (
            "001 Raindrop",
            "gen-raindrop-1",
            json!({"trace_name": "Time Check", "feature": "assistant"}),
            hex::encode(&sha("gencol:trace:gen-raindrop-1")[..16]),
            "Time Check",
            "openai/gpt-4o",
        ),
        (
            "002 OpenTelemetry Collector",
            "gen-otlp-1",
            json!({"trace_id": "app_trace_001", "trace_name": "Chat Handler", "generation_name": "Generate Response",
                   "environment": "staging", "deployment": "us-east-1"}),
            hex::encode(&sha("app_trace_001")[..16]),
            "Chat Handler",
            "Generate Response",
        ),
    ];
    let origin = origin();
    for (seed, id, trace, trace_hex, root_name, gen_name) in cases {
        let mut h = SpanHierarchy::new(&HierarchySettings::default());
        let t0 = Instant::now();
        let out = run(&mut h, vec![item(record(id, trace, 0.0, 1.25), &origin)], t0);
        assert_eq!(names(&out), [gen_name], "{seed}: only the generation passes at once");
        let generation = &out[0].span;
        let root_id = span_id(&format!("gencol:root:{trace_hex}:{root_name}"));
        assert_eq!(hex_of(&generation.trace_id), trace_hex, "{seed}");
        assert_eq!(hex_of(&generation.span_id), span_id(&format!("gencol:gen:{id}")), "{seed}");
        assert_eq!(hex_of(&generation.parent_span_id), root_id, "{seed}: generation under the root");
        assert_eq!(generation.kind, 3, "{seed}");

        assert_eq!(h.next_deadline(), Some(secs(t0, 5.0)), "{seed}");
        assert!(flushed(&mut h, secs(t0, 4.9), false).is_empty(), "{seed}: held within the window");
        let released = flushed(&mut h, secs(t0, 5.0), false);
        assert_eq!(names(&released), [root_name], "{seed}");
        let root = &released[0];
        assert_eq!(hex_of(&root.span.span_id), root_id, "{seed}");
        assert_eq!(hex_of(&root.span.trace_id), trace_hex, "{seed}");
        assert!(root.span.parent_span_id.is_empty(), "{seed}: the root is topmost");
        assert_eq!(root.span.kind, 1, "{seed}: INTERNAL");
        assert_eq!(root.span.start_time_unix_nano, generation.start_time_unix_nano, "{seed}");
        assert_eq!(root.span.end_time_unix_nano, generation.end_time_unix_nano, "{seed}");
        assert!(root.span.attributes.is_empty() && root.span.status.is_none(), "{seed}");
        assert!(root.generation.is_none(), "{seed}");
        assert!(Arc::ptr_eq(&root.origin, &origin), "{seed}: shared spans keep the generation's origin");
        assert_eq!(h.next_deadline(), None, "{seed}");
    }
}

#[test]
fn spec_example_chains_parent_root_intermediate_generation() {
    let trace = json!({
        "trace_id": "expense_analysis_001", "trace_name": "Expense Processing Pipeline",
        "span_name": "Categorize", "generation_name": "Analyze Report",
        "parent_span_id": "0123456789abcdef", "department": "finance"
    });
    let mut h = SpanHierarchy::new(&HierarchySettings::default());
    let t0 = Instant::now();
    let out = run(&mut h, vec![item(record("gen-1732001234-abc", trace, 0.0, 1.25), &origin())], t0);
    let t = "a5475f808fa6162b8e6ef2f8c7720f77";
    let root_id = span_id(&format!("gencol:root:{t}:Expense Processing Pipeline:0123456789abcdef"));
    let mid_id = span_id(&format!("gencol:span:{t}:{root_id}:Categorize"));
    assert_eq!(hex_of(&out[0].span.parent_span_id), mid_id);

    let released = flushed(&mut h, secs(t0, 5.0), false);
    assert_eq!(names(&released), ["Expense Processing Pipeline", "Categorize"], "parents first");
    assert_eq!(hex_of(&released[0].span.span_id), root_id);
    assert_eq!(hex_of(&released[0].span.parent_span_id), "0123456789abcdef");
    assert_eq!(hex_of(&released[1].span.span_id), mid_id);
    assert_eq!(hex_of(&released[1].span.parent_span_id), root_id);
    assert_eq!(released[1].span.kind, 1);
}

#[test]
fn span_name_alone_hangs_under_the_given_parent_or_nothing() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&HierarchySettings::default());
    let with_parent = json!({"trace_id": "t-1", "span_name": "Retrieve", "parent_span_id": "00f067aa0ba902b7"});
    let without = json!({"trace_id": "t-2", "span_name": "Retrieve"});
    let out = run(
        &mut h,
        vec![item(record("g1", with_parent, 0.0, 1.0), &origin), item(record("g2", without, 0.0, 1.0), &origin)],
        t0,
    );
    let t1 = hex::encode(&sha("t-1")[..16]);
    let t2 = hex::encode(&sha("t-2")[..16]);
    let under_parent = span_id(&format!("gencol:span:{t1}:00f067aa0ba902b7:Retrieve"));
    let topmost = span_id(&format!("gencol:span:{t2}::Retrieve"));
    assert_eq!(hex_of(&out[0].span.parent_span_id), under_parent);
    assert_eq!(hex_of(&out[1].span.parent_span_id), topmost);

    let released = flushed(&mut h, secs(t0, 5.0), false);
    let by_trace = |t: &str| released.iter().find(|s| hex_of(&s.span.trace_id) == t).expect("released");
    assert_eq!(hex_of(&by_trace(&t1).span.span_id), under_parent);
    assert_eq!(hex_of(&by_trace(&t1).span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(hex_of(&by_trace(&t2).span.span_id), topmost);
    assert!(by_trace(&t2).span.parent_span_id.is_empty());
}

#[test]
fn generations_of_one_trace_within_the_window_share_one_root() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&HierarchySettings::default());
    let trace = |span: &str| json!({"trace_id": "run-7", "trace_name": "Agent Run", "span_name": span});
    // Arrivals at 0s, 2s and 4s; the second started first, the third ended last.
    let batches = [
        (0.0, record("g1", trace("Plan"), 10.0, 11.0)),
        (2.0, record("g2", trace("Plan"), 9.5, 10.5)),
        (4.0, record("g3", trace("Act"), 12.0, 14.0)),
    ];
    let mut parents = Vec::new();
    for (arrival, rec) in batches {
        let out = run(&mut h, vec![item(rec, &origin)], secs(t0, arrival));
        assert_eq!(out.len(), 1, "only the generation passes at once");
        parents.push(hex_of(&out[0].span.parent_span_id));
    }
    assert_eq!(parents[0], parents[1], "same name, same intermediate span");
    assert_ne!(parents[0], parents[2]);

    // 5s after the latest join (4s), not after the first.
    assert_eq!(h.next_deadline(), Some(secs(t0, 9.0)));
    assert!(flushed(&mut h, secs(t0, 8.9), false).is_empty());
    let released = flushed(&mut h, secs(t0, 9.0), false);
    assert_eq!(names(&released), ["Agent Run", "Plan", "Act"]);

    let (root, plan, act) = (&released[0].span, &released[1].span, &released[2].span);
    let at = |s: f64| 1_795_341_600_000_000_000u64 + (s * 1e9) as u64;
    assert_eq!((root.start_time_unix_nano, root.end_time_unix_nano), (at(9.5), at(14.0)));
    assert_eq!((plan.start_time_unix_nano, plan.end_time_unix_nano), (at(9.5), at(11.0)));
    assert_eq!((act.start_time_unix_nano, act.end_time_unix_nano), (at(12.0), at(14.0)));
    assert_eq!(hex_of(&plan.span_id), parents[0]);
    assert_eq!(hex_of(&act.span_id), parents[2]);
    assert_eq!(plan.parent_span_id, root.span_id);
    assert_eq!(act.parent_span_id, root.span_id);
}

#[test]
fn one_batch_with_several_generations_makes_one_root() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&HierarchySettings::default());
    let trace = json!({"trace_id": "batch", "trace_name": "Batch"});
    let items = (0..5).map(|i| item(record(&format!("g{i}"), trace.clone(), i as f64, i as f64 + 1.0), &origin));
    let out = run(&mut h, items.collect(), t0);
    assert_eq!(out.len(), 5);
    let released = flushed(&mut h, secs(t0, 5.0), false);
    assert_eq!(names(&released), ["Batch"]);
    assert!(out.iter().all(|g| g.span.parent_span_id == released[0].span.span_id));
}

#[test]
fn late_generation_attaches_to_the_sent_root_without_resending_it() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&settings(5, 600, 100));
    let trace = |span: &str| json!({"trace_id": "late", "trace_name": "Late Trace", "span_name": span});
    run(&mut h, vec![item(record("g1", trace("Plan"), 0.0, 1.0), &origin)], t0);
    let released = flushed(&mut h, secs(t0, 5.0), false);
    assert_eq!(names(&released), ["Late Trace", "Plan"]);
    assert_eq!(h.remembered_traces(), 1);

    // Same names a minute later: ids match, nothing is held or sent again.
    let out = run(&mut h, vec![item(record("g2", trace("Plan"), 60.0, 61.0), &origin)], secs(t0, 60.0));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].span.parent_span_id, released[1].span.span_id);
    assert_eq!(h.next_deadline(), None);
    assert!(flushed(&mut h, secs(t0, 60.0), true).is_empty());

    // A new span name under the sent root: only the new span is sent, under the same root.
    let out = run(&mut h, vec![item(record("g3", trace("Review"), 70.0, 71.0), &origin)], secs(t0, 70.0));
    let again = flushed(&mut h, secs(t0, 75.0), false);
    assert_eq!(names(&again), ["Review"]);
    assert_eq!(again[0].span.parent_span_id, released[0].span.span_id);
    assert_eq!(out[0].span.parent_span_id, again[0].span.span_id);

    // After `remember_for`, the trace is forgotten and its shared spans are sent again.
    run(&mut h, Vec::new(), secs(t0, 700.0));
    assert_eq!(h.remembered_traces(), 0);
    run(&mut h, vec![item(record("g4", trace("Plan"), 700.0, 701.0), &origin)], secs(t0, 700.0));
    let resent = flushed(&mut h, secs(t0, 705.0), false);
    assert_eq!(names(&resent), ["Late Trace", "Plan"]);
    assert_eq!(resent[0].span.span_id, released[0].span.span_id);
}

#[test]
fn a_generation_after_the_window_but_before_the_timer_counts_as_late() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&HierarchySettings::default());
    let trace = json!({"trace_id": "slow", "trace_name": "Slow"});
    run(&mut h, vec![item(record("g1", trace.clone(), 0.0, 1.0), &origin)], t0);
    // The pipeline's timer has not fired yet; the next batch releases the root itself.
    let out = run(&mut h, vec![item(record("g2", trace, 6.0, 7.0), &origin)], secs(t0, 6.0));
    assert_eq!(names(&out), ["openai/gpt-4o", "Slow"]);
    assert_eq!(out[0].span.parent_span_id, out[1].span.span_id);
    assert_eq!(h.held_traces(), 0);
}

#[test]
fn held_traces_beyond_max_traces_release_the_oldest_early() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&settings(5, 600, 2));
    let gen_in =
        |trace: &str, id: &str| item(record(id, json!({"trace_id": trace, "trace_name": trace}), 0.0, 1.0), &origin);

    run(&mut h, vec![gen_in("A", "a1")], t0);
    run(&mut h, vec![gen_in("B", "b1")], secs(t0, 1.0));
    // A joined again: B is now the one waiting longest since its last join.
    run(&mut h, vec![gen_in("A", "a2")], secs(t0, 2.0));
    let out = run(&mut h, vec![gen_in("C", "c1")], secs(t0, 3.0));
    assert_eq!(names(&out), ["openai/gpt-4o", "B"], "B released early, nothing lost");
    assert_eq!(h.held_traces(), 2);
    assert_eq!(h.next_deadline(), Some(secs(t0, 7.0)));

    let rest = flushed(&mut h, secs(t0, 3.0), true);
    assert_eq!(names(&rest), ["A", "C"], "force releases everything, oldest first");
    assert_eq!(h.held_traces(), 0);
    assert_eq!(h.next_deadline(), None);

    // Remembered ids are bounded too: B (remembered first) was forgotten and is sent again.
    assert_eq!(h.remembered_traces(), 2);
    let mut late = |trace: &str, id: &str, at: f64| {
        let mut h_out = run(&mut h, vec![gen_in(trace, id)], secs(t0, at));
        h_out.extend(flushed(&mut h, secs(t0, at), true));
        h_out
    };
    assert_eq!(names(&late("A", "a3", 10.0)), ["openai/gpt-4o"]);
    assert_eq!(names(&late("B", "b2", 11.0)), ["openai/gpt-4o", "B"]);
}

#[test]
fn spans_without_trace_names_pass_untouched() {
    let origin = origin();
    let t0 = Instant::now();
    let mut h = SpanHierarchy::new(&HierarchySettings::default());
    let plain = item(record("g1", json!({"trace_id": "x", "parent_span_id": "0123456789abcdef"}), 0.0, 1.0), &origin);
    let mut foreign = plain.clone();
    foreign.generation = None;
    foreign.span.name = "from otlp".into();
    foreign.span.parent_span_id = vec![7; 8];
    let out = run(&mut h, vec![plain.clone(), foreign.clone()], t0);
    assert_eq!(out[0].span, plain.span);
    assert_eq!(out[1].span, foreign.span);
    assert_eq!(hex_of(&out[0].span.parent_span_id), "0123456789abcdef");
    assert_eq!(h.next_deadline(), None);
    assert_eq!(h.held_traces(), 0);
}

#[test]
fn configure_without_settings_uses_the_defaults() {
    let loc = Loc { file: "gencol.yaml".into(), line: 3, column: 3 };
    let ctx = ComponentContext {
        id: gencol_config::ComponentId { kind: "hierarchy".into(), name: None },
        base_dir: ".".into(),
    };
    let config = HierarchyFactory.configure(&ctx, &Located { value: Node::Null, loc: loc.clone() });
    assert!(config.is_ok());
    let defaults = HierarchySettings::default();
    assert_eq!(defaults.group_window.0, Duration::from_secs(5));
    assert_eq!(defaults.remember_for.0, Duration::from_secs(600));
    assert_eq!(defaults.max_traces, 100_000);

    let zero = HierarchySettings { max_traces: 0, ..HierarchySettings::default() };
    let errors = zero.check(&Located { value: Node::Null, loc }).expect_err("refused");
    assert_eq!(errors[0].message, "max_traces must be at least 1");
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(3));
}

#[test]
fn configure_decodes_settings_and_points_at_bad_ones() {
    use crate::settings::written::{at, context, map, text};
    let ctx = context("hierarchy");
    let config = map(
        1,
        vec![("group_window", text(2, "250ms")), ("remember_for", text(3, "1m")), ("max_traces", at(4, Node::Int(10)))],
    );
    assert!(HierarchyFactory.configure(&ctx, &config).is_ok());
    let decoded: HierarchySettings = crate::settings::decode_or_default(&config).expect("decodes");
    assert_eq!(decoded, settings(0, 60, 10).with_window(Duration::from_millis(250)));

    let zero = map(1, vec![("max_traces", at(7, Node::Int(0)))]);
    let errors = HierarchyFactory.configure(&ctx, &zero).err().expect("refused");
    assert_eq!(errors[0].message, "max_traces must be at least 1");
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(7));

    let unknown = map(1, vec![("group_windw", text(5, "5s"))]);
    let errors = HierarchyFactory.configure(&ctx, &unknown).err().expect("refused");
    assert!(errors[0].message.contains("group_windw"), "{}", errors[0].message);
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(5));

    let no_unit = map(1, vec![("group_window", at(6, Node::Int(5)))]);
    let errors = HierarchyFactory.configure(&ctx, &no_unit).err().expect("refused");
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(6), "{}", errors[0].message);
}

impl HierarchySettings {
    fn with_window(mut self, window: Duration) -> Self {
        self.group_window = gencol_config::Duration(window);
        self
    }
}

/// A hierarchy that keeps its state in a journal in `dir` (as with a disk queue).
fn journaled(dir: &std::path::Path) -> SpanHierarchy {
    SpanHierarchy::with_journal(&settings(60, 600, 1000), dir).expect("journal opens")
}

fn roots(items: &[SpanItem]) -> Vec<(&str, u64, u64)> {
    items
        .iter()
        .filter(|i| i.generation.is_none())
        .map(|i| (i.span.name.as_str(), i.span.start_time_unix_nano, i.span.end_time_unix_nano))
        .collect()
}

#[test]
fn an_open_trace_survives_a_crash_and_widens_with_generations_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    let trace = json!({"trace_id": "crash-1", "trace_name": "Root"});
    let t0 = Instant::now();
    let start = |s: f64| 1_795_341_600_000_000_000u64 + (s * 1e9) as u64;
    {
        let mut h = journaled(dir.path());
        run(&mut h, vec![item(record("g1", trace.clone(), 0.0, 1.0), &origin)], t0);
        // Dropped without a flush: as after SIGKILL, only the journal is left.
    }
    let mut h = journaled(dir.path());
    assert_eq!(h.held_traces(), 1, "the open trace is held again");
    let out = run(&mut h, vec![item(record("g2", trace, 2.0, 5.0), &origin)], Instant::now());
    assert!(roots(&out).is_empty(), "the window is still open");
    let out = flushed(&mut h, Instant::now() + Duration::from_secs(61), false);
    assert_eq!(roots(&out), [("Root", start(0.0), start(5.0))], "one root, earliest start to latest end");
    let _ = t0;
}

#[test]
fn a_journal_riding_on_the_queues_gets_back_from_them_what_a_power_loss_took() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    let root = json!({"trace_id": "power-1", "trace_name": "Root"});
    let other = json!({"trace_id": "power-2", "trace_name": "Other"});
    let start = |s: f64| 1_795_341_600_000_000_000u64 + (s * 1e9) as u64;
    let wall_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let (durable_len, written_at, queued) = {
        let mut h = journaled(dir.path());
        assert!(h.read_back_from(true).is_some(), "a journal asks for the queues' records");
        h.replayed();
        run(&mut h, vec![item(record("g1", root.clone(), 0.0, 1.0), &origin)], Instant::now());
        // As a disk queue does before it writes down what it delivered.
        let durable_len = h.journal_made_durable();
        let written_at = wall_ms();
        // Not fsynced before its 202: the disk queues hold these generations.
        let queued = run(
            &mut h,
            vec![item(record("g2", root, 2.0, 5.0), &origin), item(record("g3", other, 3.0, 4.0), &origin)],
            Instant::now(),
        );
        (durable_len, written_at, queued)
    };
    // A power loss takes what was not fsynced (the drop's own last fsync included).
    let journal = std::fs::OpenOptions::new().write(true).open(dir.path().join("journal")).unwrap();
    journal.set_len(durable_len).unwrap();
    let mut h = journaled(dir.path());
    assert_eq!(h.held_traces(), 1, "the journal alone knows only the first generation");
    let since = h.read_back_from(true).expect("read back");
    assert!(since <= written_at, "the records written after the last durable mark are read back");
    let mut out = Vec::new();
    // Twice, as two disk queues of the pipeline would give them: joining again changes nothing.
    h.replay(queued.clone(), written_at, &mut out);
    h.replay(queued, written_at, &mut out);
    h.replayed();
    assert!(roots(&out).is_empty(), "the windows are still open");
    assert_eq!(h.held_traces(), 2);
    let out = flushed(&mut h, Instant::now() + Duration::from_secs(61), false);
    let mut got = roots(&out);
    got.sort();
    assert_eq!(
        got,
        [("Other", start(3.0), start(4.0)), ("Root", start(0.0), start(5.0))],
        "one root a trace, earliest start to latest end across the power loss"
    );
}

#[test]
fn a_root_remembered_until_after_the_last_stop_is_not_made_again_by_the_records_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    let trace = json!({"trace_id": "downtime-1", "trace_name": "Root"});
    let wall_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // No group window, ids remembered for 1 s.
    let open = || SpanHierarchy::with_journal(&settings(0, 1, 1000), dir.path()).expect("journal opens");
    let (late, written_at) = {
        let mut h = open();
        h.read_back_from(true);
        h.replayed();
        run(&mut h, vec![item(record("g1", trace.clone(), 0.0, 1.0), &origin)], Instant::now());
        assert_eq!(roots(&flushed(&mut h, Instant::now(), false)).len(), 1);
        assert!(h.seal(1));
        h.durable(1);
        // A late generation joins the sent root: the queue holds it, the journal nothing new.
        let written_at = wall_ms();
        let late = run(&mut h, vec![item(record("g2", trace, 2.0, 3.0), &origin)], Instant::now());
        assert!(roots(&late).is_empty());
        (late, written_at)
    };
    // Down for longer than `remember_for`.
    std::thread::sleep(Duration::from_millis(1_200));
    let mut h = open();
    let mut out = Vec::new();
    assert!(h.read_back_from(true).is_some());
    h.replay(late, written_at, &mut out);
    h.replayed();
    out.extend(flushed(&mut h, Instant::now() + Duration::from_secs(120), false));
    assert!(roots(&out).is_empty(), "the root was sent before the stop: not again, not with a narrower range");
}

#[test]
fn a_root_released_and_durable_is_not_sent_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    let trace = json!({"trace_id": "crash-2", "trace_name": "Root"});
    {
        let mut h = journaled(dir.path());
        let t0 = Instant::now();
        run(&mut h, vec![item(record("g1", trace.clone(), 0.0, 1.0), &origin)], t0);
        let out = flushed(&mut h, t0 + Duration::from_secs(61), false);
        assert_eq!(roots(&out).len(), 1);
        assert!(h.seal(1), "the release waits to be known durable");
        h.durable(1);
    }
    let mut h = journaled(dir.path());
    assert_eq!((h.held_traces(), h.remembered_traces()), (0, 1));
    // A late generation of the same trace attaches without re-sending the root.
    let out = run(&mut h, vec![item(record("g2", trace, 2.0, 3.0), &origin)], Instant::now());
    assert!(roots(&out).is_empty());
    assert!(flushed(&mut h, Instant::now() + Duration::from_secs(120), false).is_empty());
}

#[test]
fn a_root_released_but_not_yet_durable_is_sent_again_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    let trace = json!({"trace_id": "crash-3", "trace_name": "Root"});
    {
        let mut h = journaled(dir.path());
        let t0 = Instant::now();
        run(&mut h, vec![item(record("g1", trace, 0.0, 1.0), &origin)], t0);
        assert_eq!(roots(&flushed(&mut h, t0 + Duration::from_secs(61), false)).len(), 1);
        // Crash before the exporters' queues fsynced the root.
    }
    let mut h = journaled(dir.path());
    assert_eq!(h.held_traces(), 1);
    let out = flushed(&mut h, Instant::now() + Duration::from_secs(61), false);
    assert_eq!(roots(&out).len(), 1, "the root goes out again, with the same id");
}

#[test]
fn shutdown_keeps_open_traces_on_disk_and_a_torn_tail_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    {
        let mut h = journaled(dir.path());
        let t0 = Instant::now();
        for i in 0..3 {
            let trace = json!({"trace_id": format!("t{i}"), "trace_name": "Root"});
            run(&mut h, vec![item(record(&format!("g{i}"), trace, 0.0, 1.0), &origin)], t0);
        }
        assert!(flushed(&mut h, t0, true).is_empty(), "shutdown keeps them for the next start");
    }
    // A crash in the middle of writing an entry leaves a torn tail.
    let journal = dir.path().join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&journal, &bytes).unwrap();
    let mut h = journaled(dir.path());
    assert_eq!(h.held_traces(), 3);
    assert_eq!(roots(&flushed(&mut h, Instant::now() + Duration::from_secs(61), false)).len(), 3);
}

#[test]
fn the_journal_is_rewritten_from_the_live_state_when_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin();
    let mut h = journaled(dir.path());
    let t0 = Instant::now();
    let big = "x".repeat(2000);
    // Many generations of one trace: the journal grows by an entry each, the state does not.
    for i in 0..6000 {
        let trace = json!({"trace_id": "one", "trace_name": big.clone()});
        run(&mut h, vec![item(record(&format!("g{i}"), trace, 0.0, 1.0), &origin)], t0);
        if i % 100 == 0 {
            h.seal(i);
            h.durable(i);
        }
    }
    let len = std::fs::metadata(dir.path().join("journal")).unwrap().len();
    assert!(len < 9 * 1024 * 1024, "rewritten: {len} bytes");
    // The replaced journals are deleted by a thread of their own, soon.
    let leftovers = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".old"))
            .count()
    };
    let all_deleted = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while leftovers() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        leftovers() == 0
    };
    assert!(all_deleted(), "replaced journals are deleted");
    drop(h);
    // One left by a crash between the rename and its deletion goes at the next open (which
    // rewrites the journal, and deletes the one it replaces on its thread).
    let leftover = dir.path().join("journal.7.old");
    std::fs::write(&leftover, b"replaced").unwrap();
    let h = journaled(dir.path());
    assert_eq!(h.held_traces(), 1);
    assert!(!leftover.exists(), "a leftover replaced journal is deleted at open");
    assert!(all_deleted(), "and the one the open replaced, soon");
}
