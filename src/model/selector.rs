//! Calico's label selectors (`all()`, `k == 'v'`, `k != 'v'`, `has(k)`, `!has(k)`,
//! `k in {'a','b'}`, `k not in {...}`, `&&`, `||`, `!`, parentheses), parsed and evaluated.
//!
//! Data flow: a selector string from a `BgpPeer` (`node_selector`, `peer_selector`) or the
//! command line ──> [`Selector::parse`] (a hand-written recursive-descent parser; an error
//! carries the 1-based column where it went wrong) ──> [`Selector`] (an expression tree)
//! ──> [`Selector::matches`] against a node's labels. `Display` gives a canonical text that
//! parses back to the same tree.
//!
//! Semantics are Calico's: `k == 'v'` needs the label present with that value; `k != 'v'` and
//! `k not in {...}` also match nodes without the label; `&&` binds tighter than `||`.
//!
//! Grammar:
//! ```text
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" or ")" | "all()" | "has(" label ")"
//!          | label ( "==" | "!=" ) string | label [ "not" ] "in" "{" [ string ( "," string )* ] "}"
//! label   := [A-Za-z0-9_./-]+   string := '...' | "..."
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// Longest selector accepted (a bound on parsing work and recursion depth).
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Deepest nesting of `(` and `!` accepted.
const MAX_DEPTH: usize = 64;

/// A selector that did not parse: where (1-based column, in characters) and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("column {column}: {message}")]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Has(String),
    Equal(String, String),
    NotEqual(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

impl Selector {
    /// Parse Calico selector syntax.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.chars().count() > MAX_SELECTOR_LEN {
            return Err(SelectorError {
                column: MAX_SELECTOR_LEN + 1,
                message: format!("selector longer than {MAX_SELECTOR_LEN} characters"),
            });
        }
        let mut parser = Parser {
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
        };
        parser.skip_space();
        if parser.at_end() {
            return Err(parser.error("empty selector: use all() to select everything"));
        }
        let selector = parser.or()?;
        parser.skip_space();
        if !parser.at_end() {
            return Err(parser.error("unexpected text after the expression (missing && or ||?)"));
        }
        Ok(selector)
    }

    /// Whether a set of labels matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Equal(k, v) => labels.get(k) == Some(v),
            Selector::NotEqual(k, v) => labels.get(k) != Some(v),
            Selector::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

/// Quote a value for the canonical text (`'v'`, or `"v"` when it holds a `'`).
fn quote(value: &str) -> String {
    if value.contains('\'') {
        format!("\"{value}\"")
    } else {
        format!("'{value}'")
    }
}

