//! Templates in env values and files, rendered per site by the control plane's compiler.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a piece of user input was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The names a template may read. `site` carries `name`, `labels` and `variables`.
pub const TEMPLATE_ROOTS: [&str; 4] = ["site", "app", "deployment", "service"];

/// A minijinja template as written. Its origin is kept when it came from a file, so that an
/// error found later (when rendering for a site) still points at the line; the origin is not part
/// of the value: two templates with the same text are equal wherever they were written.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub origin: Option<Origin>,
}

impl Template {
    pub fn new(source: impl Into<String>) -> Template {
        Template {
            source: source.into(),
            origin: None,
        }
    }

    /// True when rendering cannot change the text, so it needs no site.
    pub fn is_literal(&self) -> bool {
        !(self.source.contains("{{") || self.source.contains("{%") || self.source.contains("{#"))
    }

    /// Checks the syntax and that every variable the template reads is one of
    /// [`TEMPLATE_ROOTS`]. Returns the problem and, if known, its line within the template.
    pub fn check(&self) -> Result<(), (String, Option<usize>)> {
        if self.is_literal() {
            return Ok(());
        }
        let env = environment();
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| (e.detail().unwrap_or("syntax error").to_owned(), e.line()))?;
        crate::render::program(&template).map_err(|problem| (problem, None))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !TEMPLATE_ROOTS.contains(&v.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(name) => Err((
                format!(
                    "unknown template variable `{name}`; templates can read {}",
                    TEMPLATE_ROOTS.join(", ")
                ),
                None,
            )),
        }
    }
}

/// The template environment shared by validation and rendering: strict about undefined values,
/// no auto-escaping (output goes into env values and config files, not HTML), a fuel limit so
/// that no template can loop forever, and the size checks of [`crate::render`] so that none can
/// grow without bound.
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    crate::render::install(&mut env);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // The size checks put up to three instructions beside each one that builds or writes a
    // value; the fuel allows for them, so a template has the steps it had before them.
    env.set_fuel(Some(250_000));
    env.set_syntax(syntax());
    env
}

/// The syntax of atoll's templates: a file template's final newline belongs to the file.
pub fn syntax() -> minijinja::syntax::SyntaxConfig {
    minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .unwrap_or_default()
}

impl PartialEq for Template {
    fn eq(&self, other: &Template) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Template::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_syntax_and_roots() {
        assert!(Template::new("plain").check().is_ok());
        assert!(Template::new("{{ site.labels.store_id }}").check().is_ok());
        let (msg, _) = Template::new("{{ site.name ").check().unwrap_err();
        assert!(!msg.is_empty());
        let (msg, _) = Template::new("{{ sitee.name }}").check().unwrap_err();
        assert!(msg.contains("`sitee`"), "{msg}");
    }

    #[test]
    fn equality_ignores_origin() {
        let a = Template {
            source: "x".into(),
            origin: Some(Origin {
                file: "a".into(),
                line: 1,
                column: 1,
            }),
        };
        assert_eq!(a, Template::new("x"));
    }
}
