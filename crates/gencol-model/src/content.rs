//! Prompt and completion content in the OpenTelemetry GenAI structured form
//! (`[{role, parts:[{type:"text", content}…]}]`), from the three OpenAI-compatible
//! request shapes (chat `messages`, completions `prompt`, responses `input`).
//!
//! Chat messages and choices arrive as raw JSON text. The shape nearly every gateway sends
//! (a role and a text content) is read borrowed from that text and written straight out;
//! anything else (content parts, tool calls, tool results) is read as a JSON tree and goes
//! through the general rules. Both write the same bytes for the same message.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::generation::{Request, Response};
use crate::json_write::{write_list, write_raw_compact, write_str, write_value};

/// Compact JSON text of `value`, as serde_json writes it; this runs on every prompt and
/// completion, so it goes through [`crate::json_write`]'s faster string escaper.
pub(crate) fn json_text(value: &Value) -> String {
    into_text(0, |out| write_value(out, value))
}

/// Compact JSON text of an array of raw JSON values: as written, minus whitespace, unless a
/// string in it needs re-escaping (see [`write_raw_compact`]).
pub(crate) fn raw_array_text(items: &[Box<RawValue>]) -> String {
    into_text(raw_len(items), |out| write_list(out, items, |out, raw| write_raw(out, raw)))
}

fn write_raw(out: &mut Vec<u8>, raw: &RawValue) {
    if !write_raw_compact(out, raw.get()) {
        write_value(out, &tree(raw));
    }
}

/// A raw value as a JSON tree (it is valid JSON, so this cannot fail).
fn tree(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Room for the JSON written from `items`: their text plus the keys and brackets around it.
fn raw_len(items: &[Box<RawValue>]) -> usize {
    items.iter().map(|raw| raw.get().len() + 48).sum()
}

fn into_text(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(capacity);
    write(&mut out);
    // Written from `&str`s and ASCII only, so always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// A chat message with a role and text (or no) content: the plain shape.
#[derive(Deserialize)]
struct PlainMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

/// A response choice whose message is plain.
#[derive(Deserialize)]
struct PlainChoice<'a> {
    #[serde(borrow)]
    message: Option<PlainMessage<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

/// A message or choice, read once: plain and borrowed, or as a JSON tree.
enum Read<P> {
    Plain(P),
    Tree(Value),
}

fn read<'a, P: Deserialize<'a>>(raw: &'a RawValue, plain: impl Fn(&P) -> bool) -> Read<P> {
    match serde_json::from_str::<P>(raw.get()) {
        Ok(p) if plain(&p) => Read::Plain(p),
        _ => Read::Tree(tree(raw)),
    }
}

/// A response's choices, read once for the output messages, the completion text and the
/// finish reasons.
pub(crate) struct Choices<'a>(Vec<Read<PlainChoice<'a>>>);

impl<'a> Choices<'a> {
    pub(crate) fn read(raw: &'a [Box<RawValue>]) -> Self {
        let plain = |c: &PlainChoice<'_>| c.message.as_ref().is_some_and(|m| m.tool_calls.is_none());
        Choices(raw.iter().map(|r| read(r, plain)).collect())
    }

    /// Each choice's `finish_reason`, where it is text.
    pub(crate) fn finish_reasons(&self) -> Vec<String> {
        let reason = |c: &Read<PlainChoice<'_>>| match c {
            Read::Plain(c) => c.finish_reason.as_deref().map(str::to_owned),
            Read::Tree(c) => c.get("finish_reason").and_then(Value::as_str).map(str::to_owned),
        };
        self.0.iter().filter_map(reason).collect()
    }
}

/// Writes `{"finish_reason"?, "name"?, "parts":[text?], "role"}`, keys in the order
/// serde_json's sorted map writes them, as [`chat_message`] and [`output_messages`] do.
fn write_plain_message(out: &mut Vec<u8>, role: &str, name: Option<&str>, text: Option<&str>, finish: Option<&str>) {
    out.push(b'{');
    if let Some(f) = finish {
        out.extend_from_slice(b"\"finish_reason\":");
        write_str(out, f);
        out.push(b',');
    }
    if let Some(n) = name {
        out.extend_from_slice(b"\"name\":");
        write_str(out, n);
        out.push(b',');
    }
    out.extend_from_slice(b"\"parts\":[");
    if let Some(t) = text {
        out.extend_from_slice(b"{\"content\":");
        write_str(out, t);
        out.extend_from_slice(b",\"type\":\"text\"}");
    }
    out.extend_from_slice(b"],\"role\":");
    write_str(out, role);
    out.push(b'}');
}

