use std::time::Duration;

use gencol_engine::{ExportError, Exporter};
use gencol_model::attributes::{self as attr, strip_content};
use gencol_model::{SpanItem, Timestamp};
use gencol_testkit::{Answer, PostHogSink};
use serde_json::{Value, json};

use super::config::{DEFAULT_HOST, PostHogExporterSettings, PostHogSettings, batch_endpoint, check_api_key};
use super::encoder::{EventMapper, MAX_BODY_BYTES, MAX_EVENT_BYTES, body_open, body_shape, encode, generation_uuid};
use super::{PostHogExporter, PostHogExporterFactory};
use crate::events::limits::TRUNCATION_MARKER;
use crate::events::test_support::{checked, config_errors, generation, otlp_span, seed};

const KEY: &str = "phc_Hq3vN8xZ2pW7kT5mR9cL4dYb";

fn errors(yaml: &str) -> String {
    config_errors(&PostHogExporterFactory, yaml)
}

fn settings(yaml: &str) -> PostHogSettings {
    checked(yaml, PostHogExporterSettings::check)
}

fn mapper() -> EventMapper {
    EventMapper::new("anonymous")
}

fn event_json(item: &SpanItem) -> Value {
    serde_json::to_value(mapper().event(item).expect("an event")).expect("serializes")
}

fn with_id(i: usize) -> SpanItem {
    let mut record = seed();
    record["id"] = json!(format!("gen-{i}"));
    generation(record)
}

#[test]
fn defaults_follow_the_docs() {
    let s = settings(&format!("api_key: {KEY}"));
    assert_eq!(s.endpoint.as_str(), "https://us.i.posthog.com/batch/");
    assert_eq!(format!("{DEFAULT_HOST}/batch/"), s.endpoint.as_str());
    assert_eq!((s.batch_size, s.anonymous_distinct_id.as_str()), (100, "anonymous"));
    assert!(!format!("{s:?}").contains(KEY), "Debug never shows the key");
    let decoded: PostHogExporterSettings = serde_json::from_value(json!({"api_key": KEY})).expect("decodes");
    assert!(!format!("{decoded:?}").contains(KEY), "nor does the Debug of the YAML form");

    let eu = settings(&format!(
        "api_key: ' {KEY}\n'\nhost: https://eu.i.posthog.com\nbatch_size: 10\nanonymous_distinct_id: guest"
    ));
    assert_eq!(eu.api_key, KEY, "surrounding whitespace of a pasted key is dropped");
    assert_eq!(eu.endpoint.as_str(), "https://eu.i.posthog.com/batch/");
    assert_eq!((eu.batch_size, eu.anonymous_distinct_id.as_str()), (10, "guest"));
    let proxied = batch_endpoint("https://analytics.example.com/ingest/").expect("a URL");
    assert_eq!(proxied.as_str(), "https://analytics.example.com/ingest/batch/", "a self-hosted path is kept");
}

#[test]
fn bad_settings_are_reported_at_their_line_without_the_key() {
    assert!(errors("host: https://eu.i.posthog.com").contains("api_key"), "api_key is required");
    assert!(errors("api_key: ''").contains("api_key is empty"));
    let personal = errors("api_key: phx_personalKeyXYZ");
    assert!(personal.contains("personal API key") && !personal.contains("personalKeyXYZ"), "{personal}");
    let spaced = errors("api_key: 'phc_abc def'");
    assert!(spaced.contains("visible ASCII") && !spaced.contains("abc def"), "{spaced}");
    let long = errors(&format!("api_key: phc_{}", "k".repeat(70)));
    assert!(long.contains("over the 64") && !long.contains("kkkk"), "{long}");
    assert!(errors("api_key: x\nbatchsize: 3").contains("batchsize"), "unknown keys are errors");

    let all = errors(&format!("api_key: {KEY}\nhost: ftp://x\nbatch_size: 0\nanonymous_distinct_id: ' '"));
    assert_eq!(all.lines().count(), 3, "every problem at once: {all}");
    let line = |n: u32, text: &str| all.lines().any(|l| l.contains(&format!(":{n}:")) && l.contains(text));
    assert!(line(2, "http:// or https://"), "{all}");
    assert!(line(3, "batch_size must be at least 1"), "{all}");
    assert!(line(4, "anonymous_distinct_id"), "{all}");
    let key_line = errors("host: https://eu.i.posthog.com\napi_key: phx_secretvalue");
    assert!(key_line.contains(":2:") && !key_line.contains("secretvalue"), "{key_line}");
    let userinfo = batch_endpoint("https://me:pw@us.i.posthog.com").expect_err("userinfo");
    assert!(userinfo.contains("`api_key`") && !userinfo.contains("pw@"), "{userinfo}");
    assert!(check_api_key("phc_k\u{e9}y").is_err());
}

