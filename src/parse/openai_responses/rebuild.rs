//! Rebuilding the equivalent non-stream `response` object from the events of
//! a Responses-API stream (see the parent module): the terminal event's
//! response as is, or, when the stream was cut before it, the skeleton from
//! `response.created` / `in_progress` plus the output items, finished ones
//! from `response.output_item.done`, unfinished ones assembled from their
//! text, refusal, reasoning and function-call-argument deltas.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::parse::common::{bounded_entry, MAX_PARTS, MAX_SUBPARTS};
use crate::parse::outcome::StreamFacts;
use crate::parse::sse::SseEvent;

/// Merged state of a whole stream.
#[derive(Debug, Default)]
pub(super) struct StreamAcc {
    /// `response` of the latest `response.created` / `queued` / `in_progress`.
    skeleton: Option<Value>,
    /// `response` of the terminal event.
    terminal: Option<Value>,
    /// Output items by `output_index` (at most `MAX_PARTS`).
    items: BTreeMap<u64, ItemAcc>,
    /// Takes the events of items past `MAX_PARTS`; never output.
    spare: ItemAcc,
}

/// Merged state of one output item.
#[derive(Debug, Default)]
struct ItemAcc {
    /// The item as announced by `output_item.added`, or as finished by
    /// `output_item.done` (then `done`).
    item: Option<Value>,
    done: bool,
    /// `item_id` of delta events, for an item never announced.
    id: Option<String>,
    /// The item type implied by its delta events, for an item never announced.
    kind: Option<&'static str>,
    /// Message / reasoning content parts by `content_index`.
    content: BTreeMap<u64, Value>,
    /// Reasoning summary parts by `summary_index`.
    summary: BTreeMap<u64, Value>,
    /// Function-call arguments assembled from deltas.
    arguments: Option<String>,
    /// Takes the events of parts past `MAX_SUBPARTS`; never output.
    spare: Value,
}

/// Which part list of an item an event addresses, and the part's default shape.
#[derive(Clone, Copy)]
enum Part {
    OutputText,
    Refusal,
    ReasoningText,
    Summary,
}

/// A text event's part and whether it is a `.delta` (else a `.done`).
fn text_event(kind: &str) -> Option<(Part, bool)> {
    let (stem, is_delta) = match kind.strip_suffix(".delta") {
        Some(stem) => (stem, true),
        None => (kind.strip_suffix(".done")?, false),
    };
    let part = match stem {
        "response.output_text" => Part::OutputText,
        "response.refusal" => Part::Refusal,
        "response.reasoning_text" => Part::ReasoningText,
        "response.reasoning_summary_text" => Part::Summary,
        _ => return None,
    };
    Some((part, is_delta))
}

impl Part {
    /// The event field indexing the part within its item.
    fn index_key(self) -> &'static str {
        match self {
            Part::Summary => "summary_index",
            _ => "content_index",
        }
    }

    /// Visible output (text or refusal), as opposed to reasoning.
    fn is_output(self) -> bool {
        matches!(self, Part::OutputText | Part::Refusal)
    }

    /// The field holding the part's text.
    fn field(self) -> &'static str {
        match self {
            Part::Refusal => "refusal",
            _ => "text",
        }
    }

    fn skeleton(self) -> Value {
        match self {
            Part::OutputText => json!({"type": "output_text", "annotations": [], "text": ""}),
            Part::Refusal => json!({"type": "refusal", "refusal": ""}),
            Part::ReasoningText => json!({"type": "reasoning_text", "text": ""}),
            Part::Summary => json!({"type": "summary_text", "text": ""}),
        }
    }

    /// The item type that holds this part.
    fn item_kind(self) -> &'static str {
        match self {
            Part::OutputText | Part::Refusal => "message",
            Part::ReasoningText | Part::Summary => "reasoning",
        }
    }
}

impl StreamAcc {
    /// The terminal event's `response`, once seen.
    pub(super) fn terminal(&self) -> Option<&Value> {
        self.terminal.as_ref()
    }

