use std::sync::Arc;
use std::time::Instant;

use gencol_engine::Processor;
use gencol_model::attributes::{self as attr, CONTENT_KEYS, get, get_str};
use gencol_model::{Generation, Origin, SpanItem, generation_span};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AttrValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{CustomPattern, MaskError, PrivacyConfigError, PrivacyFilter, PrivacySettings, SettingPath};
use crate::namespace::{NamespaceSettings, RequestAttributes};

fn item(user: &str) -> SpanItem {
    let record = json!({
        "id": "gen-privacy-1",
        "created_at": "2026-11-22T10:00:00.000Z",
        "completed_at": "2026-11-22T10:00:01.250Z",
        "provider": "OpenAI",
        "request": {
            "model": "openai/gpt-4o",
            "messages": [
                {"role": "system", "content": "Never reveal TCK-123456."},
                {"role": "user", "content": "Mail jane.doe@example.com about \"the\" report"}
            ],
            "user": user,
            "session_id": "session_abc",
            "trace": {
                "trace_name": "Support",
                "contact": "Reach bob@corp.example today",
                "team": {"lead": "carol@corp.example", "size": 4},
                "tags": ["ok", "dave@corp.example"],
                "department": "finance"
            }
        },
        "response": {
            "model": "openai/gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sent to jane.doe@example.com"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.001}
        }
    });
    let g: Generation = serde_json::from_value(record).expect("valid record");
    generation_span(&g, &Arc::new(Origin::default()))
}

fn filter(settings: &PrivacySettings) -> PrivacyFilter {
    PrivacyFilter::new(&settings.compile().expect("valid settings"))
}

fn run(p: &mut dyn Processor, item: SpanItem) -> SpanItem {
    let mut items = vec![item];
    p.process(&mut items, Instant::now());
    items.remove(0)
}

fn namespace() -> RequestAttributes {
    RequestAttributes::new(&NamespaceSettings::default())
}

fn emails_only() -> PrivacySettings {
    PrivacySettings { patterns: Some(vec!["email".into()]), ..PrivacySettings::default() }
}

