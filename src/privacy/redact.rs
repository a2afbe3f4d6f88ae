//! The redaction engine: rules (a regex and its replacement) compiled once
//! at config load, run over text.
//!
//! Every rule's matches are found on the original text, then overlapping
//! ones are resolved (the earliest wins, then the longest), so the rules'
//! order does not change the result and one replacement is never matched
//! by another rule. [`Redactor::redact_pieces`] does the same over text
//! that arrived in pieces (a streamed answer's deltas): the matches are
//! found on the pieces joined, and each piece keeps only what lies outside
//! every match, the replacement going to the piece where the match began —
//! no piece keeps a fragment of a secret split across pieces.
//!
//! Bounded: at most [`MAX_RULES`] rules, patterns at most
//! [`MAX_PATTERN`] bytes, each compiled within [`SIZE_LIMIT`]; the `regex`
//! crate matches in time linear in the text.

use regex::{Regex, RegexBuilder};

use super::detectors::{self, Detector};

/// Rules (built-in and configured together) at most.
pub const MAX_RULES: usize = 64;
/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 4096;
/// Compiled size limit of one rule's regex.
pub const SIZE_LIMIT: usize = 1 << 20;

/// A configured rule, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// How the rule is named in errors and logs (never its pattern, which
    /// may spell what it hides).
    pub name: String,
    pub pattern: String,
    /// `$1`, `${name}` expand to the match's groups.
    pub replacement: String,
}

struct Rule {
    name: String,
    regex: Regex,
    replacement: String,
    check: Option<fn(&str) -> bool>,
}

/// The compiled rules.
pub struct Redactor {
    rules: Vec<Rule>,
    /// What it was built from (equality and display).
    builtin: Vec<String>,
    specs: Vec<RuleSpec>,
}

impl std::fmt::Debug for Redactor {
    // Names only: a pattern may spell the secret it hides.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| &r.name))
            .finish()
    }
}

impl PartialEq for Redactor {
    fn eq(&self, other: &Self) -> bool {
        self.builtin == other.builtin && self.specs == other.specs
    }
}

/// One match to replace: a byte range of the text and its replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub replacement: String,
}

fn compile(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!("pattern longer than {MAX_PATTERN} bytes"));
    }
    RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(2 * SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid pattern: {}", describe(&e)))
}

/// A compile error without the pattern (the `regex` crate quotes it).
fn describe(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("syntax error")
            .to_string(),
        other => other.to_string(),
    }
}

impl Redactor {
    /// Compiles the named built-in detectors and the configured rules;
    /// every problem is reported, naming the rule.
    pub fn new(builtin: &[String], specs: &[RuleSpec]) -> Result<Redactor, Vec<String>> {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for name in builtin {
            match detectors::by_name(name) {
                Some(d) => rules.push(from_detector(d)),
                None => errors.push(format!(
                    "unknown detector {name:?} (known: {})",
                    detectors::names()
                )),
            }
        }
        for s in specs {
            if s.pattern.is_empty() {
                errors.push(format!("{}: empty pattern", s.name));
                continue;
            }
            match compile(&s.pattern) {
                Ok(regex) => rules.push(Rule {
                    name: s.name.clone(),
                    regex,
                    replacement: s.replacement.clone(),
                    check: None,
                }),
                Err(e) => errors.push(format!("{}: {e}", s.name)),
            }
        }
        if rules.len() > MAX_RULES {
            errors.push(format!("{} rules: at most {MAX_RULES}", rules.len()));
        }
        match errors.is_empty() {
            true => Ok(Redactor {
                rules,
                builtin: builtin.to_vec(),
                specs: specs.to_vec(),
            }),
            false => Err(errors),
        }
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The matches of every rule in `text`, in order, without overlaps.
    pub fn hits(&self, text: &str) -> Vec<Hit> {
        let mut all = Vec::new();
        for rule in &self.rules {
            rule.find(text, &mut all);
        }
        all.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        let mut out: Vec<Hit> = Vec::with_capacity(all.len());
        for h in all {
            if out.last().is_none_or(|last| h.start >= last.end) {
                out.push(h);
            }
        }
        out
    }

    /// `text` redacted; `None` when nothing matched.
    pub fn redact_str(&self, text: &str) -> Option<String> {
        self.redact_counted(text, |r| r.into()).map(|(s, _)| s)
    }

    /// `text` redacted, each replacement passed through `show` first (to
    /// escape it for where the text goes), and the number of matches;
    /// `None` when nothing matched.
    pub fn redact_counted(
        &self,
        text: &str,
        show: impl Fn(&str) -> std::borrow::Cow<'_, str>,
    ) -> Option<(String, usize)> {
        let hits = self.hits(text);
        if hits.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for h in &hits {
            out.push_str(&text[at..h.start]);
            out.push_str(&show(&h.replacement));
            at = h.end;
        }
        out.push_str(&text[at..]);
        Some((out, hits.len()))
    }

    /// Redacts text that arrived in `pieces` as if it were one string (see
    /// the module docs); returns how many matches were replaced.
    pub fn redact_pieces(&self, pieces: &mut [String]) -> usize {
        let joined = pieces.concat();
        let hits = self.hits(&joined);
        if hits.is_empty() {
            return 0;
        }
        let mut offset = 0;
        for piece in pieces.iter_mut() {
            let (start, end) = (offset, offset + piece.len());
            offset = end;
            if !hits.iter().any(|h| h.start < end && h.end > start) {
                continue;
            }
            *piece = rebuild_piece(&joined, start, end, &hits);
        }
        hits.len()
    }
}

/// The piece `joined[start..end]` with every hit's bytes removed and each
/// hit's replacement where the hit begins.
fn rebuild_piece(joined: &str, start: usize, end: usize, hits: &[Hit]) -> String {
    let mut out = String::new();
    let mut at = start;
    for h in hits.iter().filter(|h| h.start < end && h.end > start) {
        if h.start >= at {
            out.push_str(&joined[at..h.start]);
            out.push_str(&h.replacement);
        }
        at = h.end.min(end).max(at);
    }
    out.push_str(&joined[at..end]);
    out
}

impl Rule {
    /// Appends this rule's accepted matches in `text` to `out`.
    fn find(&self, text: &str, out: &mut Vec<Hit>) {
        let accept = |m: &regex::Match<'_>| {
            !m.is_empty() && self.check.is_none_or(|check| check(m.as_str()))
        };
        let hit = |m: regex::Match<'_>, replacement: String| Hit {
            start: m.start(),
            end: m.end(),
            replacement,
        };
        // Group references need the slower captures search.
        if !self.replacement.contains('$') {
            let matches = self.regex.find_iter(text).filter(accept);
            out.extend(matches.map(|m| hit(m, self.replacement.clone())));
            return;
        }
        for caps in self.regex.captures_iter(text) {
            let Some(m) = caps.get(0).filter(accept) else {
                continue;
            };
            let mut replacement = String::new();
            caps.expand(&self.replacement, &mut replacement);
            out.push(hit(m, replacement));
        }
    }
}