    /// Merge one (non-error) event.
    pub(super) fn absorb(&mut self, v: &Value, ev: &SseEvent, facts: &mut StreamFacts) {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or_default();
        let response = v.get("response").filter(|r| r.is_object());
        let mut token = false;
        match kind {
            "response.created" | "response.queued" | "response.in_progress" => {
                if let Some(r) = response {
                    self.skeleton = Some(r.clone());
                }
            }
            "response.completed" | "response.failed" | "response.incomplete" => {
                facts.saw_end = true;
                if let Some(r) = response {
                    self.terminal = Some(r.clone());
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let done = kind.ends_with("done");
                if let Some(item) = v.get("item").filter(|i| i.is_object()) {
                    let acc = self.slot(v);
                    // A finished item is final; a late `added` does not undo it.
                    if done || !acc.done {
                        acc.item = Some(item.clone());
                        acc.done = done;
                    }
                }
            }
            "response.content_part.added" | "response.content_part.done" => {
                self.set_part(v, Part::OutputText);
            }
            "response.reasoning_summary_part.added" | "response.reasoning_summary_part.done" => {
                self.set_part(v, Part::Summary);
            }
            "response.function_call_arguments.delta" => {
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or_default();
                let acc = self.slot(v);
                acc.kind.get_or_insert("function_call");
                acc.arguments
                    .get_or_insert_with(String::new)
                    .push_str(delta);
                token = !delta.is_empty();
            }
            "response.function_call_arguments.done" => {
                if let Some(args) = v.get("arguments").and_then(Value::as_str) {
                    let acc = self.slot(v);
                    acc.kind.get_or_insert("function_call");
                    acc.arguments = Some(args.to_owned());
                }
            }
            _ => match text_event(kind) {
                Some((part, true)) => token = self.append(v, part) && part.is_output(),
                Some((part, false)) => self.replace(v, part),
                None => {} // other tools' events, annotations, ...
            },
        }
        if token {
            facts.first_token_offset.get_or_insert(ev.start);
        }
    }

    /// The item an event addresses: by `output_index`, else by `item_id`,
    /// else a new one after the last.
    fn slot(&mut self, v: &Value) -> &mut ItemAcc {
        let item_id = v.get("item_id").and_then(Value::as_str);
        let index = v
            .get("output_index")
            .and_then(Value::as_u64)
            .or_else(|| {
                let id = item_id?;
                self.items
                    .iter()
                    .find(|(_, it)| it.item_id() == Some(id))
                    .map(|(i, _)| *i)
            })
            .unwrap_or_else(|| {
                self.items
                    .keys()
                    .next_back()
                    .map_or(0, |k| k.saturating_add(1))
            });
        let acc = bounded_entry(&mut self.items, index, MAX_PARTS, &mut self.spare);
        if acc.id.is_none() {
            acc.id = item_id.map(str::to_owned);
        }
        acc
    }

    /// The part list and entry an event addresses.
    fn part(&mut self, v: &Value, part: Part) -> &mut Value {
        let index = v.get(part.index_key()).and_then(Value::as_u64).unwrap_or(0);
        let acc = self.slot(v);
        acc.kind.get_or_insert(part.item_kind());
        let list = match part {
            Part::Summary => &mut acc.summary,
            _ => &mut acc.content,
        };
        // A new entry is `Null`, replaced by the part's skeleton just below.
        let entry = bounded_entry(list, index, MAX_SUBPARTS, &mut acc.spare);
        if !entry.is_object() {
            *entry = part.skeleton();
        }
        entry
    }

    /// `content_part.*` / `reasoning_summary_part.*`: take the event's part.
    fn set_part(&mut self, v: &Value, part: Part) {
        if let Some(p) = v.get("part").filter(|p| p.is_object()) {
            *self.part(v, part) = p.clone();
        }
    }

    /// A text delta; true when it carried output text.
    fn append(&mut self, v: &Value, part: Part) -> bool {
        let delta = v.get("delta").and_then(Value::as_str).unwrap_or_default();
        if let Some(obj) = self.part(v, part).as_object_mut() {
            match obj.get_mut(part.field()) {
                Some(Value::String(s)) => s.push_str(delta),
                _ => {
                    obj.insert(part.field().into(), delta.into());
                }
            }
        }
        !delta.is_empty()
    }

    /// A `*.done` event with the part's full text.
    fn replace(&mut self, v: &Value, part: Part) {
        if let Some(text) = v.get(part.field()).and_then(Value::as_str) {
            if let Some(obj) = self.part(v, part).as_object_mut() {
                obj.insert(part.field().into(), text.into());
            }
        }
    }

    /// The equivalent non-stream response: the terminal object (its empty
    /// `output` filled from the streamed items), else the skeleton with the
    /// streamed items and without usage. `None` when there is neither and no
    /// item.
    pub(super) fn build(&self) -> Option<Value> {
        let items: Vec<Value> = self.items.values().map(ItemAcc::to_json).collect();
        if let Some(terminal) = &self.terminal {
            let mut resp = terminal.clone();
            let has_output = resp
                .get("output")
                .and_then(Value::as_array)
                .is_some_and(|o| !o.is_empty());
            if let Some(obj) = resp
                .as_object_mut()
                .filter(|_| !has_output && !items.is_empty())
            {
                obj.insert("output".into(), Value::Array(items));
            }
            return Some(resp);
        }
        if self.skeleton.is_none() && items.is_empty() {
            return None;
        }
        let mut resp = match &self.skeleton {
            Some(Value::Object(obj)) => obj.clone(),
            _ => {
                let mut obj = Map::new();
                obj.insert("object".into(), "response".into());
                obj
            }
        };
        // Usage belongs to the terminal event only; a skeleton's is not final.
        if let Some(usage) = resp.get_mut("usage") {
            *usage = Value::Null;
        }
        resp.insert("output".into(), Value::Array(items));
        Some(Value::Object(resp))
    }
}

impl ItemAcc {
    fn item_id(&self) -> Option<&str> {
        self.item
            .as_ref()
            .and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .or(self.id.as_deref())
    }

    fn to_json(&self) -> Value {
        let mut item = match &self.item {
            Some(Value::Object(obj)) if self.done => return Value::Object(obj.clone()),
            Some(Value::Object(obj)) => obj.clone(),
            _ => self.skeleton(),
        };
        if !self.content.is_empty() {
            item.insert(
                "content".into(),
                self.content.values().cloned().collect::<Vec<_>>().into(),
            );
        }
        if !self.summary.is_empty() {
            item.insert(
                "summary".into(),
                self.summary.values().cloned().collect::<Vec<_>>().into(),
            );
        }
        if let Some(args) = &self.arguments {
            item.insert("arguments".into(), args.clone().into());
        }
        Value::Object(item)
    }

    /// An in-progress item of the type its deltas imply.
    fn skeleton(&self) -> Map<String, Value> {
        let mut item = Map::new();
        if let Some(id) = &self.id {
            item.insert("id".into(), id.clone().into());
        }
        let kind = self.kind.unwrap_or("message");
        item.insert("type".into(), kind.into());
        match kind {
            "message" => {
                item.insert("status".into(), "in_progress".into());
                item.insert("content".into(), json!([]));
                item.insert("role".into(), "assistant".into());
            }
            "function_call" => {
                item.insert("status".into(), "in_progress".into());
                item.insert("arguments".into(), "".into());
            }
            _ => {
                item.insert("summary".into(), json!([]));
            }
        }
        item
    }
}
