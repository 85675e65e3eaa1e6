use std::sync::Arc;
use std::time::Instant;

use gencol_config::{Loc, Located, Node};
use gencol_engine::{ComponentContext, Processor, ProcessorFactory};
use gencol_model::attributes::{self as attr, get, get_str};
use gencol_model::{Generation, Origin, SpanItem, generation_span};
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value as AttrValue};
use serde_json::{Value, json};

use super::{NamespaceFactory, NamespaceSettings, RequestAttributes};

fn item(trace: Value) -> SpanItem {
    let record = json!({
        "id": "gen-ns-1",
        "created_at": "2026-11-22T10:00:00.000Z",
        "completed_at": "2026-11-22T10:00:01.250Z",
        "provider": "OpenAI",
        "request": {
            "model": "openai/gpt-4o",
            "messages": [{"role": "user", "content": "Analyze this expense report..."}],
            "user": "user_12345",
            "session_id": "session_abc",
            "trace": trace
        }
    });
    let g: Generation = serde_json::from_value(record).expect("valid record");
    generation_span(&g, &Arc::new(Origin::default()))
}

fn annotated(settings: &NamespaceSettings, item: SpanItem) -> Vec<KeyValue> {
    let mut items = vec![item];
    RequestAttributes::new(settings).process(&mut items, Instant::now());
    items.remove(0).span.attributes
}

fn strings(values: &[&str]) -> AttrValue {
    AttrValue::ArrayValue(ArrayValue {
        values: values.iter().map(|s| AnyValue { value: Some(AttrValue::StringValue((*s).into())) }).collect(),
    })
}