#[test]
fn the_seed_becomes_the_documented_event() {
    let item = generation(seed());
    let event = event_json(&item);
    let uuid = generation_uuid("gen-1795341912-fz1g3QwhZyyAC0gzg7UK");
    assert_eq!(
        event,
        json!({
            "event": "$ai_generation",
            "distinct_id": "user_35",
            "timestamp": "2026-11-22T10:05:12.000Z",
            "uuid": uuid,
            "properties": {
                "feature": "assistant",
                "trace_name": "Time Check",
                "$ai_trace_id": hex::encode(&item.span.trace_id),
                "$ai_session_id": "session_abc",
                "$ai_span_id": hex::encode(&item.span.span_id),
                "$ai_model": "anthropic/claude-sonnet-4",
                "$ai_provider": "Anthropic",
                "$ai_input": [{"role": "user", "content": "What time is it?"}],
                "$ai_output_choices": [{"role": "assistant",
                    "content": "I can't see a clock, but you can check the time on your device."}],
                "$ai_input_tokens": 12,
                "$ai_output_tokens": 30,
                "$ai_cache_read_input_tokens": 0,
                "$ai_reasoning_tokens": 0,
                "$ai_total_cost_usd": 0.0021,
                "$ai_latency": 1.25,
                "$ai_time_to_first_token": 0.84,
                "$ai_is_error": false,
                "$lib": "gencol",
                "$lib_version": gencol_model::VERSION
            }
        })
    );
}

#[test]
fn uuids_are_deterministic_version_8_uuids_of_the_generation_id() {
    let a = generation_uuid("gen-1");
    assert_eq!(a, generation_uuid("gen-1"), "the same generation is the same event");
    assert_ne!(a, generation_uuid("gen-2"));
    let groups: Vec<&str> = a.split('-').collect();
    assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{a}");
    assert!(a.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{a}");
    assert!(groups[2].starts_with('8'), "version 8: {a}");
    assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "RFC 9562 variant: {a}");
    // Sent again (a retry, a replayed queue): the same uuid, so PostHog keeps one.
    assert_eq!(event_json(&generation(seed()))["uuid"], event_json(&generation(seed()))["uuid"]);
    assert_eq!(event_json(&with_id(7))["uuid"], generation_uuid("gen-7"));
    // A span without a generation record: from its response id.
    let otlp =
        otlp_span(vec![attr::string("gen_ai.request.model", "m"), attr::string("gen_ai.response.id", "chatcmpl-9")]);
    assert_eq!(event_json(&otlp)["uuid"], generation_uuid("chatcmpl-9"));
}

