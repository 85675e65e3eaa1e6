use std::sync::Arc;
use std::time::Instant;

use gencol_config::{ComponentId, Located, Node, load_str};
use gencol_engine::{ComponentContext, Processor, ProcessorFactory};
use gencol_model::{Origin, SpanItem, attributes};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::FilterFactory;

fn settings(yaml: &str) -> Located<Node> {
    let doc = load_str("gencol.yaml", &format!("filter:\n{yaml}"), &|_| None).expect("yaml");
    doc.value.get("filter").expect("filter").clone()
}

fn ctx() -> ComponentContext {
    ComponentContext { id: ComponentId { kind: "filter".into(), name: None }, base_dir: ".".into() }
}

fn processor(yaml: &str) -> Box<dyn Processor> {
    let config = FilterFactory.configure(&ctx(), &settings(yaml)).expect("valid");
    let pctx = gencol_engine::ProcessorContext {
        id: ctx().id,
        pipeline: "traces".into(),
        state_dir: None,
        telemetry: gencol_engine::Telemetry::disabled(),
    };
    config.build(&pctx).expect("built")
}

fn span(model: &str) -> SpanItem {
    SpanItem {
        origin: Arc::new(Origin::default()),
        span: Span {
            name: model.into(),
            attributes: vec![attributes::string("gen_ai.request.model", model)],
            ..Default::default()
        },
        generation: None,
    }
}

fn names(items: &[SpanItem]) -> Vec<&str> {
    items.iter().map(|i| i.span.name.as_str()).collect()
}

const OPENAI: &str = "  groups:\n    - rules:\n        - {field: model, operator: starts_with, value: \"openai/\"}\n";

#[test]
fn include_keeps_what_matches_and_exclude_drops_it() {
    let batch = || vec![span("openai/gpt-4o"), span("anthropic/claude"), span("openai/o3")];
    let mut include = processor(OPENAI);
    let mut items = batch();
    include.process(&mut items, Instant::now());
    assert_eq!(names(&items), ["openai/gpt-4o", "openai/o3"]);
    assert_eq!(include.drops_as(), Some(gencol_engine::routing::Verdict::Filtered));

    let mut exclude = processor(&format!("  action: exclude\n{OPENAI}"));
    let mut items = batch();
    exclude.process(&mut items, Instant::now());
    assert_eq!(names(&items), ["anthropic/claude"]);
}

#[test]
fn broken_rules_are_refused_at_their_place() {
    let cases = [
        ("  groups: []\n", 2, "has no groups"),
        ("  groups:\n    - rules:\n        - {field: modle, operator: equals, value: x}\n", 4, "did you mean `model`"),
        ("  groups:\n    - rules:\n        - {field: model, operator: regex, value: \"(\"}\n", 4, "invalid regex"),
        ("  action: keep\n  groups: []\n", 2, "unknown value `keep`"),
    ];
    for (yaml, line, message) in cases {
        let errors = FilterFactory.configure(&ctx(), &settings(yaml)).err().expect("refused");
        let e = &errors[0];
        assert!(e.message.contains(message), "{yaml}: {}", e.message);
        assert_eq!(e.loc.as_ref().map(|l| l.line), Some(line), "{yaml}: {e:?}");
    }
}
