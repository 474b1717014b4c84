//! Placement selectors: a small boolean language that picks sites by their labels, and
//! hosts by their labels, facts and devices.
//!
//! An operator writes a selector such as
//! `customer == acme && region in (eu-north, eu-west)` or
//! `!has(decommissioned) && (tier != bronze || region notin (us-east))`, and the
//! orchestrator places a workload on every site whose labels (a
//! `BTreeMap<String, String>`) the selector [`matches`](Selector::matches). Host selectors
//! read the same kind of map: a host's labels with its built-in facts beside them (`arch`,
//! `os`, `cpus`, `memory` and `disk` in bytes, `agent_version`, and `device.<class>`, how many
//! of its devices the device class matches), so `memory >= 8Gi && device.camera >= 1`.
//!
//! A key or a value written bare starts with an ASCII letter or digit and goes on with
//! letters, digits, `.`, `_`, `/` and `-` (`app.kubernetes.io/name`, `device.camera`,
//! `1.2.3-rc1`); anything else, and the keywords `in` and `notin` as keys, is written in
//! double quotes, where `\"` and `\\` are the only escapes.
//!
//! The negative operators follow Kubernetes label selectors: `k != v` and
//! `k notin (..)` are true when the site has no label `k` at all. Operators who
//! already know Kubernetes expect exactly this, and it keeps the useful reading
//! of "keep away from X" (`tier != bronze` also picks sites that were never
//! tiered). Use `has(k) && k != v` when the label must be present.
//!
//! The comparisons `<`, `<=`, `>` and `>=` compare numbers: the literal is an exact
//! [`Quantity`] (`4`, `2.5`, `8Gi`, `500M`; a literal that is not one is refused when the
//! selector is parsed), and the key's value is read the same way when matching. A missing key,
//! or a value that is not a number (`lots`, `-1`, `8 Gi`), makes the comparison false, so
//! `!(memory >= 8Gi)` holds for a host that reports no memory at all. Values are not ordered
//! as text: "size medium or larger" is written `size in (medium, large, xlarge)`.
//!
//! Parsing never panics, reports every problem with the byte offset of the
//! offending token, and bounds nesting so hostile input cannot exhaust the stack.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::units::Quantity;

/// Most levels of parentheses and `!` that may be nested inside each other.
const MAX_NESTING: usize = 64;
/// Most levels the syntax tree may have in total (each `&&`/`||` of a chain adds one).
const MAX_DEPTH: usize = 512;
/// How much of the rest of the input an "unexpected trailing input" error quotes.
const TRAILING_PREVIEW_CHARS: usize = 30;

/// A parsed placement selector: the syntax tree together with the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    source: String,
    expr: Expr,
}

/// The syntax tree of a selector. `Display` prints it in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `a || b`: either side matches.
    Or(Box<Expr>, Box<Expr>),
    /// `a && b`: both sides match.
    And(Box<Expr>, Box<Expr>),
    /// `!a`: the operand does not match.
    Not(Box<Expr>),
    /// `has(k)`: the label exists.
    Has(String),
    /// `k == v`: the label exists and equals the value.
    Eq(String, String),
    /// `k != v`: the label is absent or differs from the value.
    Ne(String, String),
    /// `k in (v, ...)`: the label exists and its value is in the list.
    In(String, Vec<String>),
    /// `k notin (v, ...)`: the label is absent or its value is not in the list.
    NotIn(String, Vec<String>),
    /// `k >= n` and the other comparisons: the value is a number and compares so with `n`.
    Compare(String, Comparison, Number),
}

/// The operator of [`Expr::Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }

    /// Whether `value` compares so with `bound` (`value < bound` for `Lt`).
    pub fn holds(self, value: &Quantity, bound: &Quantity) -> bool {
        match self {
            Comparison::Lt => value < bound,
            Comparison::Le => value <= bound,
            Comparison::Gt => value > bound,
            Comparison::Ge => value >= bound,
        }
    }
}

/// A number literal of a comparison: the text as written (what the canonical form prints)
/// and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    text: String,
    value: Quantity,
}

impl Number {
    pub fn parse(text: &str) -> Result<Number, String> {
        Ok(Number {
            text: text.to_owned(),
            value: Quantity::parse(text)?,
        })
    }

    /// The literal as written: `8Gi`.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn value(&self) -> &Quantity {
        &self.value
    }
}

/// Why a selector could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// Byte offset into the source of the offending token (`source.len()` at end of input).
    pub offset: usize,
    /// 1-based column of `offset`, counted in characters (what `Display` prints).
    pub column: usize,
    /// Lowercase description naming what was found and what was expected.
    pub message: String,
}

impl SelectorError {
    fn new(source: &str, offset: usize, message: impl Into<String>) -> Self {
        let column = source.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
        SelectorError {
            offset,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Parses selector text; on failure the error points at the offending token.
    pub fn parse(source: &str) -> Result<Selector, SelectorError> {
        let mut parser = Parser {
            source,
            tokens: lex(source),
            pos: 0,
        };
        if parser.peek()?.kind == Kind::End {
            return Err(parser.error(
                source.len(),
                "empty selector: expected an expression such as region == eu-west",
            ));
        }
        let (expr, _) = parser.parse_or(0)?;
        let tok = parser.peek()?;
        match tok.kind {
            Kind::End => Ok(Selector {
                source: source.to_string(),
                expr,
            }),
            Kind::RParen => Err(parser.error(tok.offset, "unexpected \")\"")),
            _ => {
                let rest = source.get(tok.offset..).unwrap_or("").trim_end();
                let mut preview: String = rest.chars().take(TRAILING_PREVIEW_CHARS).collect();
                if rest.chars().count() > TRAILING_PREVIEW_CHARS {
                    preview.push('…');
                }
                // `memory >= 8 Gi`: a unit parted from its number by a space.
                let after_number = parser.pos >= 2
                    && matches!(
                        parser.tokens.get(parser.pos - 2),
                        Some(Token {
                            kind: Kind::Cmp(_),
                            ..
                        })
                    );
                let hint = match tok.kind {
                    Kind::Word
                        if after_number && Quantity::parse(&format!("1{}", tok.text)).is_ok() =>
                    {
                        " (write the unit right after the number, as in 8Gi)".to_string()
                    }
                    Kind::Word | Kind::Quoted(_) | Kind::LParen | Kind::Not => {
                        " (join conditions with && or ||)".to_string()
                    }
                    _ => hint_for(&tok),
                };
                Err(parser.error(
                    tok.offset,
                    format!("unexpected trailing input {preview:?}{hint}"),
                ))
            }
        }
    }

    /// The text this selector was parsed from, exactly as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether a site (or host) with these labels (and facts) is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        eval(&self.expr, labels)
    }

    /// Every key the expression reads: nothing else in the map can change whether it matches.
    pub fn keys(&self) -> BTreeSet<&str> {
        let mut keys = BTreeSet::new();
        collect_keys(&self.expr, &mut keys);
        keys
    }

    /// The same as [`keys`](Selector::keys), under the name site selectors have used.
    pub fn label_keys(&self) -> BTreeSet<&str> {
        self.keys()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

fn eval(expr: &Expr, labels: &BTreeMap<String, String>) -> bool {
    match expr {
        Expr::Or(l, r) => eval(l, labels) || eval(r, labels),
        Expr::And(l, r) => eval(l, labels) && eval(r, labels),
        Expr::Not(e) => !eval(e, labels),
        Expr::Has(k) => labels.contains_key(k),
        Expr::Eq(k, v) => labels.get(k).is_some_and(|x| x == v),
        Expr::Ne(k, v) => labels.get(k).is_none_or(|x| x != v),
        Expr::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
        Expr::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
        Expr::Compare(k, op, n) => labels
            .get(k)
            .and_then(|x| Quantity::parse(x).ok())
            .is_some_and(|x| op.holds(&x, n.value())),
    }
}

fn collect_keys<'a>(expr: &'a Expr, keys: &mut BTreeSet<&'a str>) {
    match expr {
        Expr::Or(l, r) | Expr::And(l, r) => {
            collect_keys(l, keys);
            collect_keys(r, keys);
        }
        Expr::Not(e) => collect_keys(e, keys),
        Expr::Has(k)
        | Expr::Eq(k, _)
        | Expr::Ne(k, _)
        | Expr::In(k, _)
        | Expr::NotIn(k, _)
        | Expr::Compare(k, _, _) => {
            keys.insert(k);
        }
    }
}

// ---------------------------------------------------------------------------
// Canonical printing

fn precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(..) => 1,
        Expr::And(..) => 2,
        Expr::Not(_) => 3,
        _ => 4,
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, expr: &Expr, min_precedence: u8) -> fmt::Result {
    if precedence(expr) < min_precedence {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')
}

fn is_bare_word(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric) && s.bytes().all(is_word_byte)
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "has" | "in" | "notin")
}