/// `gen_ai.input.messages` for the request, as JSON text, when it has content.
pub fn input_messages(req: &Request) -> Option<String> {
    if let Some(messages) = &req.messages {
        let plain = |m: &PlainMessage<'_>| m.tool_calls.is_none() && m.role.as_deref() != Some("tool");
        return Some(into_text(raw_len(messages), |out| {
            write_list(out, messages, |out, raw| match read(raw, plain) {
                Read::Plain(m) => write_plain_message(
                    out,
                    m.role.as_deref().unwrap_or("user"),
                    m.name.as_deref(),
                    m.content.as_deref(),
                    None,
                ),
                Read::Tree(m) => write_value(out, &chat_message(&m)),
            })
        }));
    }
    let messages = if let Some(prompt) = &req.prompt {
        json!([{"role": "user", "parts": text_parts_of(prompt)}])
    } else {
        match &req.input {
            Some(Value::String(s)) => json!([{"role": "user", "parts": [text_part(s)]}]),
            Some(Value::Array(items)) => Value::Array(items.iter().map(responses_item).collect()),
            _ => return None,
        }
    };
    Some(json_text(&messages))
}

/// `gen_ai.system_instructions` (the responses API's `instructions`).
pub fn system_instructions(req: &Request) -> Option<Value> {
    req.instructions.as_deref().map(|s| json!([text_part(s)]))
}

/// `gen_ai.prompt`, the older form: the text of a plain prompt, else the request's
/// messages/input as JSON text.
pub fn legacy_prompt(req: &Request) -> Option<String> {
    if let Some(m) = &req.messages {
        return Some(raw_array_text(m));
    }
    match req.prompt.as_ref().or(req.input.as_ref())? {
        Value::String(s) => Some(s.clone()),
        other => Some(json_text(other)),
    }
}

/// `gen_ai.output.messages`, as JSON text: one message per choice (or per responses-API
/// output item).
pub(crate) fn output_messages(resp: &Response, choices: Option<&Choices<'_>>) -> Option<String> {
    if let Some(choices) = choices {
        let capacity = resp.choices.as_deref().map_or(0, raw_len);
        return Some(into_text(capacity, |out| {
            write_list(out, &choices.0, |out, choice| match choice {
                Read::Plain(c) => {
                    let m = c.message.as_ref();
                    let role = m.and_then(|m| m.role.as_deref()).unwrap_or("assistant");
                    let text = m.and_then(|m| m.content.as_deref());
                    write_plain_message(out, role, None, text, c.finish_reason.as_deref());
                }
                Read::Tree(c) => write_value(out, &output_message(c)),
            })
        }));
    }
    let items = resp.output.as_ref()?;
    Some(json_text(&Value::Array(items.iter().map(responses_item).collect())))
}

fn output_message(c: &Value) -> Value {
    let mut m = Map::new();
    let message = c.get("message");
    let role = message.and_then(|m| m.get("role")).and_then(Value::as_str).unwrap_or("assistant");
    m.insert("role".into(), role.into());
    let parts = match message {
        Some(msg) => message_parts(msg),
        None => c.get("text").map(text_parts_of).unwrap_or_default(),
    };
    m.insert("parts".into(), Value::Array(parts));
    if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
        m.insert("finish_reason".into(), f.clone());
    }
    Value::Object(m)
}

/// The completion text: the concatenated text parts of the first choice.
pub(crate) fn completion_text(resp: &Response, choices: Option<&Choices<'_>>) -> Option<String> {
    if let Some(choices) = choices {
        return match choices.0.first()? {
            Read::Plain(c) => c.message.as_ref().and_then(|m| m.content.as_deref()).map(str::to_owned),
            Read::Tree(first) => {
                let parts = match first.get("message") {
                    Some(msg) => message_parts(msg),
                    None => first.get("text").map(text_parts_of).unwrap_or_default(),
                };
                join_text(&parts)
            }
        };
    }
    let items = resp.output.as_ref()?;
    let parts: Vec<Value> = items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("message"))
        .flat_map(|i| responses_item(i).get("parts").and_then(Value::as_array).cloned().unwrap_or_default())
        .collect();
    join_text(&parts)
}