fn from_detector(d: &Detector) -> Rule {
    Rule {
        name: d.name.to_string(),
        // The built-in patterns are tested to compile within the limits.
        regex: compile(d.pattern).unwrap_or_else(|e| panic!("built-in {}: {e}", d.name)),
        replacement: d.replacement.to_string(),
        check: d.check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, pattern: &str, replacement: &str) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            pattern: pattern.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn every_builtin_compiles() {
        let names: Vec<String> = detectors::ALL.iter().map(|d| d.name.to_string()).collect();
        assert_eq!(Redactor::new(&names, &[]).unwrap().rules.len(), 4);
    }

    #[test]
    fn bad_rules_are_reported_by_name_without_their_pattern() {
        let err = Redactor::new(
            &["email".into(), "ssn".into()],
            &[
                spec("redact[0]", "(unclosed", "x"),
                spec("redact[1]", "", "x"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(err[0].contains("unknown detector \"ssn\""));
        assert!(err[1].starts_with("redact[0]: invalid pattern"));
        assert!(err[2].starts_with("redact[1]: empty pattern"));
        let huge = "a{1000}{1000}";
        let err = Redactor::new(&[], &[spec("big", huge, "x")]).unwrap_err();
        assert!(err[0].starts_with("big: invalid pattern"), "{err:?}");
    }

    #[test]
    fn replacements_expand_groups_and_overlaps_resolve() {
        let r = Redactor::new(
            &[],
            &[
                spec("a", r"order-(\d+)", "order-<$1>"),
                spec("b", r"\d{3}", "###"),
            ],
        )
        .unwrap();
        assert_eq!(
            r.redact_str("order-12345 and 999").unwrap(),
            "order-<12345> and ###"
        );
        assert_eq!(r.redact_str("nothing"), None);
        let dbg = format!("{r:?}");
        assert!(dbg.contains("\"a\"") && !dbg.contains("order-"), "{dbg}");
    }

    #[test]
    fn a_secret_split_across_pieces_leaves_no_fragment() {
        let r = Redactor::new(&["email".into()], &[]).unwrap();
        let mut pieces: Vec<String> = ["Write to ali", "ce@", "example.", "com today", "!"]
            .map(String::from)
            .to_vec();
        assert_eq!(r.redact_pieces(&mut pieces), 1);
        assert_eq!(pieces, ["Write to [REDACTED:email]", "", "", " today", "!"]);
        assert_eq!(pieces.concat(), "Write to [REDACTED:email] today!");
        for p in &pieces {
            assert!(!p.contains("ce@") && !p.contains("example"), "{p}");
        }
    }

    #[test]
    fn pieces_without_a_match_are_untouched() {
        let r = Redactor::new(&["email".into()], &[]).unwrap();
        let mut pieces = vec!["héllo ".to_string(), "wörld".to_string()];
        assert_eq!(r.redact_pieces(&mut pieces), 0);
        assert_eq!(pieces, ["héllo ", "wörld"]);
    }

    #[test]
    fn two_secrets_in_one_piece_and_one_across_two() {
        let r = Redactor::new(&["email".into(), "api_key".into()], &[]).unwrap();
        let mut pieces = vec![
            "a@b.io and c@d.io, key sk-abcdefghij".to_string(),
            "klmnopqrstuvwxyz end".to_string(),
        ];
        assert_eq!(r.redact_pieces(&mut pieces), 3);
        assert_eq!(
            pieces.concat(),
            "[REDACTED:email] and [REDACTED:email], key [REDACTED:api_key] end"
        );
        assert_eq!(pieces[1], " end");
    }
}