fn write_word(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if is_bare_word(s) && !is_keyword(s) {
        return f.write_str(s);
    }
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

fn write_list(f: &mut fmt::Formatter<'_>, values: &[String]) -> fmt::Result {
    f.write_str("(")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_word(f, v)?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(l, r) => {
                write_operand(f, l, 1)?;
                f.write_str(" || ")?;
                write_operand(f, r, 2)
            }
            Expr::And(l, r) => {
                write_operand(f, l, 2)?;
                f.write_str(" && ")?;
                write_operand(f, r, 3)
            }
            Expr::Not(e) => {
                f.write_str("!")?;
                write_operand(f, e, 3)
            }
            Expr::Has(k) => {
                f.write_str("has(")?;
                write_word(f, k)?;
                f.write_str(")")
            }
            Expr::Eq(k, v) => {
                write_word(f, k)?;
                f.write_str(" == ")?;
                write_word(f, v)
            }
            Expr::Ne(k, v) => {
                write_word(f, k)?;
                f.write_str(" != ")?;
                write_word(f, v)
            }
            Expr::In(k, vs) => {
                write_word(f, k)?;
                f.write_str(" in ")?;
                write_list(f, vs)
            }
            Expr::NotIn(k, vs) => {
                write_word(f, k)?;
                f.write_str(" notin ")?;
                write_list(f, vs)
            }
            Expr::Compare(k, op, n) => {
                write_word(f, k)?;
                write!(f, " {} ", op.symbol())?;
                f.write_str(n.text())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    EqEq,
    NotEq,
    Cmp(Comparison),
    /// A bare word; its text is the token text.
    Word,
    /// A double-quoted string, unescaped.
    Quoted(String),
    /// A character that starts no token.
    Stray,
    End,
    /// A lexical error; lexing stops here, so it is always the last token.
    Error(Box<SelectorError>),
}

#[derive(Debug, Clone)]
struct Token<'a> {
    kind: Kind,
    offset: usize,
    text: &'a str,
}

/// Splits the whole source into tokens. Never fails: a lexical error becomes the
/// last token, so it is reported only if the parser gets that far.
fn lex(source: &str) -> Vec<Token<'_>> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = source.get(i..).and_then(|rest| rest.chars().next()) {
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let (kind, len) = match c {
            '(' => (Kind::LParen, 1),
            ')' => (Kind::RParen, 1),
            ',' => (Kind::Comma, 1),
            '&' if next == Some(b'&') => (Kind::And, 2),
            '|' if next == Some(b'|') => (Kind::Or, 2),
            '=' if next == Some(b'=') => (Kind::EqEq, 2),
            '!' if next == Some(b'=') => (Kind::NotEq, 2),
            '!' => (Kind::Not, 1),
            '<' if next == Some(b'=') => (Kind::Cmp(Comparison::Le), 2),
            '<' => (Kind::Cmp(Comparison::Lt), 1),
            '>' if next == Some(b'=') => (Kind::Cmp(Comparison::Ge), 2),
            '>' => (Kind::Cmp(Comparison::Gt), 1),
            '"' => match lex_string(source, i) {
                Ok((value, len)) => (Kind::Quoted(value), len),
                Err(e) => {
                    tokens.push(Token {
                        kind: Kind::Error(Box::new(e)),
                        offset: i,
                        text: "",
                    });
                    return tokens;
                }
            },
            c if c.is_ascii_alphanumeric() => {
                let len = bytes
                    .get(i..)
                    .unwrap_or(&[])
                    .iter()
                    .take_while(|&&b| is_word_byte(b))
                    .count();
                (Kind::Word, len)
            }
            c => (Kind::Stray, c.len_utf8()),
        };
        tokens.push(Token {
            kind,
            offset: i,
            text: source.get(i..i + len).unwrap_or(""),
        });
        i += len;
    }
    tokens.push(Token {
        kind: Kind::End,
        offset: source.len(),
        text: "",
    });
    tokens
}

/// Reads the string whose opening quote is at `start`; returns its value and its
/// length in bytes including both quotes.
fn lex_string(source: &str, start: usize) -> Result<(String, usize), SelectorError> {
    let body = source.get(start + 1..).unwrap_or("");
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '"' => return Ok((value, j + 2)),
            '\\' => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, other)) => {
                    return Err(SelectorError::new(
                        source,
                        start + 1 + j,
                        format!(
                            "invalid escape \"\\{other}\" in string: only \\\" and \\\\ are allowed"
                        ),
                    ));
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err(SelectorError::new(
        source,
        start,
        "unterminated string: add a closing \"",
    ))
}

// ---------------------------------------------------------------------------
// Parsing

/// What a found token is called in error messages.
fn describe(tok: &Token<'_>) -> String {
    match tok.kind {
        Kind::End => "end of expression".to_string(),
        Kind::Quoted(_) => format!("the string {}", tok.text),
        _ => format!("{:?}", tok.text),
    }
}

/// A short suggestion for common slips, with a leading space, or "".
fn hint_for(tok: &Token<'_>) -> String {
    let hint = match (&tok.kind, tok.text) {
        (Kind::Stray, "=") => "write == for equality",
        (Kind::Stray, "&") => "write && for and",
        (Kind::Stray, "|") => "write || for or",
        (Kind::Stray, "'") => "use double quotes for strings",
        (Kind::Stray, "." | "_" | "/" | "-") => {
            "bare words must start with a letter or digit; put other text in double quotes"
        }
        (Kind::Word, w) if is_keyword(&w.to_ascii_lowercase()) && !is_keyword(w) => {
            "keywords are lowercase"
        }
        _ => return String::new(),
    };
    format!(" ({hint})")
}