#[test]
fn client_names_trace_ids_parents_costs_tools_and_anonymous_users() {
    let mut record = seed();
    record["request"].as_object_mut().expect("object").remove("user");
    record["request"]["stream"] = json!(true);
    record["request"]["tools"] = json!([{"type": "function", "function": {"name": "clock", "parameters": {}}}]);
    record["request"]["trace"] = json!({"trace_id": "expense_analysis_001", "generation_name": "Analyze Report",
        "parent_span_id": "0123456789abcdef", "cost_center": "CC-1234", "team": {"size": 4},
        "$set": {"plan": "pro"}, "$ai_model": "the client's", "trace_name": "Expense Processing"});
    record["response"]["usage"]["cost_details"] = json!({"upstream_inference_prompt_cost": 0.0006,
        "upstream_inference_completions_cost": 0.0015});
    let p = event_json(&generation(record))["properties"].clone();
    assert_eq!(p["$ai_trace_id"], "expense_analysis_001", "the client's trace id, which PostHog takes as is");
    assert_eq!(p["$ai_span_name"], "Analyze Report");
    assert_eq!(p["$ai_parent_id"], "0123456789abcdef");
    assert_eq!(p["trace_name"], "Expense Processing");
    assert_eq!(p["cost_center"], "CC-1234");
    assert_eq!(p["team"], json!({"size": 4}), "nested metadata stays JSON");
    assert_eq!(p["metadata_$set"], json!({"plan": "pro"}), "PostHog's `$` names are not the client's to set");
    assert!(p.get("$set").is_none());
    assert_eq!(p["metadata_$ai_model"], "the client's");
    assert_eq!(p["$ai_model"], "anthropic/claude-sonnet-4", "the generation's own facts win");
    assert_eq!((p["$ai_input_cost_usd"].as_f64(), p["$ai_output_cost_usd"].as_f64()), (Some(0.0006), Some(0.0015)));
    assert_eq!(p["$ai_stream"], true);
    assert_eq!(p["$ai_tools"], json!([{"type": "function", "function": {"name": "clock", "parameters": {}}}]));
    assert_eq!(p["$process_person_profile"], false, "no user: an anonymous event");
    let event = mapper().event(&generation(seed())).expect("an event");
    assert!(event.properties.get("$process_person_profile").is_none(), "a real user gets a person profile");

    let named = EventMapper::new("guest");
    let mut anonymous = seed();
    anonymous["request"].as_object_mut().expect("object").remove("user");
    assert_eq!(named.event(&generation(anonymous)).expect("an event").distinct_id, "guest");

    // A trace id PostHog would refuse (a space): the hex trace id, which groups the same.
    let mut spaced = seed();
    spaced["request"]["trace"]["trace_id"] = json!("expense analysis");
    let item = generation(spaced);
    assert_eq!(event_json(&item)["properties"]["$ai_trace_id"], hex::encode(&item.span.trace_id));
}