/// The text of the latest user message (what Raindrop shows as the input), from
/// structured input messages.
pub fn latest_user_text(input_messages: &Value) -> Option<String> {
    let messages = input_messages.as_array()?;
    let last = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    join_text(last.get("parts")?.as_array()?)
}

/// The concatenated text of the first output message, from structured output messages.
pub fn first_output_text(output_messages: &Value) -> Option<String> {
    join_text(output_messages.as_array()?.first()?.get("parts")?.as_array()?)
}

fn join_text(parts: &[Value]) -> Option<String> {
    let texts: Vec<&str> = parts
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|p| p.get("content").and_then(Value::as_str))
        .collect();
    (!texts.is_empty()).then(|| texts.concat())
}

fn text_part(s: &str) -> Value {
    json!({"type": "text", "content": s})
}

fn text_parts_of(v: &Value) -> Vec<Value> {
    match v {
        Value::String(s) => vec![text_part(s)],
        Value::Array(items) => items.iter().flat_map(text_parts_of).collect(),
        Value::Null => vec![],
        other => vec![text_part(&json_text(other))],
    }
}

fn chat_message(msg: &Value) -> Value {
    let role = msg.get("role").and_then(Value::as_str).unwrap_or("user");
    let mut m = Map::new();
    m.insert("role".into(), role.into());
    if let Some(name) = msg.get("name").and_then(Value::as_str) {
        m.insert("name".into(), name.into());
    }
    let parts = if role == "tool" {
        let response = msg.get("content").cloned().unwrap_or(Value::Null);
        vec![
            json!({"type": "tool_call_response", "id": msg.get("tool_call_id").cloned().unwrap_or(Value::Null), "response": response}),
        ]
    } else {
        message_parts(msg)
    };
    m.insert("parts".into(), Value::Array(parts));
    Value::Object(m)
}

/// Parts of an OpenAI chat message: its content (string or typed parts) and tool calls.
fn message_parts(msg: &Value) -> Vec<Value> {
    let mut parts = match msg.get("content") {
        Some(Value::Array(items)) => items.iter().map(content_part).collect(),
        Some(Value::Null) | None => vec![],
        Some(other) => text_parts_of(other),
    };
    if let Some(Value::Array(calls)) = msg.get("tool_calls") {
        for call in calls {
            let f = call.get("function");
            let arguments = f.and_then(|f| f.get("arguments")).map(parse_if_json).unwrap_or(Value::Null);
            parts.push(json!({
                "type": "tool_call",
                "id": call.get("id").cloned().unwrap_or(Value::Null),
                "name": f.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
                "arguments": arguments,
            }));
        }
    }
    parts
}

fn content_part(part: &Value) -> Value {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" | "input_text" | "output_text" => {
            text_part(part.get("text").and_then(Value::as_str).unwrap_or_default())
        }
        "image_url" => json!({
            "type": "uri", "modality": "image",
            "uri": part.get("image_url").and_then(|i| i.get("url").or(Some(i))).cloned().unwrap_or(Value::Null),
        }),
        "input_image" => {
            json!({"type": "uri", "modality": "image", "uri": part.get("image_url").cloned().unwrap_or(Value::Null)})
        }
        _ => part.clone(),
    }
}

fn responses_item(item: &Value) -> Value {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") => json!({
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                       "name": item.get("name").cloned().unwrap_or(Value::Null),
                       "arguments": item.get("arguments").map(parse_if_json).unwrap_or(Value::Null)}],
        }),
        Some("function_call_output") => json!({
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                       "response": item.get("output").cloned().unwrap_or(Value::Null)}],
        }),
        _ => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
            json!({"role": role, "parts": message_parts(item)})
        }
    }
}