struct Parser<'a> {
    source: &'a str,
    /// Never empty: the last token is `End` or `Error`.
    tokens: Vec<Token<'a>>,
    pos: usize,
}

type Parsed = Result<(Expr, usize), SelectorError>;

impl<'a> Parser<'a> {
    fn error(&self, offset: usize, message: impl Into<String>) -> SelectorError {
        SelectorError::new(self.source, offset, message)
    }

    fn token_at(&self, ahead: usize) -> Option<&Token<'a>> {
        let last = self.tokens.len().saturating_sub(1);
        self.tokens.get((self.pos + ahead).min(last))
    }

    /// The current token, or the lexical error that stopped lexing there.
    fn peek(&self) -> Result<Token<'a>, SelectorError> {
        match self.token_at(0) {
            Some(Token {
                kind: Kind::Error(e),
                ..
            }) => Err((**e).clone()),
            Some(tok) => Ok(tok.clone()),
            None => Err(self.error(self.source.len(), "unexpected end of expression")),
        }
    }

    fn advance(&mut self) {
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
    }

    fn expected(&self, what: &str, tok: &Token<'_>) -> SelectorError {
        if tok.kind == Kind::End {
            return self.error(
                tok.offset,
                format!("unexpected end of expression, expected {what}"),
            );
        }
        self.error(
            tok.offset,
            format!("expected {what}, found {}{}", describe(tok), hint_for(tok)),
        )
    }

    fn check_depth(&self, depth: usize, offset: usize) -> Result<(), SelectorError> {
        if depth > MAX_DEPTH {
            return Err(self.error(
                offset,
                format!(
                    "expression too large: at most {MAX_DEPTH} levels of operators are allowed \
                     (each && or || in a chain counts as one); split it into simpler selectors"
                ),
            ));
        }
        Ok(())
    }

    fn check_nesting(&self, nesting: usize, offset: usize) -> Result<(), SelectorError> {
        if nesting >= MAX_NESTING {
            return Err(self.error(
                offset,
                format!(
                    "too deeply nested: at most {MAX_NESTING} levels of parentheses and \"!\" are allowed"
                ),
            ));
        }
        Ok(())
    }

    /// Parses a left-associative chain of `next` joined by `op`.
    fn parse_chain(
        &mut self,
        nesting: usize,
        op: &Kind,
        next: fn(&mut Self, usize) -> Parsed,
        build: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Parsed {
        let (mut left, mut depth) = next(self, nesting)?;
        loop {
            let tok = self.peek()?;
            if tok.kind != *op {
                return Ok((left, depth));
            }
            self.advance();
            let (right, right_depth) = next(self, nesting)?;
            depth = depth.max(right_depth) + 1;
            self.check_depth(depth, tok.offset)?;
            left = build(Box::new(left), Box::new(right));
        }
    }

    fn parse_or(&mut self, nesting: usize) -> Parsed {
        self.parse_chain(nesting, &Kind::Or, Self::parse_and, Expr::Or)
    }

    fn parse_and(&mut self, nesting: usize) -> Parsed {
        self.parse_chain(nesting, &Kind::And, Self::parse_unary, Expr::And)
    }

    fn parse_unary(&mut self, nesting: usize) -> Parsed {
        let tok = self.peek()?;
        if tok.kind != Kind::Not {
            return self.parse_atom(nesting);
        }
        self.check_nesting(nesting, tok.offset)?;
        self.advance();
        let (operand, depth) = self.parse_unary(nesting + 1)?;
        self.check_depth(depth + 1, tok.offset)?;
        Ok((Expr::Not(Box::new(operand)), depth + 1))
    }

    fn parse_atom(&mut self, nesting: usize) -> Parsed {
        let tok = self.peek()?;
        if tok.kind == Kind::LParen {
            self.check_nesting(nesting, tok.offset)?;
            self.advance();
            let (inner, depth) = self.parse_or(nesting + 1)?;
            let close = self.peek()?;
            if close.kind != Kind::RParen {
                let column = SelectorError::new(self.source, tok.offset, "").column;
                return Err(self.expected(
                    &format!("\")\" to close the \"(\" at column {column}"),
                    &close,
                ));
            }
            self.advance();
            return Ok((inner, depth));
        }
        let has_call = tok.kind == Kind::Word
            && tok.text == "has"
            && self.token_at(1).is_some_and(|t| t.kind == Kind::LParen);
        if has_call {
            self.advance();
            self.advance();
            let key = self.parse_key()?;
            let close = self.peek()?;
            if close.kind != Kind::RParen {
                return Err(self.expected(&format!("\")\" after has({key:?}"), &close));
            }
            self.advance();
            return Ok((Expr::Has(key), 1));
        }
        self.parse_comparison()
    }

    fn parse_comparison(&mut self) -> Parsed {
        let key = self.parse_key()?;
        let op = self.peek()?;
        let expr = match op.kind {
            Kind::EqEq => {
                self.advance();
                Expr::Eq(key, self.parse_value("a value after \"==\"")?)
            }
            Kind::NotEq => {
                self.advance();
                Expr::Ne(key, self.parse_value("a value after \"!=\"")?)
            }
            Kind::Word if op.text == "in" => {
                self.advance();
                Expr::In(key, self.parse_list("in")?)
            }
            Kind::Word if op.text == "notin" => {
                self.advance();
                Expr::NotIn(key, self.parse_list("notin")?)
            }
            Kind::Cmp(cmp) => {
                self.advance();
                Expr::Compare(key, cmp, self.parse_number(cmp)?)
            }
            _ => {
                let mut err = self.expected(
                    &format!(
                        "\"==\", \"!=\", \"<\", \"<=\", \">\", \">=\", \"in\" or \"notin\" after label key {key:?}"
                    ),
                    &op,
                );
                if key == "has" && op.kind != Kind::End && hint_for(&op).is_empty() {
                    err.message
                        .push_str(" (to test that a label exists, write has(key))");
                }
                return Err(err);
            }
        };
        Ok((expr, 1))
    }

    fn parse_key(&mut self) -> Result<String, SelectorError> {
        let tok = self.peek()?;
        match tok.kind {
            Kind::Word if tok.text == "in" || tok.text == "notin" => Err(self.error(
                tok.offset,
                format!(
                    "expected a label key, found the keyword {:?} (to use it as a label key, quote it: \"{}\")",
                    tok.text, tok.text
                ),
            )),
            Kind::Word => {
                self.advance();
                Ok(tok.text.to_string())
            }
            Kind::Quoted(key) if key.is_empty() => {
                Err(self.error(tok.offset, "label key must not be empty"))
            }
            Kind::Quoted(key) => {
                self.advance();
                Ok(key)
            }
            _ => Err(self.expected("a label key", &tok)),
        }
    }

    fn parse_value(&mut self, what: &str) -> Result<String, SelectorError> {
        let tok = self.peek()?;
        match tok.kind {
            Kind::Word => {
                self.advance();
                Ok(tok.text.to_string())
            }
            Kind::Quoted(value) => {
                self.advance();
                Ok(value)
            }
            _ => Err(self.expected(what, &tok)),
        }
    }

    /// The number a comparison compares with: a bare word that reads as a [`Quantity`].
    fn parse_number(&mut self, cmp: Comparison) -> Result<Number, SelectorError> {
        let tok = self.peek()?;
        let what = format!("a number after \"{}\"", cmp.symbol());
        match tok.kind {
            Kind::Word => match Number::parse(tok.text) {
                Ok(n) => {
                    self.advance();
                    Ok(n)
                }
                Err(e) => Err(self.error(
                    tok.offset,
                    format!("expected {what}, found {}: {e}", describe(&tok)),
                )),
            },
            Kind::Quoted(_) => Err(self.error(
                tok.offset,
                format!(
                    "expected {what}, found {}: numbers are written without quotes",
                    describe(&tok)
                ),
            )),
            _ => Err(self.expected(&what, &tok)),
        }
    }

    fn parse_list(&mut self, op: &str) -> Result<Vec<String>, SelectorError> {
        let open = self.peek()?;
        if open.kind != Kind::LParen {
            let mut err = self.expected(&format!("\"(\" after \"{op}\""), &open);
            if open.kind != Kind::End {
                err.message
                    .push_str(&format!(" (write {op} (value1, value2))"));
            }
            return Err(err);
        }
        self.advance();
        let first = self.peek()?;
        if first.kind == Kind::RParen {
            return Err(self.error(
                first.offset,
                format!("empty list: write at least one value inside {op} ( )"),
            ));
        }
        let mut values = Vec::new();
        loop {
            let tok = self.peek()?;
            if !values.is_empty() && tok.kind == Kind::RParen {
                return Err(self.error(
                    tok.offset,
                    "expected a value, found \")\" (remove the trailing comma)",
                ));
            }
            values.push(self.parse_value("a value")?);
            let sep = self.peek()?;
            match sep.kind {
                Kind::Comma => self.advance(),
                Kind::RParen => {
                    self.advance();
                    return Ok(values);
                }
                _ => {
                    return Err(
                        self.expected(&format!("\",\" or \")\" in the {op} ( ) list"), &sep)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Expr {
        match Selector::parse(s) {
            Ok(sel) => sel.expr().clone(),
            Err(e) => panic!("{s:?} failed to parse: {e}"),
        }
    }

    fn err(s: &str) -> (usize, String) {
        match Selector::parse(s) {
            Ok(sel) => panic!("{s:?} parsed unexpectedly as {:?}", sel.expr()),
            Err(e) => (e.offset, e.message),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid selector")
    }

    fn eq(k: &str, v: &str) -> Expr {
        Expr::Eq(k.into(), v.into())
    }

    fn b(e: Expr) -> Box<Expr> {
        Box::new(e)
    }

    fn cmp(k: &str, op: Comparison, n: &str) -> Expr {
        Expr::Compare(k.into(), op, Number::parse(n).expect("a number"))
    }

    // -- comparisons -------------------------------------------------------

    #[test]
    fn every_comparison_parses() {
        assert_eq!(parse("memory >= 8Gi"), cmp("memory", Comparison::Ge, "8Gi"));
        assert_eq!(parse("cpus>4"), cmp("cpus", Comparison::Gt, "4"));
        assert_eq!(parse("load < 0.75"), cmp("load", Comparison::Lt, "0.75"));
        assert_eq!(parse("disk<=500G"), cmp("disk", Comparison::Le, "500G"));
        assert_eq!(
            parse("device.camera >= 1"),
            cmp("device.camera", Comparison::Ge, "1")
        );
        assert_eq!(parse(r#""my key" > 1"#), cmp("my key", Comparison::Gt, "1"));
        assert_eq!(
            parse("!cpus < 4 && memory >= 8Gi"),
            Expr::And(
                b(Expr::Not(b(cmp("cpus", Comparison::Lt, "4")))),
                b(cmp("memory", Comparison::Ge, "8Gi"))
            )
        );
    }

    #[test]
    fn every_comparison_matches_on_numbers_and_sizes() {
        let host = labels(&[
            ("cpus", "4"),
            ("memory", "8589934592"),
            ("load", "0.5"),
            ("device.camera", "2"),
            ("size", "medium"),
        ]);
        let yes = [
            "cpus >= 4",
            "cpus <= 4",
            "cpus > 3",
            "cpus < 4.5",
            "memory >= 8Gi",
            "memory <= 8Gi",
            "memory > 8G",
            "memory < 8.0001Gi",
            "memory >= 8192Mi",
            "load > 0.25",
            "load >= 0.50",
            "device.camera >= 1",
            "!(device.serial >= 1)",
            "memory >= 8Gi && device.camera >= 1 && size in (medium, large, xlarge)",
        ];
        let no = [
            "cpus > 4",
            "cpus < 4",
            "cpus >= 4.001",
            "memory > 8Gi",
            "memory < 8Gi",
            "memory >= 9G",
            "load < 0.5",
            "device.serial >= 1",
            "device.serial < 1",
            "size >= 1",
            "size < 1",
        ];
        for s in yes {
            assert!(sel(s).matches(&host), "{s} should match");
        }
        for s in no {
            assert!(!sel(s).matches(&host), "{s} should not match");
        }
    }

    #[test]
    fn a_missing_key_or_a_value_that_is_no_number_compares_false() {
        for value in ["lots", "", "-1", "8 Gi", "1e3", " 4", "0x10"] {
            let l = labels(&[("n", value)]);
            for op in ["<", "<=", ">", ">="] {
                assert!(!sel(&format!("n {op} 0")).matches(&l), "{value:?} {op} 0");
                assert!(sel(&format!("!n {op} 0")).matches(&l), "!{value:?} {op} 0");
            }
        }
        let empty = BTreeMap::new();
        assert!(!sel("memory >= 0").matches(&empty));
        assert!(!sel("memory < 1E").matches(&empty));
        // The value is read with its unit, as the literal is.
        assert!(sel("memory >= 8Gi").matches(&labels(&[("memory", "8Gi")])));
        assert!(sel("memory > 8G").matches(&labels(&[("memory", "8Gi")])));
    }

    #[test]
    fn comparison_errors_point_at_the_literal() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "memory >= lots",
                10,
                r#"expected a number after ">=", found "lots": not a number: write digits such as 4 or 2.5, or a size such as 8Gi or 500M"#,
            ),
            (
                "memory >= 8GB",
                10,
                r#"expected a number after ">=", found "8GB": unknown unit `GB` (write G, or Gi for 1024³): units are K, M, G, T, P, E (powers of 1000) and Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024)"#,
            ),
            (
                "cpus > 1.",
                7,
                r#"expected a number after ">", found "1.": not a number: write digits such as 4 or 2.5, or a size such as 8Gi or 500M"#,
            ),
            (
                r#"cpus < "4""#,
                7,
                r#"expected a number after "<", found the string "4": numbers are written without quotes"#,
            ),
            (
                "cpus <= -1",
                8,
                r#"expected a number after "<=", found "-" (bare words must start with a letter or digit; put other text in double quotes)"#,
            ),
            (
                "cpus >=",
                7,
                r#"unexpected end of expression, expected a number after ">=""#,
            ),
            (
                "cpus >= &&",
                8,
                r#"expected a number after ">=", found "&&""#,
            ),
            (
                "memory >= 8 Gi",
                12,
                r#"unexpected trailing input "Gi" (write the unit right after the number, as in 8Gi)"#,
            ),
            (
                "memory >= 8 x",
                12,
                r#"unexpected trailing input "x" (join conditions with && or ||)"#,
            ),
            (
                "cpus => 4",
                5,
                r#"expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "cpus", found "=" (write == for equality)"#,
            ),
            ("cpus >> 4", 6, r#"expected a number after ">", found ">""#),
            ("< 4", 0, r#"expected a label key, found "<""#),
            ("a == b && >= 4", 10, r#"expected a label key, found ">=""#),
        ];
        for &(input, offset, message) in cases {
            assert_eq!(err(input), (offset, message.to_string()), "input {input:?}");
        }
    }

    #[test]
    fn comparisons_display_canonically() {
        let cases = [
            ("memory>=8Gi", "memory >= 8Gi"),
            ("cpus<4", "cpus < 4"),
            ("x<=0.50", "x <= 0.50"),
            ("device.camera>1", "device.camera > 1"),
            (r#""in" >= 1"#, r#""in" >= 1"#),
            ("!(cpus < 4)", "!cpus < 4"),
            ("!(cpus < 4 || disk > 1T)", "!(cpus < 4 || disk > 1T)"),
        ];
        for (input, want) in cases {
            let shown = parse(input).to_string();
            assert_eq!(shown, want, "display of {input:?}");
            assert_eq!(parse(&shown), parse(input), "reparse of {shown:?}");
        }
        let s = sel("memory >= 8Gi && device.camera >= 1 || has(gpu)");
        assert_eq!(
            s.keys().into_iter().collect::<Vec<_>>(),
            vec!["device.camera", "gpu", "memory"]
        );
        assert_eq!(s.keys(), s.label_keys());
    }

    // -- operators --------------------------------------------------------

    #[test]
    fn every_operator_parses() {
        assert_eq!(parse("a == b"), eq("a", "b"));
        assert_eq!(parse("a != b"), Expr::Ne("a".into(), "b".into()));
        assert_eq!(
            parse("a in (x, y)"),
            Expr::In("a".into(), vec!["x".into(), "y".into()])
        );
        assert_eq!(
            parse("a notin (x)"),
            Expr::NotIn("a".into(), vec!["x".into()])
        );
        assert_eq!(parse("has(a)"), Expr::Has("a".into()));
        assert_eq!(parse("!has(a)"), Expr::Not(b(Expr::Has("a".into()))));
        assert_eq!(
            parse("a==1&&b==2"),
            Expr::And(b(eq("a", "1")), b(eq("b", "2")))
        );
        assert_eq!(
            parse("a==1||b==2"),
            Expr::Or(b(eq("a", "1")), b(eq("b", "2")))
        );
    }

    #[test]
    fn every_operator_matches() {
        let l = labels(&[("region", "eu-west"), ("tier", "gold")]);
        let yes = [
            "region == eu-west",
            "region != eu-north",
            "region in (eu-north, eu-west)",
            "region notin (us-east)",
            "has(tier)",
            "!has(decommissioned)",
            "region == eu-west && tier == gold",
            "region == us-east || tier == gold",
        ];
        let no = [
            "region == eu-north",
            "region != eu-west",
            "region in (us-east)",
            "region notin (eu-west, us-east)",
            "has(decommissioned)",
            "!has(tier)",
            "region == eu-west && tier == bronze",
            "region == us-east || tier == bronze",
        ];
        for s in yes {
            assert!(sel(s).matches(&l), "{s} should match");
        }
        for s in no {
            assert!(!sel(s).matches(&l), "{s} should not match");
        }
    }

    #[test]
    fn absent_labels_follow_kubernetes() {
        let empty = BTreeMap::new();
        assert!(sel("tier != bronze").matches(&empty));
        assert!(sel("tier notin (bronze, silver)").matches(&empty));
        assert!(!sel("tier == bronze").matches(&empty));
        assert!(!sel("tier in (bronze)").matches(&empty));
        assert!(!sel("has(tier)").matches(&empty));
        assert!(!sel("has(tier) && tier != bronze").matches(&empty));
        // An empty value is a value, not absence.
        let blank = labels(&[("tier", "")]);
        assert!(sel("tier == \"\"").matches(&blank));
        assert!(!sel("tier != \"\"").matches(&blank));
        assert!(sel("has(tier)").matches(&blank));
    }

    #[test]
    fn spec_examples() {
        let s = sel("customer == acme && region in (eu-north, eu-west)");
        assert!(s.matches(&labels(&[("customer", "acme"), ("region", "eu-west")])));
        assert!(!s.matches(&labels(&[("customer", "acme"), ("region", "us-east")])));

        let s = sel("!has(decommissioned) && (tier != bronze || region notin (us-east))");
        assert!(s.matches(&labels(&[("tier", "bronze"), ("region", "eu-west")])));
        assert!(!s.matches(&labels(&[("tier", "bronze"), ("region", "us-east")])));
        assert!(!s.matches(&labels(&[("decommissioned", "yes")])));
        assert!(s.matches(&BTreeMap::new()));

        let s = sel("canary == \"true\"");
        assert_eq!(s.expr(), &eq("canary", "true"));
        assert!(s.matches(&labels(&[("canary", "true")])));
    }

    // -- precedence and grouping -----------------------------------------

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse("a==1 || b==2 && c==3"),
            Expr::Or(
                b(eq("a", "1")),
                b(Expr::And(b(eq("b", "2")), b(eq("c", "3"))))
            )
        );
        assert_eq!(
            parse("a==1 && b==2 || c==3"),
            Expr::Or(
                b(Expr::And(b(eq("a", "1")), b(eq("b", "2")))),
                b(eq("c", "3"))
            )
        );
    }

    #[test]
    fn chains_are_left_associative() {
        assert_eq!(
            parse("a==1 && b==2 && c==3"),
            Expr::And(
                b(Expr::And(b(eq("a", "1")), b(eq("b", "2")))),
                b(eq("c", "3"))
            )
        );
        assert_eq!(
            parse("a==1 || b==2 || c==3"),
            Expr::Or(
                b(Expr::Or(b(eq("a", "1")), b(eq("b", "2")))),
                b(eq("c", "3"))
            )
        );
    }

    #[test]
    fn not_binds_to_one_atom() {
        // `!` covers the whole comparison, but not the `&&` after it.
        assert_eq!(
            parse("!a == 1 && b == 2"),
            Expr::And(b(Expr::Not(b(eq("a", "1")))), b(eq("b", "2")))
        );
        assert_eq!(
            parse("!(a == 1 && b == 2)"),
            Expr::Not(b(Expr::And(b(eq("a", "1")), b(eq("b", "2")))))
        );
        assert_eq!(
            parse("!!has(x)"),
            Expr::Not(b(Expr::Not(b(Expr::Has("x".into())))))
        );
        assert_eq!(
            parse("! ! has(x)"),
            Expr::Not(b(Expr::Not(b(Expr::Has("x".into())))))
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(
            parse("(a==1 || b==2) && c==3"),
            Expr::And(
                b(Expr::Or(b(eq("a", "1")), b(eq("b", "2")))),
                b(eq("c", "3"))
            )
        );
        assert_eq!(parse("((((a==1))))"), eq("a", "1"));
        assert_eq!(
            parse("a==1 && (b==2 && c==3)"),
            Expr::And(
                b(eq("a", "1")),
                b(Expr::And(b(eq("b", "2")), b(eq("c", "3"))))
            )
        );
    }

    #[test]
    fn whitespace_is_insignificant() {
        let want = parse("a == 1 && b in (x, y)");
        assert_eq!(parse("a==1&&b in(x,y)"), want);
        assert_eq!(parse("  a\t==\n1 &&\r\nb in ( x , y )  "), want);
        assert_eq!(parse("a == 1\u{3000}&& b in (x, y)"), want);
    }

    // -- words and quoting -----------------------------------------------

    #[test]
    fn keys_with_dots_slashes_and_dashes() {
        assert_eq!(
            parse("app.kubernetes.io/name == web-frontend"),
            eq("app.kubernetes.io/name", "web-frontend")
        );
        assert_eq!(
            parse("has(topology.atoll/zone_1)"),
            Expr::Has("topology.atoll/zone_1".into())
        );
        assert_eq!(parse("v == 1.2.3-rc1"), eq("v", "1.2.3-rc1"));
        assert_eq!(parse("0abc == 9"), eq("0abc", "9"));
    }

    #[test]
    fn quoted_keys_and_values() {
        assert_eq!(parse(r#""my key" == "a value""#), eq("my key", "a value"));
        assert_eq!(
            parse(r#"k == "say \"hi\" \\o/""#),
            eq("k", r#"say "hi" \o/"#)
        );
        assert_eq!(parse(r#"k == """#), eq("k", ""));
        assert_eq!(parse("k == \"héllo wörld ✓\""), eq("k", "héllo wörld ✓"));
        assert_eq!(
            parse(r#"k in ("a,b", "c)", d)"#),
            Expr::In("k".into(), vec!["a,b".into(), "c)".into(), "d".into()])
        );
        assert_eq!(parse(r#"has("x y")"#), Expr::Has("x y".into()));
    }

    #[test]
    fn keywords_only_in_their_positions() {
        // `in` / `notin` can only be keys when quoted.
        assert_eq!(parse(r#""in" == x"#), eq("in", "x"));
        assert_eq!(
            parse(r#""notin" notin (in)"#),
            Expr::NotIn("notin".into(), vec!["in".into()])
        );
        // `has` is a keyword only when followed by "(".
        assert_eq!(parse("has == yes"), eq("has", "yes"));
        assert_eq!(
            parse("has in (has, in, notin)"),
            Expr::In(
                "has".into(),
                vec!["has".into(), "in".into(), "notin".into()]
            )
        );
        assert_eq!(parse("has(has)"), Expr::Has("has".into()));
        assert_eq!(parse("x == in"), eq("x", "in"));
    }

    #[test]
    fn canonical_display() {
        let cases = [
            ("a==1||b==2&&c==3", "a == 1 || b == 2 && c == 3"),
            ("(a==1||b==2)&&c==3", "(a == 1 || b == 2) && c == 3"),
            ("a==1&&(b==2&&c==3)", "a == 1 && (b == 2 && c == 3)"),
            ("a==1||(b==2||c==3)", "a == 1 || (b == 2 || c == 3)"),
            ("((a==1)&&(b==2))", "a == 1 && b == 2"),
            ("!(a==1)", "!a == 1"),
            ("!(a==1||b==2)", "!(a == 1 || b == 2)"),
            ("!!has(x)", "!!has(x)"),
            ("k in(x,y)", "k in (x, y)"),
            ("k notin(x)", "k notin (x)"),
            (r#""true" != "false""#, "true != false"),
            (r#""in" == "notin""#, r#""in" == "notin""#),
            ("has == has", r#""has" == "has""#),
            (r#"k == "a b""#, r#"k == "a b""#),
            (r#"k == "q\"\\""#, r#"k == "q\"\\""#),
            (r#"k == """#, r#"k == """#),
            (r#"k == "-x""#, r#"k == "-x""#),
            (
                "customer == acme && region in (eu-north, eu-west)",
                "customer == acme && region in (eu-north, eu-west)",
            ),
            (
                "!has(decommissioned) && (tier != bronze || region notin (us-east))",
                "!has(decommissioned) && (tier != bronze || region notin (us-east))",
            ),
        ];
        for (input, want) in cases {
            let shown = parse(input).to_string();
            assert_eq!(shown, want, "display of {input:?}");
            assert_eq!(parse(&shown), parse(input), "reparse of {shown:?}");
        }
    }

    #[test]
    fn source_keys_and_from_str() {
        let text = "  app.kubernetes.io/name == web && (tier != gold || has(x)) && !region in (a) ";
        let s: Selector = text.parse().expect("valid");
        assert_eq!(s.source(), text);
        assert_eq!(
            s.label_keys().into_iter().collect::<Vec<_>>(),
            vec!["app.kubernetes.io/name", "region", "tier", "x"]
        );
        assert_eq!(
            "a = b".parse::<Selector>(),
            Err(Selector::parse("a = b").unwrap_err())
        );
    }

    // -- errors ------------------------------------------------------------

    #[test]
    fn error_messages_and_offsets() {
        let cases: &[(&str, usize, &str)] = &[
            ("&& a == b", 0, r#"expected a label key, found "&&""#),
            (
                "a == 1 && || b == 2",
                10,
                r#"expected a label key, found "||""#,
            ),
            (
                "region = eu",
                7,
                r#"expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "region", found "=" (write == for equality)"#,
            ),
            (
                "region eu",
                7,
                r#"expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "region", found "eu""#,
            ),
            (
                "region",
                6,
                r#"unexpected end of expression, expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "region""#,
            ),
            (
                "a IN (x)",
                2,
                r#"expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "a", found "IN" (keywords are lowercase)"#,
            ),
            ("a == \"abc", 5, "unterminated string: add a closing \""),
            ("a == \"abc\\\"", 5, "unterminated string: add a closing \""),
            (
                r#"a == "x\n""#,
                7,
                r#"invalid escape "\n" in string: only \" and \\ are allowed"#,
            ),
            ("a == b)", 6, r#"unexpected ")""#),
            (
                "a in ()",
                6,
                "empty list: write at least one value inside in ( )",
            ),
            (
                "a notin ( )",
                10,
                "empty list: write at least one value inside notin ( )",
            ),
            (
                "a in (x,)",
                8,
                r#"expected a value, found ")" (remove the trailing comma)"#,
            ),
            (
                "a in (x y)",
                8,
                r#"expected "," or ")" in the in ( ) list, found "y""#,
            ),
            (
                "a in x",
                5,
                r#"expected "(" after "in", found "x" (write in (value1, value2))"#,
            ),
            (
                "a in",
                4,
                r#"unexpected end of expression, expected "(" after "in""#,
            ),
            (
                "a == b foo",
                7,
                r#"unexpected trailing input "foo" (join conditions with && or ||)"#,
            ),
            (
                "a == b & c == d",
                7,
                r#"unexpected trailing input "& c == d" (write && for and)"#,
            ),
            (
                "a ==",
                4,
                r#"unexpected end of expression, expected a value after "==""#,
            ),
            ("a != &&", 5, r#"expected a value after "!=", found "&&""#),
            (
                "a == 'x'",
                5,
                r#"expected a value after "==", found "'" (use double quotes for strings)"#,
            ),
            (
                "a == -1",
                5,
                r#"expected a value after "==", found "-" (bare words must start with a letter or digit; put other text in double quotes)"#,
            ),
            (
                "(a == b",
                7,
                r#"unexpected end of expression, expected ")" to close the "(" at column 1"#,
            ),
            (
                "x==1 && (a == b c",
                16,
                r#"expected ")" to close the "(" at column 9, found "c""#,
            ),
            (
                "has(a",
                5,
                r#"unexpected end of expression, expected ")" after has("a""#,
            ),
            ("has()", 4, r#"expected a label key, found ")""#),
            ("()", 1, r#"expected a label key, found ")""#),
            ("!", 1, "unexpected end of expression, expected a label key"),
            (
                "in == x",
                0,
                r#"expected a label key, found the keyword "in" (to use it as a label key, quote it: "in")"#,
            ),
            (
                "has(notin)",
                4,
                r#"expected a label key, found the keyword "notin" (to use it as a label key, quote it: "notin")"#,
            ),
            (r#""" == x"#, 0, "label key must not be empty"),
            (
                "has x",
                4,
                r#"expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "has", found "x" (to test that a label exists, write has(key))"#,
            ),
            (
                "",
                0,
                "empty selector: expected an expression such as region == eu-west",
            ),
            (
                "   ",
                3,
                "empty selector: expected an expression such as region == eu-west",
            ),
            ("é == x", 0, r#"expected a label key, found "é""#),
            (
                "a == b || 'c'",
                10,
                r#"expected a label key, found "'" (use double quotes for strings)"#,
            ),
        ];
        for &(input, offset, message) in cases {
            assert_eq!(err(input), (offset, message.to_string()), "input {input:?}");
        }
    }

    #[test]
    fn first_problem_wins_over_later_lexical_errors() {
        // The stray word comes before the unterminated string, so it is reported.
        assert_eq!(err("a == b c \"x").0, 7);
        assert_eq!(err("a == \"x").0, 5);
    }

    #[test]
    fn error_display_uses_char_columns() {
        let e = Selector::parse("\"é\" == x && ").unwrap_err();
        assert_eq!(e.offset, "\"é\" == x && ".len());
        assert_eq!(e.column, 13);
        assert_eq!(
            e.to_string(),
            "column 13: unexpected end of expression, expected a label key"
        );
        let e = Selector::parse("ü = x").unwrap_err();
        assert_eq!((e.offset, e.column), (0, 1));
        let e = Selector::parse("\"ü\" = x").unwrap_err();
        assert_eq!((e.offset, e.column), (5, 5));
        assert_eq!(
            e.to_string(),
            r#"column 5: expected "==", "!=", "<", "<=", ">", ">=", "in" or "notin" after label key "ü", found "=" (write == for equality)"#
        );
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().starts_with("column 5: "));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{}a == b{}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(parse(&ok), eq("a", "b"));
        let too_deep = format!(
            "{}a == b{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        let (offset, message) = err(&too_deep);
        assert_eq!(offset, MAX_NESTING);
        assert!(message.starts_with("too deeply nested"), "{message}");

        let nots = format!("{}has(a)", "!".repeat(MAX_NESTING));
        assert!(Selector::parse(&nots).is_ok());
        let (offset, _) = err(&format!("{}has(a)", "!".repeat(MAX_NESTING + 1)));
        assert_eq!(offset, MAX_NESTING);
        // Parentheses and `!` count together.
        let mixed = "!(".repeat(MAX_NESTING / 2 + 1) + "has(a)";
        assert!(err(&mixed).1.starts_with("too deeply nested"));

        // Hostile input is rejected without overflowing the stack.
        for s in [
            "(".repeat(200_000),
            "!".repeat(200_000),
            "!(".repeat(100_000),
        ] {
            assert!(err(&s).1.starts_with("too deeply nested"));
        }
    }

    #[test]
    fn long_chains_are_bounded() {
        let chain = |n: usize| vec!["a == b"; n].join(" && ");
        // The deepest accepted tree still prints, evaluates and drops on a test thread's stack.
        let deepest = format!(
            "{}({})",
            "!".repeat(MAX_NESTING - 1),
            chain(MAX_DEPTH - MAX_NESTING + 1)
        );
        let s = sel(&deepest);
        assert_eq!(parse(&s.expr().to_string()), *s.expr());
        assert!(!s.matches(&labels(&[("a", "b")])));
        assert_eq!(s.label_keys().len(), 1);
        assert!(Selector::parse(&chain(MAX_DEPTH)).is_ok());
        let (offset, message) = err(&chain(MAX_DEPTH + 1));
        assert_eq!(offset, chain(MAX_DEPTH).len() + 1);
        assert!(message.starts_with("expression too large"), "{message}");
        let huge = vec!["a == b"; 200_000].join(" || ");
        assert!(err(&huge).1.starts_with("expression too large"));
        // Chains inside many parentheses add up.
        let nested = format!("{}{}{}", "(".repeat(60), chain(500), ")".repeat(60));
        assert!(Selector::parse(&nested).is_ok());
        let nested = format!("!!!!!!!!!!!!!!!!({})", chain(500));
        assert!(err(&nested).1.starts_with("expression too large"));
    }

    // -- property tests ------------------------------------------------------

    fn word_strategy(allow_empty: bool) -> BoxedStrategy<String> {
        let min = usize::from(!allow_empty);
        prop_oneof![
            4 => "[a-zA-Z0-9][a-zA-Z0-9._/-]{0,8}",
            1 => prop::sample::select(vec!["has", "in", "notin", "IN", "true"]).prop_map(String::from),
            1 => prop::collection::vec(
                prop::sample::select(vec!['a', '"', '\\', ' ', '(', ')', ',', '&', '|', '!', '=', 'é', '\n', '-']),
                min..6,
            )
            .prop_map(|cs| cs.into_iter().collect()),
            1 => "\\PC{1,6}",
        ]
        .prop_filter("keys must not be empty", move |s| allow_empty || !s.is_empty())
        .boxed()
    }

    fn number_strategy() -> BoxedStrategy<Number> {
        "[0-9]{1,4}(\\.[0-9]{1,3})?(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?"
            .prop_map(|t| Number::parse(&t).expect("the pattern writes numbers"))
            .boxed()
    }

    fn comparison_strategy() -> impl Strategy<Value = Comparison> {
        prop::sample::select(vec![
            Comparison::Lt,
            Comparison::Le,
            Comparison::Gt,
            Comparison::Ge,
        ])
    }

    fn expr_strategy(
        keys: BoxedStrategy<String>,
        values: BoxedStrategy<String>,
        numbers: BoxedStrategy<Number>,
    ) -> impl Strategy<Value = Expr> {
        let list = prop::collection::vec(values.clone(), 1..4);
        let leaf = prop_oneof![
            (keys.clone(), comparison_strategy(), numbers)
                .prop_map(|(k, op, n)| Expr::Compare(k, op, n)),
            keys.clone().prop_map(Expr::Has),
            (keys.clone(), values.clone()).prop_map(|(k, v)| Expr::Eq(k, v)),
            (keys.clone(), values).prop_map(|(k, v)| Expr::Ne(k, v)),
            (keys.clone(), list.clone()).prop_map(|(k, v)| Expr::In(k, v)),
            (keys, list).prop_map(|(k, v)| Expr::NotIn(k, v)),
        ];
        leaf.prop_recursive(5, 48, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(l, r)| Expr::Or(b(l), b(r))),
                (inner.clone(), inner.clone()).prop_map(|(l, r)| Expr::And(b(l), b(r))),
                inner.prop_map(|e| Expr::Not(b(e))),
            ]
        })
    }

    fn any_expr() -> impl Strategy<Value = Expr> {
        expr_strategy(word_strategy(false), word_strategy(true), number_strategy())
    }

    /// Keys and values from small pools, so that random labels actually hit them.
    fn pooled_expr() -> impl Strategy<Value = Expr> {
        expr_strategy(
            prop::sample::select(vec!["a", "b", "c", "in", "x.y/z"])
                .prop_map(String::from)
                .boxed(),
            prop::sample::select(vec!["1", "2", "3", ""])
                .prop_map(String::from)
                .boxed(),
            prop::sample::select(vec!["0", "1", "2", "2.5", "3", "1K", "1Ki"])
                .prop_map(|t| Number::parse(t).expect("a number"))
                .boxed(),
        )
    }

    fn pooled_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "in", "x.y/z", "other"])
                .prop_map(String::from),
            prop::sample::select(vec![
                "1", "2", "3", "", "2.50", "1000", "1024", "lots", "-1",
            ])
            .prop_map(String::from),
            0..6,
        )
    }

    /// Reference semantics, written independently of `eval`.
    fn reference(expr: &Expr, labels: &BTreeMap<String, String>) -> bool {
        let value = |k: &String| labels.get(k).cloned();
        match expr {
            Expr::Or(l, r) => [l, r].iter().any(|e| reference(e, labels)),
            Expr::And(l, r) => [l, r].iter().all(|e| reference(e, labels)),
            Expr::Not(e) => !reference(e, labels),
            Expr::Has(k) => value(k).is_some(),
            Expr::Eq(k, v) => value(k) == Some(v.clone()),
            Expr::Ne(k, v) => value(k) != Some(v.clone()),
            Expr::In(k, vs) => vs.iter().any(|v| value(k) == Some(v.clone())),
            Expr::NotIn(k, vs) => vs.iter().all(|v| value(k) != Some(v.clone())),
            Expr::Compare(k, op, n) => {
                let Some(Ok(have)) = value(k).map(|v| Quantity::parse(&v)) else {
                    return false;
                };
                let order = have.cmp(n.value());
                match op {
                    Comparison::Lt => order.is_lt(),
                    Comparison::Le => order.is_le(),
                    Comparison::Gt => order.is_gt(),
                    Comparison::Ge => order.is_ge(),
                }
            }
        }
    }

    fn token_soup() -> impl Strategy<Value = String> {
        let tokens = vec![
            "a", "b.c/d", "x-1", "==", "!=", "=", "!", "in", "notin", "has", "(", ")", ",", "&&",
            "||", "&", "|", "\"q\"", "\"", "\\", "\"\\\"", "\"\\x\"", "é", "'", "-", " ", "\t",
            "((((", "))))", "!!!!", "<", "<=", ">", ">=", "=>", "8Gi", "1.5", "2.", "lots",
        ];
        (
            prop::collection::vec(prop::sample::select(tokens), 0..24),
            any::<bool>(),
        )
            .prop_map(|(parts, spaced)| parts.join(if spaced { " " } else { "" }))
    }

    fn check_total(source: &str) -> Result<(), TestCaseError> {
        match Selector::parse(source) {
            Ok(sel) => {
                let again = Selector::parse(&sel.expr().to_string());
                prop_assert_eq!(again.as_ref().map(Selector::expr), Ok(sel.expr()));
            }
            Err(e) => {
                prop_assert!(e.offset <= source.len());
                prop_assert!(source.is_char_boundary(e.offset));
                prop_assert_eq!(e.column, source[..e.offset].chars().count() + 1);
                prop_assert!(!e.message.is_empty());
                prop_assert!(!e.message.starts_with(char::is_uppercase));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn display_round_trips(expr in any_expr()) {
            let text = expr.to_string();
            let parsed = Selector::parse(&text);
            prop_assert_eq!(parsed.as_ref().map(Selector::expr), Ok(&expr), "text: {}", text);
        }

        #[test]
        fn matches_agrees_with_reference(expr in pooled_expr(), labels in pooled_labels()) {
            let selector = Selector::parse(&expr.to_string())?;
            prop_assert_eq!(selector.matches(&labels), reference(&expr, &labels));
        }

        #[test]
        fn only_label_keys_affect_matching(expr in pooled_expr(), labels in pooled_labels()) {
            let selector = Selector::parse(&expr.to_string())?;
            let keys = selector.keys();
            let mut read = labels.clone();
            read.retain(|k, _| keys.contains(k.as_str()));
            prop_assert_eq!(selector.matches(&labels), selector.matches(&read));
        }

        #[test]
        fn comparisons_agree_with_the_numbers(
            have in 0u64..100_000,
            bound in 0u64..100_000,
            units in (0usize..4, 0usize..4),
            op in comparison_strategy(),
        ) {
            // Tenths with a unit: exact in integers, so the reference needs no Quantity.
            let unit = |i: usize| [("", 1u128), ("K", 1000), ("Ki", 1024), ("M", 1_000_000)][i];
            let text = |n: u64, i: usize| format!("{}.{}{}", n / 10, n % 10, unit(i).0);
            let value = |n: u64, i: usize| u128::from(n) * unit(i).1;
            let selector = Selector::parse(&format!("n {} {}", op.symbol(), text(bound, units.1)))?;
            let (a, b) = (value(have, units.0), value(bound, units.1));
            let want = match op {
                Comparison::Lt => a < b,
                Comparison::Le => a <= b,
                Comparison::Gt => a > b,
                Comparison::Ge => a >= b,
            };
            let host = labels(&[("n", &text(have, units.0))]);
            prop_assert_eq!(selector.matches(&host), want);
        }

        #[test]
        fn parse_never_panics_on_any_text(source in "\\PC*") {
            check_total(&source)?;
        }

        #[test]
        fn parse_never_panics_on_token_soup(source in token_soup()) {
            check_total(&source)?;
        }

        #[test]
        fn de_morgan(a in pooled_expr(), b in pooled_expr(), labels in pooled_labels()) {
            let lhs = Selector::parse(&format!("!(({a}) && ({b}))"))?;
            let rhs = Selector::parse(&format!("!({a}) || !({b})"))?;
            prop_assert_eq!(lhs.matches(&labels), rhs.matches(&labels));
            let lhs = Selector::parse(&format!("!(({a}) || ({b}))"))?;
            let rhs = Selector::parse(&format!("!({a}) && !({b})"))?;
            prop_assert_eq!(lhs.matches(&labels), rhs.matches(&labels));
        }
    }
}