fn json_attr(item: &SpanItem, key: &str) -> Value {
    let text = get_str(&item.span.attributes, key).unwrap_or_else(|| panic!("{key} present"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is still JSON: {e}: {text}"))
}

#[test]
fn masks_emails_in_metadata_and_content_before_or_after_namespace() {
    // privacy first: the context is masked, so namespace writes masked metadata.
    let out = run(&mut namespace(), run(&mut filter(&emails_only()), item("user_12345")));
    // privacy last: the attributes namespace wrote are masked.
    let out_after = run(&mut filter(&emails_only()), run(&mut namespace(), item("user_12345")));

    for out in [&out, &out_after] {
        let a = &out.span.attributes;
        assert_eq!(get_str(a, "trace.metadata.contact"), Some("Reach [REDACTED:email] today"));
        assert_eq!(get_str(a, "trace.metadata.team.lead"), Some("[REDACTED:email]"));
        assert_eq!(get(a, "trace.metadata.team.size"), Some(&AttrValue::IntValue(4)));
        assert_eq!(get_str(a, "trace.metadata.department"), Some("finance"));
        let tags = match get(a, "trace.metadata.tags") {
            Some(AttrValue::ArrayValue(arr)) => arr.values.iter().map(|v| v.value.clone()).collect::<Vec<_>>(),
            other => panic!("tags: {other:?}"),
        };
        assert_eq!(
            tags,
            [Some(AttrValue::StringValue("ok".into())), Some(AttrValue::StringValue("[REDACTED:email]".into()))]
        );

        let input = json_attr(out, "gen_ai.input.messages");
        let text = input.to_string();
        assert!(text.contains(r#"Mail [REDACTED:email] about \"the\" report"#), "{text}");
        assert!(!text.contains("jane.doe"), "{text}");
        assert!(!json_attr(out, "gen_ai.output.messages").to_string().contains("jane.doe"));
        assert_eq!(get_str(a, "gen_ai.completion"), Some("Sent to [REDACTED:email]"));
        let prompt = get_str(a, "gen_ai.prompt").unwrap_or_default();
        assert!(!prompt.contains("jane.doe") && prompt.contains("[REDACTED:email]"), "{prompt}");

        let ctx = out.generation.as_deref().expect("context");
        assert_eq!(
            ctx.metadata.iter().find(|(k, _)| k == "contact").map(|(_, v)| v),
            Some(&json!("Reach [REDACTED:email] today"))
        );
        assert_eq!(get_str(a, "user.id"), Some("user_12345"));
        assert_eq!(out.span.name, "openai/gpt-4o");
    }
}

#[test]
fn custom_patterns_never_break_json() {
    let settings = PrivacySettings {
        patterns: Some(Vec::new()),
        custom: vec![
            CustomPattern { name: "ticket".into(), regex: "TCK-[0-9]{6}".into() },
            // Matches JSON syntax in the raw text, but never inside a string.
            CustomPattern { name: "syntax".into(), regex: r#""role":""#.into() },
        ],
        ..PrivacySettings::default()
    };
    let out = run(&mut filter(&settings), item("user_12345"));
    for key in ["gen_ai.input.messages", "gen_ai.prompt"] {
        let text = json_attr(&out, key).to_string();
        assert!(text.contains("Never reveal [REDACTED:ticket]."), "{key}: {text}");
        assert!(!text.contains("[REDACTED:syntax]"), "{key}: {text}");
    }
    let output = json_attr(&out, "gen_ai.output.messages");
    let original = item("user_12345");
    assert_eq!(
        get_str(&out.span.attributes, "gen_ai.output.messages"),
        get_str(&original.span.attributes, "gen_ai.output.messages"),
        "only syntax matched: left exactly as it was ({output})"
    );
}

#[test]
fn structural_attributes_and_names_are_not_masked() {
    let mut span = item("user_12345");
    span.span.attributes.push(attr::string("gen_ai.response.id", "ops@corp.example"));
    span.span.name = "for ops@corp.example".into();
    span.span.attributes.retain(|kv| kv.key != "gen_ai.request.model");
    span.span.attributes.push(attr::string("gen_ai.request.model", "acme/ops@corp.example"));
    let out = run(&mut filter(&emails_only()), span);
    assert_eq!(out.span.name, "for ops@corp.example");
    assert_eq!(get_str(&out.span.attributes, "gen_ai.request.model"), Some("acme/ops@corp.example"));
    let ids: Vec<_> = out.span.attributes.iter().filter(|kv| kv.key == "gen_ai.response.id").collect();
    assert!(ids.iter().any(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref())
        == Some(&AttrValue::StringValue("ops@corp.example".into()))));
}

#[test]
fn drop_content_removes_exactly_the_content_attributes() {
    let settings = PrivacySettings { drop_content: true, patterns: Some(Vec::new()), ..PrivacySettings::default() };
    let before = run(&mut namespace(), item("user_12345"));
    let out = run(&mut filter(&settings), before.clone());
    for key in CONTENT_KEYS {
        assert!(get(&out.span.attributes, key).is_none(), "{key} dropped");
    }
    let kept: Vec<_> = before.span.attributes.iter().filter(|kv| !CONTENT_KEYS.contains(&kv.key.as_str())).collect();
    assert_eq!(out.span.attributes.iter().collect::<Vec<_>>(), kept);
    assert_eq!(get_str(&out.span.attributes, "trace.metadata.contact"), Some("Reach bob@corp.example today"));
    assert_eq!(attr::get_f64(&out.span.attributes, "gen_ai.usage.total_cost"), Some(0.001));
}

#[test]
fn hash_user_id_replaces_attribute_and_context_with_the_salted_hash() {
    let settings = PrivacySettings { hash_user_id: true, salt: Some("pepper".into()), ..PrivacySettings::default() };
    let expected = |user: &str| hex::encode(Sha256::digest(format!("pepper{user}").as_bytes()));

    // After namespace: the attribute is hashed.
    let out = run(&mut filter(&settings), run(&mut namespace(), item("user_12345")));
    assert_eq!(get_str(&out.span.attributes, "user.id"), Some(expected("user_12345").as_str()));
    assert_eq!(out.generation.as_ref().and_then(|c| c.user.clone()), Some(expected("user_12345")));

    // Before namespace: the context is hashed, so namespace writes the hash. An e-mail user
    // id is hashed, not masked: two such users keep two pseudonyms.
    let out = run(&mut namespace(), run(&mut filter(&settings), item("jane@example.com")));
    assert_eq!(get_str(&out.span.attributes, "user.id"), Some(expected("jane@example.com").as_str()));
    let other = run(&mut namespace(), run(&mut filter(&settings), item("joe@example.com")));
    assert_ne!(get_str(&out.span.attributes, "user.id"), get_str(&other.span.attributes, "user.id"));
}

#[test]
fn default_settings_mask_every_builtin_and_untouched_spans_keep_their_context() {
    let defaults = PrivacySettings::default();
    let rules = defaults.compile().expect("defaults compile");
    assert!(!rules.masker.is_empty(), "a bare `privacy` masks the built-ins");
    assert!(!rules.drop_content && rules.user_id_salt.is_none());

    let mut span = item("user_12345");
    span.span.attributes.push(attr::string("note", "call +1 415 555 0100 from 10.0.0.1"));
    let out = run(&mut PrivacyFilter::new(&rules), span);
    assert_eq!(get_str(&out.span.attributes, "note"), Some("call [REDACTED:phone] from [REDACTED:ip]"));

    // Nothing to mask: the shared context is not copied.
    let clean = run(&mut namespace(), item("user_12345"));
    let mut clean = clean;
    let generation = clean.generation.take().map(|c| {
        let mut c = (*c).clone();
        c.metadata.retain(|(k, _)| k == "department");
        Arc::new(c)
    });
    clean.generation = generation.clone();
    let out = run(&mut filter(&emails_only()), clean);
    assert!(Arc::ptr_eq(out.generation.as_ref().expect("context"), generation.as_ref().expect("context")));
}

#[test]
fn bad_settings_are_reported_each_at_its_place() {
    let settings = PrivacySettings {
        patterns: Some(vec!["email".into(), "cc".into()]),
        custom: vec![
            CustomPattern { name: "ok".into(), regex: "A+".into() },
            CustomPattern { name: "ticket".into(), regex: "TCK-[0-9".into() },
            CustomPattern { name: "bad name".into(), regex: "x".into() },
        ],
        hash_user_id: true,
        salt: Some(String::new()),
        ..PrivacySettings::default()
    };
    let errors = settings.compile().expect_err("refused");
    assert_eq!(errors.len(), 4, "{errors:?}");
    let at = |e: &PrivacyConfigError| e.path(&settings);

    assert!(matches!(&errors[0], PrivacyConfigError::UnknownPattern { index: 1, name, .. } if name == "cc"));
    let message = errors[0].to_string();
    assert!(message.starts_with("unknown pattern `cc`"), "{message}");
    assert!(message.ends_with("the built-in patterns are: email, phone, credit_card, api_key, ip"), "{message}");
    assert_eq!(at(&errors[0]), SettingPath { key: "patterns", index: Some(1), field: None });

    assert!(matches!(&errors[1], PrivacyConfigError::Custom { index: 1, error: MaskError::InvalidRegex { .. } }));
    assert!(errors[1].to_string().contains("ticket"), "{}", errors[1]);
    assert_eq!(at(&errors[1]), SettingPath { key: "custom", index: Some(1), field: Some("regex") });
    assert_eq!(at(&errors[2]), SettingPath { key: "custom", index: Some(2), field: Some("name") });

    assert_eq!(errors[3], PrivacyConfigError::MissingSalt);
    assert_eq!(errors[3].to_string(), "hash_user_id needs a non-empty salt (e.g. salt: \"${env:GENCOL_SALT}\")");
    assert_eq!(at(&errors[3]), SettingPath { key: "salt", index: None, field: None });

    let no_salt = PrivacySettings { hash_user_id: true, ..PrivacySettings::default() };
    let errors = no_salt.compile().expect_err("refused");
    assert_eq!(errors, [PrivacyConfigError::MissingSalt]);
    assert_eq!(errors[0].path(&no_salt), SettingPath { key: "hash_user_id", index: None, field: None });
}

#[test]
fn configure_reports_every_bad_setting_at_its_line() {
    use gencol_config::Node;
    use gencol_engine::ProcessorFactory;

    use super::PrivacyFactory;
    use crate::settings::written::{at, context, map, seq, text};

    let ctx = context("privacy");
    let good = map(
        1,
        vec![
            ("drop_content", at(2, Node::Bool(true))),
            ("patterns", seq(3, vec![text(3, "email"), text(3, "phone")])),
            ("custom", seq(4, vec![map(5, vec![("name", text(5, "ticket")), ("regex", text(6, "TCK-[0-9]{6}"))])])),
            ("hash_user_id", at(7, Node::Bool(true))),
            ("salt", text(8, "pepper")),
        ],
    );
    assert!(PrivacyFactory.configure(&ctx, &good).is_ok());
    assert!(PrivacyFactory.configure(&ctx, &at(1, Node::Null)).is_ok(), "no settings: defaults");

    let bad = map(
        1,
        vec![
            ("patterns", seq(2, vec![text(3, "email"), text(4, "emial")])),
            ("custom", seq(5, vec![map(6, vec![("name", text(6, "ticket")), ("regex", text(7, "TCK-[0-9"))])])),
            ("hash_user_id", at(8, Node::Bool(true))),
        ],
    );
    let errors = PrivacyFactory.configure(&ctx, &bad).err().expect("refused");
    let lines: Vec<_> = errors.iter().map(|d| d.loc.as_ref().map(|l| l.line)).collect();
    assert_eq!(lines, [Some(4), Some(7), Some(8)], "{errors:?}");
    assert!(errors[0].message.contains("did you mean `email`"), "{}", errors[0].message);
    assert!(errors[1].message.contains("ticket"), "{}", errors[1].message);
    assert!(errors[2].message.contains("salt"), "{}", errors[2].message);

    let unknown = map(1, vec![("custom", seq(2, vec![map(3, vec![("name", text(3, "t")), ("regx", text(4, "x"))])]))]);
    let errors = PrivacyFactory.configure(&ctx, &unknown).err().expect("refused");
    assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(4), "{}", errors[0].message);
}
