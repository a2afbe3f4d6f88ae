//! Field-by-field comparison of two sets of MLflow traces as
//! tests/support/python/autolog_traces.py prints them (`{call: {"info",
//! "spans", "error"}}`): MLflow's own autologging (the reference) against
//! llmtap's. Pure.
//!
//! The rules: every field the reference has must be in llmtap's trace with
//! an equal value (numbers compared as numbers, arrays element by element
//! with equal lengths); fields only llmtap has are extras and allowed; a
//! reference call without a trace (autolog records none) is skipped; an
//! object llmtap lacks is compared as an empty one, field by field. An
//! [`Allow`] entry relaxes one field: [`Rule::Ignore`] (any value, or
//! absent) or [`Rule::SdkModel`] (the reference's `null` fields may be
//! absent — the SDK object's `model_dump()` has every field it models —
//! and JSON text is compared as the JSON it holds). An entry naming the
//! call beats one for every call.
#![allow(dead_code)]

use serde_json::Value;

/// How an allowed difference is compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Ignore,
    SdkModel,
    /// Numbers equal to 1e-9 relative (JSON text compared as the JSON it
    /// holds): sums of floats where one side carries binary noise.
    Approx,
}

/// One allowed difference: `path` from the call's object (`"*"` matches
/// any one segment), for `calls` (empty: every call), and why.
pub struct Allow {
    pub calls: &'static [&'static str],
    pub path: &'static [&'static str],
    pub rule: Rule,
    pub why: &'static str,
}

/// Every difference, one line each (`call: path: what`); empty when the
/// traces agree.
pub fn diff(reference: &Value, llmtap: &Value, allow: &[Allow]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(calls) = reference.as_object() else {
        return vec![format!("the reference is not an object: {reference}")];
    };
    for (call, want) in calls {
        if want["info"].is_null() {
            continue; // autolog recorded nothing: whatever llmtap has is an extra
        }
        let Some(got) = llmtap.get(call) else {
            out.push(format!("{call}: llmtap has no trace"));
            continue;
        };
        let mut d = Diff {
            call,
            allow,
            out: &mut out,
        };
        d.value(want, got, &mut Vec::new(), false);
    }
    out
}

struct Diff<'a> {
    call: &'a str,
    allow: &'a [Allow],
    out: &'a mut Vec<String>,
}

impl Diff<'_> {
    /// The rule for `path`: an entry naming this call beats one for every call.
    fn rule(&self, path: &[String]) -> Option<Rule> {
        let matches = |a: &&Allow| {
            a.path.len() == path.len() && a.path.iter().zip(path).all(|(p, s)| *p == "*" || p == s)
        };
        let named = self
            .allow
            .iter()
            .filter(matches)
            .find(|a| a.calls.contains(&self.call));
        named
            .or_else(|| {
                self.allow
                    .iter()
                    .filter(matches)
                    .find(|a| a.calls.is_empty())
            })
            .map(|a| a.rule)
    }

    fn push(&mut self, path: &[String], what: String) {
        self.out
            .push(format!("{}: {}: {what}", self.call, path.join(" / ")));
    }

    fn approx(&mut self, want: &Value, got: &Value, path: &mut Vec<String>) {
        let as_json = |v: &Value| match v {
            Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
            _ => v.clone(),
        };
        let close = |w: f64, g: f64| (w - g).abs() <= 1e-9 * w.abs().max(g.abs());
        match (as_json(want), as_json(got)) {
            (Value::Object(w), Value::Object(g)) => {
                for (k, wv) in &w {
                    path.push(k.clone());
                    match g.get(k) {
                        Some(gv) => self.approx(wv, gv, path),
                        None => self.push(path, format!("missing in llmtap (autolog: {wv})")),
                    }
                    path.pop();
                }
            }
            (Value::Number(w), Value::Number(g)) => {
                let (w, g) = (
                    w.as_f64().unwrap_or(f64::NAN),
                    g.as_f64().unwrap_or(f64::NAN),
                );
                if !close(w, g) {
                    self.push(path, format!("autolog {w} != llmtap {g} (beyond 1e-9)"));
                }
            }
            (w, g) if w == g => {}
            (w, g) => self.push(path, format!("autolog {w} != llmtap {g}")),
        }
    }

    fn value(&mut self, want: &Value, got: &Value, path: &mut Vec<String>, loose: bool) {
        let loose = match self.rule(path) {
            Some(Rule::Ignore) => return,
            Some(Rule::SdkModel) => true,
            Some(Rule::Approx) => return self.approx(want, got, path),
            None => loose,
        };
        match (want, got) {
            (Value::Object(w), Value::Object(g)) => {
                for (k, wv) in w {
                    path.push(k.clone());
                    match g.get(k) {
                        Some(gv) => self.value(wv, gv, path, loose),
                        None if loose && wv.is_null() => {}
                        None if self.rule(path) == Some(Rule::Ignore) => {}
                        // Compare its fields one by one (some may be allowed).
                        None if wv.is_object() => {
                            self.value(wv, &Value::Object(Default::default()), path, loose)
                        }
                        None => self.push(path, format!("missing in llmtap (autolog: {wv})")),
                    }
                    path.pop();
                }
            }
            (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
                for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                    path.push(i.to_string());
                    self.value(wv, gv, path, loose);
                    path.pop();
                }
            }
            (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => {}
            (Value::String(w), Value::String(g)) if loose && w != g => {
                match (serde_json::from_str(w), serde_json::from_str(g)) {
                    (Ok(wv @ Value::Object(_)), Ok(gv @ Value::Object(_))) => {
                        self.value(&wv, &gv, path, true)
                    }
                    _ => self.push(path, format!("autolog {want} != llmtap {got}")),
                }
            }
            _ if want == got => {}
            _ => self.push(path, format!("autolog {want} != llmtap {got}")),
        }
    }
}