#[test]
fn prompts_instructions_tool_calls_and_failed_generations() {
    let responses = json!({"id": "gen-r", "created_at": "2026-11-22T10:00:00.000Z", "completed_at": "2026-11-22T10:00:00.500Z",
        "request": {"model": "openai/gpt-4o", "instructions": "Be brief.", "input": "What time is it?"},
        "response": {"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Ten."}]}]}});
    let p = event_json(&generation(responses))["properties"].clone();
    assert_eq!(
        p["$ai_input"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What time is it?"}])
    );
    assert_eq!(p["$ai_output_choices"], json!([{"role": "assistant", "content": "Ten."}]));
    assert_eq!(p["$ai_latency"], 0.5);

    let tool_call = json!({"id": "gen-t", "created_at": "2026-11-22T10:00:00.000Z", "completed_at": "2026-11-22T10:00:01.000Z",
        "request": {"model": "m", "messages": [{"role": "user", "content": "time?"}]},
        "response": {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]}}]}});
    let choices = event_json(&generation(tool_call))["properties"]["$ai_output_choices"].clone();
    assert_eq!(
        choices,
        json!([{"role": "assistant", "content": [{"type": "function", "id": "call_1",
            "function": {"name": "clock", "arguments": {}}}]}]),
        "PostHog's documented tool-call form, arguments as an object"
    );

    let failed = json!({"id": "gen-f", "created_at": "2026-11-22T10:00:00.000Z", "completed_at": "2026-11-22T10:00:00.100Z",
        "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "error": {"status": 429, "message": "rate limited"}});
    let p = event_json(&generation(failed))["properties"].clone();
    assert_eq!((p["$ai_is_error"].as_bool(), p["$ai_error"].as_str()), (Some(true), Some("rate limited")));
    assert_eq!(p["$ai_http_status"], 429);
    assert!(p.get("$ai_output_choices").is_none() && p.get("$ai_output_tokens").is_none());
    let typed = json!({"id": "gen-e", "created_at": "2026-11-22T10:00:00.000Z", "completed_at": "2026-11-22T10:00:00.100Z",
        "request": {"model": "m", "prompt": "hi"}, "error": {"type": "context_length_exceeded"}});
    let p = event_json(&generation(typed))["properties"].clone();
    assert_eq!(p["$ai_error"], "context_length_exceeded", "no message: the error type");
    assert!(p.get("$ai_http_status").is_none(), "a type is not a status");
    assert_eq!(p["$ai_input"], json!([{"role": "user", "content": "hi"}]));
}

#[test]
fn otlp_genai_spans_become_events_from_their_attributes() {
    let item = otlp_span(vec![
        attr::string("gen_ai.operation.name", "chat"),
        attr::string("gen_ai.provider.name", "openai"),
        attr::string("gen_ai.request.model", "gpt-4o"),
        attr::string("gen_ai.response.model", "gpt-4o-2024-08-06"),
        attr::string("gen_ai.response.id", "chatcmpl-123"),
        attr::int("gen_ai.usage.input_tokens", 7),
        attr::int("gen_ai.usage.output_tokens", 3),
        attr::int("gen_ai.usage.input_tokens.cached", 2),
        attr::double("gen_ai.usage.total_cost", 0.5),
        attr::int("http.response.status_code", 200),
        attr::string("user.id", "user_9"),
        attr::string("gen_ai.conversation.id", "conv_1"),
        attr::string("trace.metadata.feature", "assistant"),
        attr::int("trace.metadata.team.size", 4),
        attr::string(
            "gen_ai.input.messages",
            json!([{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                   {"role": "user", "parts": [{"type": "text", "content": "What "}, {"type": "text", "content": "time?"}]},
                   {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "10:00"}]}])
            .to_string(),
        ),
        attr::string(
            "gen_ai.output.messages",
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Ten."}], "finish_reason": "stop"}])
                .to_string(),
        ),
    ]);
    let event = event_json(&item);
    assert_eq!(
        (event["distinct_id"].as_str(), event["timestamp"].as_str()),
        (Some("user_9"), Some("2026-11-22T10:00:00.000Z"))
    );
    let p = &event["properties"];
    assert_eq!(p["$ai_trace_id"], "4b".repeat(16));
    assert_eq!(p["$ai_span_id"], "0f".repeat(8));
    assert!(p.get("$ai_parent_id").is_none() && p.get("$ai_span_name").is_none(), "`chat gpt-4o` is the default name");
    assert_eq!(p["$ai_session_id"], "conv_1");
    assert_eq!((p["$ai_model"].as_str(), p["$ai_provider"].as_str()), (Some("gpt-4o-2024-08-06"), Some("openai")));
    assert_eq!(
        p["$ai_input"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "What time?"},
               {"role": "tool", "content": [{"type": "tool_call_response", "id": "call_1", "response": "10:00"}]}])
    );
    assert_eq!(p["$ai_output_choices"], json!([{"role": "assistant", "content": "Ten."}]));
    assert_eq!((p["$ai_input_tokens"].as_i64(), p["$ai_output_tokens"].as_i64()), (Some(7), Some(3)));
    assert_eq!(p["$ai_cache_read_input_tokens"], 2);
    assert_eq!(p["$ai_total_cost_usd"], 0.5);
    assert_eq!(p["$ai_latency"], 0.75);
    assert_eq!((p["$ai_http_status"].as_i64(), p["$ai_is_error"].as_bool()), (Some(200), Some(false)));
    assert_eq!((p["feature"].as_str(), p["team.size"].as_i64()), (Some("assistant"), Some(4)));
    assert!(p.get("trace_name").is_none());

    // The older attributes OpenRouter's Broadcast and OpenLLMetry write.
    let legacy = otlp_span(vec![
        attr::string("gen_ai.request.model", "gpt-4o"),
        attr::string(
            "gen_ai.prompt",
            json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "old style"}]).to_string(),
        ),
        attr::string("gen_ai.completion", "old answer"),
    ]);
    let p = event_json(&legacy)["properties"].clone();
    assert_eq!(p["$ai_input"], json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "old style"}]));
    assert_eq!(p["$ai_output_choices"], json!([{"role": "assistant", "content": "old answer"}]));
    let text_prompt =
        otlp_span(vec![attr::string("gen_ai.request.model", "m"), attr::string("gen_ai.prompt", "Once upon")]);
    assert_eq!(event_json(&text_prompt)["properties"]["$ai_input"], json!([{"role": "user", "content": "Once upon"}]));
    assert_eq!(event_json(&text_prompt)["distinct_id"], "anonymous");
}

#[test]
fn spans_that_are_not_llm_calls_make_no_event() {
    assert!(mapper().event(&otlp_span(vec![attr::string("http.method", "POST")])).is_none());
    let mut root = generation(seed());
    root.generation = None;
    root.span.attributes.clear();
    root.span.name = "Time Check".into();
    assert!(mapper().event(&root).is_none());
}

