use std::time::Duration;

use gencol_engine::{ExportError, Exporter};
use gencol_model::SpanItem;
use gencol_model::attributes::{self as attr, strip_content};
use gencol_testkit::{Answer, RaindropSink};
use serde_json::{Value, json};

use super::config::{DEFAULT_BASE_URL, RaindropExporterSettings, RaindropSettings, check_write_key, track_endpoint};
use super::encoder::{EventMapper, MAX_BODY_BYTES, MAX_EVENT_BYTES, MAX_TEXT_CHARS, bodies, encode};
use super::{RaindropExporter, RaindropExporterFactory};
use crate::events::limits::{TRUNCATION_MARKER, truncate_chars};
use crate::events::test_support::{checked, config_errors, generation, otlp_span, seed};

const KEY: &str = "rd_write_9f8e7d6c5b";

/// The errors of a config, one line each, as `gencol validate` prints them.
fn errors(yaml: &str) -> String {
    config_errors(&RaindropExporterFactory, yaml)
}

fn settings(yaml: &str) -> RaindropSettings {
    checked(yaml, RaindropExporterSettings::check)
}

fn mapper() -> EventMapper {
    EventMapper::new("ai_generation", "anonymous")
}

fn event_json(item: &SpanItem) -> Value {
    serde_json::to_value(mapper().event(item).expect("an event")).expect("serializes")
}

#[test]
fn defaults_follow_the_spec() {
    let s = settings(&format!("write_key: {KEY}"));
    assert_eq!(s.endpoint.as_str(), format!("{DEFAULT_BASE_URL}/v1/events/track"));
    assert_eq!((s.batch_size, s.event_name.as_str(), s.anonymous_user_id.as_str()), (50, "ai_generation", "anonymous"));
    assert!(!format!("{s:?}").contains(KEY), "Debug never shows the key");
    let custom = settings(&format!(
        "write_key: ' {KEY}\n'\nbase_url: http://127.0.0.1:9/raindrop/\nbatch_size: 10\nevent_name: llm\nanonymous_user_id: guest"
    ));
    assert_eq!(custom.write_key, KEY, "surrounding whitespace of a pasted key is dropped");
    assert_eq!(custom.endpoint.as_str(), "http://127.0.0.1:9/raindrop/v1/events/track");
    assert_eq!(
        (custom.batch_size, custom.event_name.as_str(), custom.anonymous_user_id.as_str()),
        (10, "llm", "guest")
    );
}

#[test]
fn bad_settings_are_reported_at_their_line_without_the_key() {
    assert!(errors("base_url: https://api.raindrop.ai").contains("write_key"));
    assert!(errors("write_key: ''").contains("write_key is empty"));
    assert!(errors(&format!("write_key: 'Bearer {KEY}'")).contains("gencol adds the `Bearer ` prefix"));
    let spaced = errors("write_key: 'rd_write 9f8e'");
    assert!(spaced.contains("visible ASCII") && !spaced.contains("9f8e"), "{spaced}");
    let all = errors(&format!(
        "write_key: {KEY}\nbase_url: ftp://x\nbatch_size: 0\nevent_name: ''\nanonymous_user_id: ' '\nbatchsize: 3"
    ));
    assert!(all.contains("batchsize"), "unknown keys are errors: {all}");
    let all =
        errors(&format!("write_key: {KEY}\nbase_url: ftp://x\nbatch_size: 0\nevent_name: ''\nanonymous_user_id: ' '"));
    assert_eq!(all.lines().count(), 4, "every problem at once: {all}");
    assert!(all.contains(":2:") && all.contains("http:// or https://"), "{all}");
    assert!(
        all.contains("batch_size must be at least 1")
            && all.contains("event_name")
            && all.contains("anonymous_user_id")
    );
    assert!(!all.contains(KEY));
    let userinfo = track_endpoint("https://me:pw@api.raindrop.ai").unwrap_err();
    assert!(userinfo.contains("user name or password") && userinfo.contains("`write_key`"), "{userinfo}");
    assert!(!userinfo.contains("pw") && !userinfo.contains("me:"), "{userinfo}");
    assert!(check_write_key("k\u{e9}y").is_err());
}