fn parse_if_json(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Request {
        serde_json::from_value(v).unwrap()
    }

    fn parsed(text: Option<String>) -> Value {
        serde_json::from_str(&text.expect("content")).expect("valid JSON")
    }

    fn resp_parts(resp: &Response) -> (Value, Option<String>) {
        let choices = resp.choices.as_deref().map(Choices::read);
        (parsed(output_messages(resp, choices.as_ref())), completion_text(resp, choices.as_ref()))
    }

    #[test]
    fn chat_messages_become_parts() {
        let r = req(json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "What time"}, {"type": "text", "text": " is it?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\":\"UTC\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "10:00"}
        ]}));
        let msgs = parsed(input_messages(&r));
        assert_eq!(msgs[0], json!({"role": "system", "parts": [{"type": "text", "content": "be brief"}]}));
        assert_eq!(
            msgs[2]["parts"][0],
            json!({"type": "tool_call", "id": "c1", "name": "clock", "arguments": {"tz": "UTC"}})
        );
        assert_eq!(msgs[3]["parts"][0]["type"], "tool_call_response");
        assert_eq!(latest_user_text(&msgs).unwrap(), "What time is it?");
    }

    /// The plain shape is written directly; every message must come out byte for byte as
    /// the general (tree) rules write it.
    #[test]
    fn plain_messages_are_written_as_the_general_rules_write_them() {
        let messages = [
            json!({"role": "user", "content": "hi \"there\"\nnew line \u{1} é 日本"}),
            json!({"role": "system", "content": ""}),
            json!({"role": "assistant", "content": null}),
            json!({"role": "user", "name": "ana", "content": "x"}),
            json!({"content": "no role"}),
            json!({"role": null, "content": "null role"}),
            json!({"role": "user", "content": "x", "tool_calls": null, "extra": {"kept": "out"}}),
        ];
        for m in messages {
            let r = req(json!({"model": "m", "messages": [m.clone()]}));
            assert_eq!(input_messages(&r).unwrap(), json_text(&json!([chat_message(&m)])), "{m}");
        }
        let choices = [
            json!({"message": {"role": "assistant", "content": "It is \"ten\"."}, "finish_reason": "stop"}),
            json!({"message": {"content": "no role"}, "finish_reason": null, "index": 0}),
            json!({"message": {"role": "assistant", "content": null}}),
            json!({"message": {"role": "assistant", "content": ""}, "finish_reason": "length"}),
        ];
        for c in choices {
            let resp: Response = serde_json::from_value(json!({"choices": [c.clone()]})).unwrap();
            let read = Choices::read(resp.choices.as_deref().unwrap());
            assert!(matches!(read.0[0], Read::Plain(_)), "{c} takes the plain path");
            assert_eq!(output_messages(&resp, Some(&read)).unwrap(), json_text(&json!([output_message(&c)])), "{c}");
            let tree = Choices(vec![Read::Tree(c.clone())]);
            assert_eq!(completion_text(&resp, Some(&read)), completion_text(&resp, Some(&tree)), "{c}");
            assert_eq!(read.finish_reasons(), tree.finish_reasons(), "{c}");
        }
    }

    #[test]
    fn legacy_prompt_is_the_messages_compacted_and_re_escaped_where_needed() {
        let body = r#"{"model": "m", "messages": [ {"role": "user", "content": "a\nb"}, {"role":"user","content":"me\u0040example.com"} ]}"#;
        let r: Request = serde_json::from_str(body).unwrap();
        assert_eq!(
            legacy_prompt(&r).unwrap(),
            r#"[{"role":"user","content":"a\nb"},{"content":"me@example.com","role":"user"}]"#
        );
    }

    #[test]
    fn prompt_and_responses_input() {
        let r = req(json!({"model": "m", "prompt": "Once upon"}));
        assert_eq!(
            parsed(input_messages(&r)),
            json!([{"role": "user", "parts": [{"type": "text", "content": "Once upon"}]}])
        );
        assert_eq!(legacy_prompt(&r).unwrap(), "Once upon");
        let r = req(
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}], "instructions": "be kind"}),
        );
        assert_eq!(latest_user_text(&parsed(input_messages(&r))).unwrap(), "hi");
        assert_eq!(system_instructions(&r).unwrap(), json!([{"type": "text", "content": "be kind"}]));
    }

    #[test]
    fn completion_text_of_each_response_shape() {
        let chat: Response = serde_json::from_value(
            json!({"choices": [{"message": {"role": "assistant", "content": "It is ten."}, "finish_reason": "stop"}]}),
        )
        .unwrap();
        let (out, text) = resp_parts(&chat);
        assert_eq!(text.unwrap(), "It is ten.");
        assert_eq!(out[0]["finish_reason"], "stop");
        let legacy: Response =
            serde_json::from_value(json!({"choices": [{"text": "upon a time", "finish_reason": "length"}]})).unwrap();
        assert_eq!(resp_parts(&legacy).1.unwrap(), "upon a time");
        let responses: Response = serde_json::from_value(json!({"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]})).unwrap();
        let (out, text) = resp_parts(&responses);
        assert_eq!(text.unwrap(), "Hello");
        assert_eq!(first_output_text(&out).unwrap(), "Hello");
    }
}