#[test]
fn privacy_mode_leaves_the_content_out_and_sends_the_rest() {
    let mut record = seed();
    record["request"]["tools"] = json!([{"type": "function", "function": {"name": "clock"}}]);
    let full = event_json(&generation(record.clone()));
    let mut item = generation(record);
    strip_content(&mut item.span.attributes);
    let private = event_json(&item);
    let p = private["properties"].as_object().expect("properties");
    for key in ["$ai_input", "$ai_output_choices", "$ai_tools"] {
        assert!(full["properties"].get(key).is_some(), "{key} is sent without privacy_mode");
        assert!(p.get(key).is_none(), "{key} is left out");
    }
    let mut rest = full["properties"].as_object().expect("properties").clone();
    rest.retain(|k, _| !["$ai_input", "$ai_output_choices", "$ai_tools"].contains(&k.as_str()));
    assert_eq!(p, &rest, "tokens, cost, model, latency and metadata are all still sent");
    assert_eq!(
        (private["distinct_id"].clone(), private["uuid"].clone()),
        (full["distinct_id"].clone(), full["uuid"].clone())
    );
    let text = serde_json::to_string(&private).expect("JSON");
    assert!(!text.contains("What time is it?") && !text.contains("clock"), "{text}");
}

#[test]
fn large_events_are_cut_to_fit_and_metadata_alone_too_large_is_refused() {
    let mut record = seed();
    record["response"]["choices"][0]["message"]["content"] = json!("x\n".repeat(1_500_000));
    let encoded = encode(mapper().event(&generation(record)).expect("an event")).expect("fits once cut");
    assert!(encoded.len() <= MAX_EVENT_BYTES, "{}", encoded.len());
    let back: Value = serde_json::from_slice(&encoded).expect("JSON");
    let output = back["properties"]["$ai_output_choices"][0]["content"].as_str().expect("output");
    assert!(output.ends_with(TRUNCATION_MARKER) && output.len() > 300_000, "{} bytes", output.len());
    assert_eq!(back["properties"]["$ai_input"][0]["content"], "What time is it?", "the short prompt is kept whole");
    assert_eq!(back["properties"]["$ai_output_choices"][0]["role"], "assistant", "names are never cut");

    let mut record = seed();
    record["request"]["trace"]["blob"] = json!("y".repeat(MAX_EVENT_BYTES));
    let err = encode(mapper().event(&generation(record)).expect("an event")).expect_err("too large");
    assert_eq!(err.event_id, generation_uuid("gen-1795341912-fz1g3QwhZyyAC0gzg7UK"));
    assert!(err.to_string().contains("PostHog's limit") && !err.to_string().contains("yyyy"), "{err}");
}

#[test]
fn bodies_carry_the_key_and_respect_batch_size_and_five_mebibytes() {
    let open = body_open(KEY);
    let events: Vec<Vec<u8>> =
        (0..120).map(|i| encode(mapper().event(&with_id(i)).expect("event")).expect("fits")).collect();
    let bodies = body_shape(&open).bodies(&events, 50);
    let parsed: Vec<Value> = bodies.iter().map(|b| serde_json::from_slice(b).expect("a JSON body")).collect();
    assert_eq!(parsed.iter().map(|b| b["batch"].as_array().expect("batch").len()).collect::<Vec<_>>(), [50, 50, 20]);
    for body in &parsed {
        assert_eq!((body["api_key"].as_str(), body["historical_migration"].as_bool()), (Some(KEY), Some(false)));
    }
    let uuids: Vec<&Value> =
        parsed.iter().flat_map(|b| b["batch"].as_array().expect("batch")).map(|e| &e["uuid"]).collect();
    let expected: Vec<Value> = (0..120).map(|i| json!(generation_uuid(&format!("gen-{i}")))).collect();
    assert_eq!(uuids, expected.iter().collect::<Vec<_>>(), "in order, none lost");

    let big: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let mut record = seed();
            record["id"] = json!(format!("gen-big-{i}"));
            record["request"]["messages"][0]["content"] = json!("z".repeat(800_000));
            encode(mapper().event(&generation(record)).expect("event")).expect("fits")
        })
        .collect();
    let bodies = body_shape(&open).bodies(&big, 100);
    assert_eq!(bodies.len(), 2, "six 800 KB events per 5 MiB body at most");
    assert!(bodies.iter().all(|b| b.len() <= MAX_BODY_BYTES));
}

