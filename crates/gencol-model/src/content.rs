//! Prompt and completion content in the OpenTelemetry GenAI structured form
//! (`[{role, parts:[{type:"text", content}…]}]`), from the three OpenAI-compatible
//! request shapes (chat `messages`, completions `prompt`, responses `input`).

use serde_json::{Map, Value, json};

use crate::generation::{Request, Response};

/// Compact JSON text of `value`, as serde_json writes it; this runs on every prompt and
/// completion, so it goes through [`crate::json_write`]'s faster string escaper.
pub(crate) fn json_text(value: &Value) -> String {
    into_text(|out| crate::json_write::write_value(out, value))
}

/// Compact JSON text of an array of values.
pub(crate) fn json_array_text(items: &[Value]) -> String {
    into_text(|out| crate::json_write::write_array(out, items))
}

fn into_text(write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    write(&mut out);
    // Written from `&str`s and ASCII only, so always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// `gen_ai.input.messages` for the request, when it has content.
pub fn input_messages(req: &Request) -> Option<Value> {
    if let Some(messages) = &req.messages {
        return Some(Value::Array(messages.iter().map(chat_message).collect()));
    }
    if let Some(prompt) = &req.prompt {
        return Some(json!([{"role": "user", "parts": text_parts_of(prompt)}]));
    }
    match &req.input {
        Some(Value::String(s)) => Some(json!([{"role": "user", "parts": [text_part(s)]}])),
        Some(Value::Array(items)) => Some(Value::Array(items.iter().map(responses_item).collect())),
        _ => None,
    }
}

/// `gen_ai.system_instructions` (the responses API's `instructions`).
pub fn system_instructions(req: &Request) -> Option<Value> {
    req.instructions.as_deref().map(|s| json!([text_part(s)]))
}

/// `gen_ai.prompt`, the older form: the text of a plain prompt, else the request's
/// messages/input as JSON text.
pub fn legacy_prompt(req: &Request) -> Option<String> {
    if let Some(m) = &req.messages {
        return Some(json_array_text(m));
    }
    match req.prompt.as_ref().or(req.input.as_ref())? {
        Value::String(s) => Some(s.clone()),
        other => Some(json_text(other)),
    }
}

/// `gen_ai.output.messages`: one message per choice (or per responses-API output item).
pub fn output_messages(resp: &Response) -> Option<Value> {
    if let Some(choices) = &resp.choices {
        let out = choices
            .iter()
            .map(|c| {
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
            })
            .collect();
        return Some(Value::Array(out));
    }
    let items = resp.output.as_ref()?;
    Some(Value::Array(items.iter().map(responses_item).collect()))
}

/// The completion text: the concatenated text parts of the first choice.
pub fn completion_text(resp: &Response) -> Option<String> {
    if let Some(choices) = &resp.choices {
        let first = choices.first()?;
        let parts = match first.get("message") {
            Some(msg) => message_parts(msg),
            None => first.get("text").map(text_parts_of).unwrap_or_default(),
        };
        return join_text(&parts);
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

    #[test]
    fn chat_messages_become_parts() {
        let r = req(json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "What time"}, {"type": "text", "text": " is it?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\":\"UTC\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "10:00"}
        ]}));
        let msgs = input_messages(&r).unwrap();
        assert_eq!(msgs[0], json!({"role": "system", "parts": [{"type": "text", "content": "be brief"}]}));
        assert_eq!(
            msgs[2]["parts"][0],
            json!({"type": "tool_call", "id": "c1", "name": "clock", "arguments": {"tz": "UTC"}})
        );
        assert_eq!(msgs[3]["parts"][0]["type"], "tool_call_response");
        assert_eq!(latest_user_text(&msgs).unwrap(), "What time is it?");
    }

    #[test]
    fn prompt_and_responses_input() {
        let r = req(json!({"model": "m", "prompt": "Once upon"}));
        assert_eq!(
            input_messages(&r).unwrap(),
            json!([{"role": "user", "parts": [{"type": "text", "content": "Once upon"}]}])
        );
        assert_eq!(legacy_prompt(&r).unwrap(), "Once upon");
        let r = req(
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}], "instructions": "be kind"}),
        );
        assert_eq!(latest_user_text(&input_messages(&r).unwrap()).unwrap(), "hi");
        assert_eq!(system_instructions(&r).unwrap(), json!([{"type": "text", "content": "be kind"}]));
    }

    #[test]
    fn completion_text_of_each_response_shape() {
        let chat: Response = serde_json::from_value(
            json!({"choices": [{"message": {"role": "assistant", "content": "It is ten."}, "finish_reason": "stop"}]}),
        )
        .unwrap();
        assert_eq!(completion_text(&chat).unwrap(), "It is ten.");
        assert_eq!(output_messages(&chat).unwrap()[0]["finish_reason"], "stop");
        let legacy: Response =
            serde_json::from_value(json!({"choices": [{"text": "upon a time", "finish_reason": "length"}]})).unwrap();
        assert_eq!(completion_text(&legacy).unwrap(), "upon a time");
        let responses: Response = serde_json::from_value(json!({"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]})).unwrap();
        assert_eq!(completion_text(&responses).unwrap(), "Hello");
        assert_eq!(first_output_text(&output_messages(&responses).unwrap()).unwrap(), "Hello");
    }
}