fn set_text(set: &BTreeSet<String>) -> String {
    let items: Vec<String> = set.iter().map(|v| quote(v)).collect();
    format!("{{{}}}", items.join(", "))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => write!(f, "all()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Equal(k, v) => write!(f, "{k} == {}", quote(v)),
            Selector::NotEqual(k, v) => write!(f, "{k} != {}", quote(v)),
            Selector::In(k, set) => write!(f, "{k} in {}", set_text(set)),
            Selector::NotIn(k, set) => write!(f, "{k} not in {}", set_text(set)),
            Selector::Not(s) => write!(f, "!({s})"),
            Selector::And(a, b) => write!(f, "({a} && {b})"),
            Selector::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

impl Parser {
    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            column: self.pos + 1,
            message: message.into(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consume `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let n = token.chars().count();
        let matches = self
            .chars
            .get(self.pos..self.pos + n)
            .is_some_and(|s| s.iter().copied().eq(token.chars()));
        if matches {
            self.pos += n;
        }
        matches
    }

    /// Consume a keyword: `token` not followed by a label character.
    fn eat_word(&mut self, word: &str) -> bool {
        let start = self.pos;
        if self.eat(word) && !self.peek().is_some_and(is_label_char) {
            return true;
        }
        self.pos = start;
        false
    }

    fn expect(&mut self, token: &str, what: &str) -> Result<(), SelectorError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn enter(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Selector::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = Selector::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        self.skip_space();
        // `!=` never starts an expression; `!` does.
        if self.peek() == Some('!') && self.chars.get(self.pos + 1) != Some(&'=') {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Selector::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Selector, SelectorError> {
        self.skip_space();
        if self.eat("(") {
            self.enter()?;
            let inner = self.or()?;
            self.depth -= 1;
            self.expect(")", "')' to close the parenthesis")?;
            return Ok(inner);
        }
        let start = self.pos;
        if self.eat_word("all") {
            if self.eat("(") {
                self.expect(")", "')' after all(")?;
                return Ok(Selector::All);
            }
            self.pos = start;
        }
        if self.eat_word("has") {
            if self.eat("(") {
                let label = self.label()?;
                self.expect(")", "')' after the label in has(...)")?;
                return Ok(Selector::Has(label));
            }
            self.pos = start;
        }
        let label = self.label()?;
        self.comparison(label)
    }

    /// What follows a label: `== v`, `!= v`, `in {..}`, `not in {..}`.
    fn comparison(&mut self, label: String) -> Result<Selector, SelectorError> {
        if self.eat("==") {
            return Ok(Selector::Equal(label, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Selector::NotEqual(label, self.string()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(label, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                self.skip_space();
                return Err(self.error("expected 'in' after 'not'"));
            }
            return Ok(Selector::NotIn(label, self.set()?));
        }
        self.skip_space();
        Err(self.error(format!(
            "expected an operator (==, !=, in, not in) after label {label:?}"
        )))
    }

    fn label(&mut self) -> Result<String, SelectorError> {
        self.skip_space();
        let start = self.pos;
        while self.peek().is_some_and(is_label_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(match self.peek() {
                None => self.error("expected a label name, found the end of the selector"),
                Some(c) => self.error(format!("expected a label name, found {c:?}")),
            });
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        self.skip_space();
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.error("expected a quoted value ('v' or \"v\")")),
        };
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == quote {
                let value = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                return Ok(value);
            }
            self.pos += 1;
        }
        Err(SelectorError {
            column: open + 1,
            message: format!("unterminated string: no closing {quote}"),
        })
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect("{", "'{' to open the set")?;
        let mut out = BTreeSet::new();
        if self.eat("}") {
            return Ok(out);
        }
        loop {
            out.insert(self.string()?);
            if self.eat("}") {
                return Ok(out);
            }
            self.expect(",", "',' or '}' in the set")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn matches(sel: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(sel).unwrap().matches(&labels(pairs))
    }

    fn column(sel: &str) -> usize {
        Selector::parse(sel).unwrap_err().column
    }

    #[test]
    fn all_matches_everything() {
        assert!(matches("all()", &[]));
        assert!(matches(" all ( ) ", &[("a", "b")]));
    }

    #[test]
    fn equality_and_inequality_follow_calico() {
        let rr = [("route-reflector", "true")];
        assert!(matches("route-reflector == 'true'", &rr));
        assert!(matches("route-reflector == \"true\"", &rr));
        assert!(!matches("route-reflector == 'false'", &rr));
        assert!(!matches("route-reflector == 'true'", &[]));
        assert!(!matches("route-reflector != 'true'", &rr));
        // A missing label is "not equal".
        assert!(matches("route-reflector != 'true'", &[]));
    }

    #[test]
    fn has_and_not_has() {
        assert!(matches("has(zone)", &[("zone", "")]));
        assert!(!matches("has(zone)", &[]));
        assert!(matches("!has(zone)", &[]));
        assert!(!matches("! has(zone)", &[("zone", "a")]));
    }

    #[test]
    fn in_and_not_in_sets() {
        assert!(matches("zone in {'a', 'b'}", &[("zone", "b")]));
        assert!(!matches("zone in {'a','b'}", &[("zone", "c")]));
        assert!(!matches("zone in {'a'}", &[]));
        assert!(!matches("zone in {}", &[("zone", "a")]));
        assert!(matches("zone not in {'a'}", &[("zone", "c")]));
        assert!(matches("zone not in {'a'}", &[]));
        assert!(!matches("zone not in {'a'}", &[("zone", "a")]));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let l = [("a", "1")];
        // a == 1 || (b == 1 && c == 1)
        assert!(matches("a == '1' || b == '1' && c == '1'", &l));
        // (a == 1 || b == 1) && c == 1
        assert!(!matches("(a == '1' || b == '1') && c == '1'", &l));
        assert!(matches("!(a == '2' || has(b)) && has(a)", &l));
        assert!(matches("!!has(a)", &l));
    }

    #[test]
    fn label_names_with_prefixes_and_dots() {
        let l = [("topology.kubernetes.io/zone", "z1"), ("in", "x")];
        assert!(matches("topology.kubernetes.io/zone == 'z1'", &l));
        // Keywords are labels when used as one.
        assert!(matches("in == 'x'", &l));
        assert!(matches("has(in)", &l));
        assert!(!matches("all_nodes == 'x'", &l));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "all()",
            "route-reflector == 'true' && !has(x)",
            "a in {'1', \"it's\"} || b not in {} && c != 'd'",
        ] {
            let parsed = Selector::parse(text).unwrap();
            let again = Selector::parse(&parsed.to_string()).unwrap();
            assert_eq!(parsed, again, "{text} -> {parsed}");
        }
    }

    #[test]
    fn unbalanced_quotes_point_at_the_opening_quote() {
        let err = Selector::parse("a == 'true").unwrap_err();
        assert_eq!(err.column, 6);
        assert!(err.message.contains("unterminated"), "{err}");
        assert_eq!(column("a in {'x', \"y}"), 12);
    }

    #[test]
    fn unbalanced_parentheses() {
        assert_eq!(column("(has(a)"), 8);
        assert_eq!(column("has(a))"), 7);
        assert_eq!(column("has(a"), 6);
        assert_eq!(column("all("), 5);
    }

    #[test]
    fn unknown_operators_are_refused_with_their_column() {
        let err = Selector::parse("a = 'b'").unwrap_err();
        assert_eq!(err.column, 3);
        assert!(err.message.contains("operator"), "{err}");
        assert_eq!(column("a ~= 'b'"), 3);
        assert_eq!(column("has(a) & has(b)"), 8);
        assert_eq!(column("has(a) | has(b)"), 8);
        assert_eq!(column("a not 'b'"), 7);
        assert_eq!(column("a == b"), 6);
    }

    #[test]
    fn empty_label_names_and_empty_input() {
        assert_eq!(column("== 'b'"), 1);
        assert_eq!(column("has()"), 5);
        assert_eq!(column("a == 'b' && "), 13);
        assert_eq!(column(""), 1);
        assert_eq!(column("   "), 4);
        assert_eq!(column("in {'a'}"), 4);
    }

    #[test]
    fn bad_sets() {
        assert_eq!(column("a in 'x'"), 6);
        assert_eq!(column("a in {'x' 'y'}"), 11);
        assert_eq!(column("a in {'x',}"), 11);
    }

    #[test]
    fn bounded_length_and_depth() {
        let deep = format!("{}has(a){}", "(".repeat(100), ")".repeat(100));
        assert!(Selector::parse(&deep)
            .unwrap_err()
            .message
            .contains("nested"));
        let nots = format!("{}has(a)", "!".repeat(100));
        assert!(Selector::parse(&nots).is_err());
        let long = format!("a == '{}'", "x".repeat(MAX_SELECTOR_LEN));
        assert!(Selector::parse(&long).is_err());
        let ok = format!("{}has(a){}", "(".repeat(10), ")".repeat(10));
        assert!(Selector::parse(&ok).is_ok());
    }
}