fn exporter(host: &str, batch_size: usize) -> PostHogExporter {
    let s = settings(&format!("api_key: {KEY}\nhost: {host}\nbatch_size: {batch_size}"));
    PostHogExporter::new("posthog", &s).expect("builds")
}

#[tokio::test]
async fn sends_batches_the_capture_endpoint_accepts() {
    let sink = PostHogSink::start(KEY).await.expect("sink");
    let items: Vec<SpanItem> = (0..5).map(with_id).collect();
    exporter(&sink.url(), 2).export(&items).await.expect("accepted");
    let requests = sink.requests();
    assert_eq!(requests.iter().map(|r| r.event_count()).collect::<Vec<_>>(), [2, 2, 1]);
    for r in &requests {
        assert_eq!((r.status(), r.path.as_str()), (Some(200), "/batch/"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), None, "the key travels in the body");
        assert_eq!(r.header("x-test-connection"), None);
        let body: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(body["api_key"], KEY);
    }
    assert_eq!(sink.events()[0], event_json(&items[0]));
    // The same generations again (a retried batch): the same uuids.
    exporter(&sink.url(), 50).export(&items).await.expect("accepted");
    let uuids: Vec<Value> = sink.events().iter().map(|e| e["uuid"].clone()).collect();
    assert_eq!(uuids[..5], uuids[5..]);
}

#[tokio::test]
async fn answers_are_classified_and_never_show_the_key() {
    let sink = PostHogSink::start(KEY).await.expect("sink");
    let exp = exporter(&sink.url(), 50);
    let batch = [generation(seed())];
    sink.script([Answer::status(429).retry_after(2)]);
    match exp.export(&batch).await {
        Err(ExportError::Retryable { retry_after, message }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(2)));
            assert!(message.starts_with("429 "), "{message}");
        }
        other => panic!("429 is retryable: {other:?}"),
    }
    sink.script([Answer::status(503)]);
    assert!(matches!(exp.export(&batch).await, Err(ExportError::Retryable { retry_after: None, .. })));
    for status in [400, 413] {
        sink.script([Answer::status(status).body(format!("invalid event for {KEY}"))]);
        match exp.export(&batch).await {
            // Refused for its content: the engine splits the batch to find the event.
            Err(ExportError::Refused { message }) => {
                assert!(message.starts_with(&format!("{status} invalid event for ***")), "{message}");
                assert!(message.contains(&sink.batch_url()) && !message.contains(KEY), "{message}");
            }
            other => panic!("{status} refuses the content: {other:?}"),
        }
    }
    let wrong =
        PostHogExporter::new("posthog", &settings(&format!("api_key: phc_wrongwrongwrong\nhost: {}", sink.url())))
            .expect("builds");
    let err = wrong.export(&batch).await.expect_err("401");
    let ExportError::Permanent { message } = &err else { panic!("a wrong key is permanent: {err:?}") };
    assert!(message.starts_with("401 API key is not valid") && !message.contains("wrongwrong"), "{message}");
    assert_eq!(sink.events().len(), 0);
}

#[tokio::test]
async fn test_connection_sends_one_marked_event_outside_llm_analytics() {
    let sink = PostHogSink::start(KEY).await.expect("sink");
    let status = exporter(&sink.url(), 50).test_connection().await.expect("passes");
    assert_eq!(status, "200 OK");
    let request = &sink.requests()[0];
    assert_eq!(request.header("x-test-connection"), Some("true"));
    let event = &sink.events()[0];
    assert_eq!(
        (event["event"].as_str(), event["distinct_id"].as_str()),
        (Some("gencol_test_connection"), Some("anonymous"))
    );
    assert_eq!(event["properties"]["gencol.test_connection"], true);
    assert_eq!(event["properties"]["$process_person_profile"], false);
    let uuid = event["uuid"].as_str().expect("uuid");
    assert_eq!(uuid.split('-').nth(2).map(|g| &g[..1]), Some("4"), "a random (version 4) uuid: {uuid}");
    let other = mapper().test_connection_event(Timestamp(0), [7; 16]);
    assert_ne!(other.uuid, uuid, "every test event is new");
}