#[test]
fn request_names_become_the_documented_attributes() {
    let trace = json!({
        "trace_id": "expense_analysis_001",
        "trace_name": "Expense Processing Pipeline",
        "span_name": "Categorize",
        "generation_name": "Analyze Report",
        "parent_span_id": "0123456789abcdef",
        "department": "finance",
        "cost_center": "CC-1234",
        "priority": 3,
        "ratio": 0.5,
        "urgent": true,
        "tags": ["a", "b"],
        "mixed": [1, {"x": 2}],
        "team": {"name": "ap", "lead": {"id": 7}, "empty": {}},
        "nothing": null
    });
    let a = annotated(&NamespaceSettings::default(), item(trace));
    let expected: [(&str, AttrValue); 15] = [
        ("user.id", AttrValue::StringValue("user_12345".into())),
        ("session.id", AttrValue::StringValue("session_abc".into())),
        ("gen_ai.conversation.id", AttrValue::StringValue("session_abc".into())),
        ("trace.metadata.department", AttrValue::StringValue("finance".into())),
        ("trace.metadata.cost_center", AttrValue::StringValue("CC-1234".into())),
        ("trace.metadata.priority", AttrValue::IntValue(3)),
        ("trace.metadata.ratio", AttrValue::DoubleValue(0.5)),
        ("trace.metadata.urgent", AttrValue::BoolValue(true)),
        ("trace.metadata.tags", strings(&["a", "b"])),
        ("trace.metadata.mixed", AttrValue::StringValue(r#"[1,{"x":2}]"#.into())),
        ("trace.metadata.team.name", AttrValue::StringValue("ap".into())),
        ("trace.metadata.team.lead.id", AttrValue::IntValue(7)),
        ("trace.metadata.team.empty", AttrValue::StringValue("{}".into())),
        ("trace.metadata.nothing", AttrValue::StringValue("null".into())),
        ("gen_ai.request.model", AttrValue::StringValue("openai/gpt-4o".into())),
    ];
    for (key, value) in expected {
        assert_eq!(get(&a, key), Some(&value), "{key}");
    }
    for reserved in ["trace_id", "trace_name", "span_name", "generation_name", "parent_span_id"] {
        let key = format!("trace.metadata.{reserved}");
        assert!(get(&a, &key).is_none(), "{key} is reserved, not metadata");
    }
    assert!(get(&a, "trace.metadata.team").is_none(), "objects flatten, no JSON blob");
}

#[test]
fn custom_names_and_prefix_are_used() {
    let settings = NamespaceSettings {
        metadata_prefix: "app.".into(),
        user_attribute: "enduser.id".into(),
        session_attribute: "conversation".into(),
    };
    let a = annotated(&settings, item(json!({"feature": "assistant", "env": {"region": "eu"}})));
    assert_eq!(get_str(&a, "enduser.id"), Some("user_12345"));
    assert_eq!(get_str(&a, "conversation"), Some("session_abc"));
    assert_eq!(get_str(&a, "gen_ai.conversation.id"), Some("session_abc"));
    assert_eq!(get_str(&a, "app.feature"), Some("assistant"));
    assert_eq!(get_str(&a, "app.env.region"), Some("eu"));
    assert!(get(&a, "user.id").is_none() && get(&a, "session.id").is_none());
    assert!(get(&a, "trace.metadata.feature").is_none());

    let raw = NamespaceSettings { metadata_prefix: String::new(), ..NamespaceSettings::default() };
    let a = annotated(&raw, item(json!({"feature": "assistant"})));
    assert_eq!(get_str(&a, "feature"), Some("assistant"), "empty prefix keeps keys as written");
}

#[test]
fn existing_attributes_are_not_overwritten() {
    let mut span = item(json!({"department": "finance", "a": {"b": 1}, "a.b": 2}));
    span.span.attributes.push(attr::string("user.id", "from-sender"));
    span.span.attributes.push(attr::string("trace.metadata.department", "kept"));
    let a = annotated(&NamespaceSettings::default(), span);
    let count = |key: &str| a.iter().filter(|kv| kv.key == key).count();
    assert_eq!(get_str(&a, "user.id"), Some("from-sender"));
    assert_eq!(count("user.id"), 1);
    assert_eq!(get_str(&a, "trace.metadata.department"), Some("kept"));
    assert_eq!(count("trace.metadata.department"), 1);
    assert_eq!(get(&a, "trace.metadata.a.b"), Some(&AttrValue::IntValue(1)), "first writer wins");
    assert_eq!(count("trace.metadata.a.b"), 1);
}

#[test]
fn spans_without_a_generation_and_absent_fields_add_nothing() {
    let mut foreign = item(json!({"feature": "x"}));
    foreign.generation = None;
    let before = foreign.span.attributes.clone();
    assert_eq!(annotated(&NamespaceSettings::default(), foreign), before);

    let record = json!({
        "id": "bare", "created_at": 1, "completed_at": 2, "request": {"model": "m"}
    });
    let g: Generation = serde_json::from_value(record).expect("valid record");
    let bare = generation_span(&g, &Arc::new(Origin::default()));
    let before = bare.span.attributes.clone();
    assert_eq!(annotated(&NamespaceSettings::default(), bare), before);
}

#[test]
fn configure_checks_names() {
    assert!(NamespaceFactory.adds_request_attributes());
    let loc = Loc { file: "gencol.yaml".into(), line: 9, column: 5 };
    let ctx = ComponentContext {
        id: gencol_config::ComponentId { kind: "namespace".into(), name: None },
        base_dir: ".".into(),
    };
    assert!(NamespaceFactory.configure(&ctx, &Located { value: Node::Null, loc: loc.clone() }).is_ok());
    let bad = NamespaceSettings { user_attribute: " ".into(), ..NamespaceSettings::default() };
    let errors = bad.check(&Located { value: Node::Null, loc }).expect_err("refused");
    assert_eq!(errors[0].message, "user_attribute must not be empty");
}

#[test]
fn configure_decodes_settings_and_points_at_bad_ones() {
    use crate::settings::written::{context, map, text};
    let ctx = context("namespace");
    let config = map(1, vec![("metadata_prefix", text(2, "app."))]);
    let decoded: NamespaceSettings = crate::settings::decode_or_default(&config).expect("decodes");
    assert_eq!(decoded, NamespaceSettings { metadata_prefix: "app.".into(), ..NamespaceSettings::default() });
    assert!(NamespaceFactory.configure(&ctx, &config).is_ok());

    let empty = map(1, vec![("session_attribute", text(4, ""))]);
    let errors = NamespaceFactory.configure(&ctx, &empty).err().expect("refused");
    assert_eq!(errors[0].message, "session_attribute must not be empty");
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(4));

    let unknown = map(1, vec![("prefix", text(3, "x."))]);
    let errors = NamespaceFactory.configure(&ctx, &unknown).err().expect("refused");
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(3), "{}", errors[0].message);
}