#[test]
fn the_seed_becomes_the_documented_event() {
    let event = event_json(&generation(seed()));
    let version = gencol_model::VERSION;
    assert_eq!(
        event,
        json!({
            "event_id": "gen-1795341912-fz1g3QwhZyyAC0gzg7UK",
            "user_id": "user_35",
            "event": "ai_generation",
            "timestamp": "2026-11-22T10:05:12.000Z",
            "properties": {
                "model": "anthropic/claude-sonnet-4", "provider": "Anthropic", "total_cost": 0.0021,
                "prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42, "duration_ms": 1250,
                "finish_reason": "stop", "trace_name": "Time Check", "feature": "assistant",
                "$context": {"library": {"name": "gencol", "version": version}}
            },
            "ai_data": {
                "model": "anthropic/claude-sonnet-4", "input": "What time is it?",
                "output": "I can't see a clock, but you can check the time on your device.",
                "convo_id": "session_abc"
            },
            "attachments": []
        })
    );
}

#[test]
fn generation_names_trace_ids_nested_metadata_and_defaults() {
    let mut record = seed();
    record["request"]["messages"] = json!([
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "question"}]}
    ]);
    record["request"]["trace"] = json!({"trace_id": "expense_analysis_001", "generation_name": "Analyze Report",
        "span_name": "Categorize", "cost_center": "CC-1234", "tags": ["a", "b"], "team": {"name": "finance", "size": 4},
        "model": "what the client called it"});
    record["request"].as_object_mut().expect("object").remove("user");
    record["request"].as_object_mut().expect("object").remove("session_id");
    record["response"]["model"] = json!("anthropic/claude-sonnet-4-20250514");
    let event = event_json(&generation(record));
    assert_eq!(event["event"], "Analyze Report");
    assert_eq!(event["user_id"], "anonymous");
    assert_eq!(event["ai_data"]["input"], "second question", "the latest user message");
    assert_eq!(event["ai_data"]["model"], "anthropic/claude-sonnet-4-20250514", "the response model");
    assert!(event["ai_data"].get("convo_id").is_none(), "absent, never null");
    let p = &event["properties"];
    assert_eq!(p["trace_id"], "expense_analysis_001", "as the client sent it");
    assert!(p.get("trace_name").is_none());
    assert!(p.get("span_name").is_none() && p.get("generation_name").is_none(), "reserved keys are not metadata");
    assert_eq!(p["cost_center"], "CC-1234");
    assert_eq!(p["tags"], json!(["a", "b"]));
    assert_eq!(p["team"], json!({"name": "finance", "size": 4}), "nested values stay JSON");
    assert_eq!(p["model"], "anthropic/claude-sonnet-4", "the generation's own facts win a name clash");

    let named = EventMapper::new("llm_call", "guest");
    let mut plain = seed();
    plain["request"].as_object_mut().expect("object").remove("user");
    let event = named.event(&generation(plain)).expect("an event");
    assert_eq!((event.event.as_str(), event.user_id.as_str()), ("llm_call", "guest"));
}

#[test]
fn prompt_and_failed_generations() {
    let record = json!({"id": "gen-p", "created_at": "2026-11-22T10:00:00.000Z", "completed_at": "2026-11-22T10:00:00.500Z",
        "request": {"model": "openai/gpt-3.5-turbo-instruct", "prompt": "Once upon a time"},
        "response": {"choices": [{"text": " there was a log.", "finish_reason": "length"}]}});
    let event = event_json(&generation(record));
    assert_eq!(event["ai_data"]["input"], "Once upon a time");
    assert_eq!(event["ai_data"]["output"], " there was a log.");
    assert_eq!(event["properties"]["finish_reason"], "length");
    assert_eq!(event["properties"]["duration_ms"], 500);

    let failed = json!({"id": "gen-f", "created_at": "2026-11-22T10:00:00.000Z", "completed_at": "2026-11-22T10:00:00.100Z",
        "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "error": {"status": 429, "message": "rate limited"}});
    let event = event_json(&generation(failed));
    assert_eq!(event["ai_data"], json!({"model": "m", "input": "hi"}));
}

#[test]
fn otlp_genai_spans_become_events_from_their_attributes() {
    let item = otlp_span(vec![
        attr::string("gen_ai.operation.name", "chat"),
        attr::string("gen_ai.system", "openai"),
        attr::string("gen_ai.request.model", "gpt-4o"),
        attr::string("gen_ai.response.model", "gpt-4o-2024-08-06"),
        attr::string("gen_ai.response.id", "chatcmpl-123"),
        attr::string_array("gen_ai.response.finish_reasons", ["stop".to_owned()]),
        attr::int("gen_ai.usage.input_tokens", 7),
        attr::int("gen_ai.usage.output_tokens", 3),
        attr::double("gen_ai.usage.total_cost", 0.5),
        attr::string("user.id", "user_9"),
        attr::string("session.id", "conv_1"),
        attr::string("trace.metadata.feature", "assistant"),
        attr::int("trace.metadata.team.size", 4),
        attr::string(
            "gen_ai.input.messages",
            json!([{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                   {"role": "user", "parts": [{"type": "text", "content": "What time is it?"}]}])
            .to_string(),
        ),
        attr::string(
            "gen_ai.output.messages",
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Ten."}], "finish_reason": "stop"}])
                .to_string(),
        ),
    ]);
    let event = event_json(&item);
    assert_eq!(event["event_id"], "chatcmpl-123");
    assert_eq!(event["event"], "ai_generation", "`chat gpt-4o` is the OTel default name, not a generation name");
    assert_eq!(event["user_id"], "user_9");
    assert_eq!(event["timestamp"], "2026-11-22T10:00:00.000Z");
    assert_eq!(
        event["ai_data"],
        json!({"model": "gpt-4o-2024-08-06", "input": "What time is it?", "output": "Ten.", "convo_id": "conv_1"})
    );
    let p = &event["properties"];
    assert_eq!(p["model"], "gpt-4o");
    assert_eq!(p["provider"], "openai");
    assert_eq!(
        (p["prompt_tokens"].as_i64(), p["completion_tokens"].as_i64(), p["total_tokens"].as_i64()),
        (Some(7), Some(3), Some(10))
    );
    assert_eq!(p["total_cost"], 0.5);
    assert_eq!(p["duration_ms"], 750);
    assert_eq!(p["finish_reason"], "stop");
    assert_eq!(p["trace_id"], "4b".repeat(16), "an OTLP span reports its trace id");
    assert!(p.get("trace_name").is_none(), "its root's name is not known");
    assert_eq!(p["feature"], "assistant");
    assert_eq!(p["team.size"], 4);

    // The older attributes OpenRouter's Broadcast and OpenLLMetry write.
    let legacy = otlp_span(vec![
        attr::string("gen_ai.request.model", "gpt-4o"),
        attr::string("gen_ai.prompt", json!([{"role": "user", "content": "old style"}]).to_string()),
        attr::string("gen_ai.completion", "old answer"),
    ]);
    let event = event_json(&legacy);
    assert_eq!(
        (event["ai_data"]["input"].as_str(), event["ai_data"]["output"].as_str()),
        (Some("old style"), Some("old answer"))
    );
    assert_eq!(event["event_id"], format!("{}-{}", "4b".repeat(16), "0f".repeat(8)), "no ids: trace and span id");
    assert_eq!(event["user_id"], "anonymous");
}

#[test]
fn spans_that_are_not_llm_calls_make_no_event() {
    let root = otlp_span(vec![attr::string("http.method", "POST")]);
    assert!(mapper().event(&root).is_none());
    let mut hierarchy_root = generation(seed());
    hierarchy_root.generation = None;
    hierarchy_root.span.attributes.clear();
    hierarchy_root.span.name = "Time Check".into();
    assert!(mapper().event(&hierarchy_root).is_none());
}

#[test]
fn privacy_mode_leaves_input_and_output_out_and_sends_the_rest() {
    let full = event_json(&generation(seed()));
    let mut item = generation(seed());
    strip_content(&mut item.span.attributes);
    let private = event_json(&item);
    assert!(private["ai_data"].get("input").is_none() && private["ai_data"].get("output").is_none());
    assert_eq!(private["ai_data"]["convo_id"], "session_abc");
    assert_eq!(private["properties"], full["properties"]);
    assert_eq!(private["user_id"], full["user_id"]);
}

#[test]
fn long_texts_are_cut_on_char_boundaries_with_the_marker_inside_the_limit() {
    let marker = TRUNCATION_MARKER.chars().count();
    assert_eq!(truncate_chars("short".into(), 10), "short");
    assert_eq!(truncate_chars("é".repeat(10), 10), "é".repeat(10), "exactly at the limit: kept");
    assert_eq!(truncate_chars("é".repeat(marker + 3), marker + 3), "é".repeat(marker + 3));
    let cut = truncate_chars("é".repeat(marker + 4), marker + 3);
    assert_eq!(cut, format!("ééé{TRUNCATION_MARKER}"));
    let cut = truncate_chars("ab".repeat(MAX_TEXT_CHARS), MAX_TEXT_CHARS);
    assert_eq!(cut.chars().count(), MAX_TEXT_CHARS);
    assert!(cut.ends_with(TRUNCATION_MARKER));
}

#[test]
fn events_are_kept_within_one_mebibyte() {
    // 3 MB of ASCII: cut to 1,000,000 chars, which fits.
    let mut record = seed();
    record["response"]["choices"][0]["message"]["content"] = json!("x".repeat(3_000_000));
    let event = mapper().event(&generation(record)).expect("an event");
    let output = event.ai_data.output.clone().expect("output");
    assert_eq!(output.chars().count(), MAX_TEXT_CHARS);
    assert!(output.ends_with(TRUNCATION_MARKER));
    let encoded = encode(event).expect("fits");
    assert!(encoded.len() <= MAX_EVENT_BYTES);

    // Multi-byte and escaped text in both fields: within the char limit but over 1 MiB, so
    // both are cut further, each keeping its marker.
    let mut record = seed();
    record["request"]["messages"][0]["content"] = json!("\"é\n".repeat(400_000));
    record["response"]["choices"][0]["message"]["content"] = json!("ü".repeat(900_000));
    let encoded = encode(mapper().event(&generation(record)).expect("an event")).expect("fits");
    assert!(encoded.len() <= MAX_EVENT_BYTES, "{}", encoded.len());
    let back: Value = serde_json::from_slice(&encoded).expect("JSON");
    for key in ["input", "output"] {
        let text = back["ai_data"][key].as_str().expect("kept");
        assert!(text.ends_with(TRUNCATION_MARKER) && text.len() > 300_000, "{key}: {} bytes", text.len());
    }

    // Metadata alone over the limit: the event cannot be sent at any size.
    let mut record = seed();
    record["request"]["trace"]["blob"] = json!("y".repeat(MAX_BODY_BYTES));
    let err = encode(mapper().event(&generation(record)).expect("an event")).expect_err("too large");
    assert_eq!(err.event_id, "gen-1795341912-fz1g3QwhZyyAC0gzg7UK");
    assert!(!err.to_string().contains("yyyy"), "the message never carries content");
}

#[test]
fn bodies_respect_batch_size_and_one_mebibyte() {
    let event = |i: usize, pad: usize| {
        let mut record = seed();
        record["id"] = json!(format!("gen-{i}"));
        record["request"]["trace"]["pad"] = json!("p".repeat(pad));
        encode(mapper().event(&generation(record)).expect("an event")).expect("fits")
    };
    let small: Vec<_> = (0..120).map(|i| event(i, 0)).collect();
    let split = bodies(&small, 50);
    let counts: Vec<usize> =
        split.iter().map(|b| serde_json::from_slice::<Vec<Value>>(b).expect("a JSON array").len()).collect();
    assert_eq!(counts, [50, 50, 20]);
    let ids: Vec<Value> = split
        .iter()
        .flat_map(|b| serde_json::from_slice::<Vec<Value>>(b).expect("array"))
        .map(|e| e["event_id"].clone())
        .collect();
    assert_eq!(ids, (0..120).map(|i| json!(format!("gen-{i}"))).collect::<Vec<_>>(), "in order, none lost");

    let big: Vec<_> = (0..5).map(|i| event(i, 400_000)).collect();
    let split = bodies(&big, 50);
    assert_eq!(split.len(), 3, "two 400 KB events per body at most");
    assert!(split.iter().all(|b| b.len() <= MAX_BODY_BYTES));
    let alone = event(9, MAX_EVENT_BYTES - 2_000);
    assert!(alone.len() <= MAX_EVENT_BYTES);
    let split = bodies(&[alone.clone(), alone.clone()], 50);
    assert_eq!(split.len(), 2, "an event near the limit travels alone");
    assert_eq!(split[0].len(), alone.len() + 2);
}

fn exporter(base_url: &str, batch_size: usize) -> RaindropExporter {
    let s = settings(&format!("write_key: {KEY}\nbase_url: {base_url}\nbatch_size: {batch_size}"));
    RaindropExporter::new("raindrop", &s).expect("builds")
}

#[tokio::test]
async fn sends_batches_the_ingest_accepts() {
    let sink = RaindropSink::start(KEY).await.expect("sink");
    let items: Vec<SpanItem> = (0..5)
        .map(|i| {
            let mut record = seed();
            record["id"] = json!(format!("gen-{i}"));
            generation(record)
        })
        .collect();
    exporter(&sink.url(), 2).export(&items).await.expect("accepted");
    let requests = sink.requests();
    assert_eq!(requests.iter().map(|r| r.event_count()).collect::<Vec<_>>(), [2, 2, 1]);
    for r in &requests {
        assert_eq!(r.status(), Some(204));
        assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-encoding"), None, "no gzip");
        assert_eq!(r.header("x-test-connection"), None);
    }
    assert_eq!(sink.events()[0], event_json(&items[0]));
}

#[tokio::test]
async fn answers_are_classified_as_raindrop_md_says() {
    let sink = RaindropSink::start(KEY).await.expect("sink");
    let exp = exporter(&sink.url(), 50);
    let batch = [generation(seed())];
    sink.script([Answer::status(503).retry_after(1)]);
    match exp.export(&batch).await {
        Err(ExportError::Retryable { retry_after, message }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
            assert!(message.starts_with("503 "), "{message}");
        }
        other => panic!("503 is retryable: {other:?}"),
    }
    sink.script([Answer::status(429)]);
    assert!(matches!(exp.export(&batch).await, Err(ExportError::Retryable { retry_after: None, .. })));
    sink.script([Answer::status(500)]);
    assert!(matches!(exp.export(&batch).await, Err(ExportError::Retryable { .. })));
    sink.script([Answer::status(400).body(format!("invalid event: key {KEY} has no access"))]);
    match exp.export(&batch).await {
        // Refused for its content: permanent for this batch; the engine splits it.
        Err(ExportError::Refused { message }) => {
            assert!(message.starts_with("400 invalid event: key *** has no access"), "{message}");
            assert!(message.contains(&sink.url()) && !message.contains(KEY), "{message}");
        }
        other => panic!("400 refuses the content: {other:?}"),
    }
    let wrong =
        RaindropExporter::new("raindrop", &settings(&format!("write_key: wrong-key\nbase_url: {}", sink.url())))
            .expect("builds");
    let err = wrong.export(&batch).await.expect_err("401");
    assert!(matches!(&err, ExportError::Permanent { message } if message.starts_with("401 ")), "{err:?}");
    assert_eq!(sink.events().len(), 0);
}

#[tokio::test]
async fn a_rejected_request_does_not_stop_the_others() {
    let sink = RaindropSink::start(KEY).await.expect("sink");
    let items: Vec<SpanItem> = (0..3)
        .map(|i| {
            let mut record = seed();
            record["id"] = json!(format!("gen-{i}"));
            generation(record)
        })
        .collect();
    sink.script([Answer::status(400)]);
    let err = exporter(&sink.url(), 1).export(&items).await.expect_err("one rejected");
    assert!(
        matches!(&err, ExportError::Refused { message } if message.starts_with("1 of 3 requests rejected")),
        "{err:?}"
    );
    assert_eq!(sink.events().len(), 2);
}

#[tokio::test]
async fn unreachable_is_retryable_and_test_connection_sends_a_marked_event() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let err = exporter(&format!("http://{closed}"), 50).export(&[generation(seed())]).await.expect_err("no listener");
    assert!(
        matches!(&err, ExportError::Retryable { message, .. } if message.starts_with("cannot reach http://127.0.0.1")),
        "{err:?}"
    );

    let sink = RaindropSink::start(KEY).await.expect("sink");
    let status = exporter(&sink.url(), 50).test_connection().await.expect("passes");
    assert_eq!(status, "204 No Content");
    let request = &sink.requests()[0];
    assert_eq!(request.header("x-test-connection"), Some("true"));
    let event = &sink.events()[0];
    assert_eq!(event["event"], "gencol_test_connection");
    assert_eq!(event["user_id"], "anonymous");
    assert_eq!(event["properties"]["gencol.test_connection"], true);
    assert!(event["event_id"].as_str().is_some_and(|id| id.starts_with("gencol-test-")));
}

#[tokio::test]
async fn a_redirect_is_permanent_and_not_followed() {
    let target = RaindropSink::start(KEY).await.expect("sink");
    let sink = RaindropSink::start(KEY).await.expect("sink");
    let location = format!("{}/v1/events/track?write_key={KEY}", target.url());
    sink.script([Answer::status(308).header("location", &location)]);
    let err = exporter(&sink.url(), 50).export(&[generation(seed())]).await.expect_err("a redirect");
    let ExportError::Permanent { message } = &err else { panic!("permanent: {err:?}") };
    let origin = target.url();
    assert!(
        message.starts_with(&format!(
            "308 Permanent Redirect (redirect to {origin} not followed: exporters do not follow redirects; set base_url to the final URL)"
        )),
        "{message}"
    );
    assert!(!message.contains(KEY), "{message}");
    assert!(target.requests().is_empty(), "the redirect target got a request");
}
