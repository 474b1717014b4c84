//! A resource of any kind, and reading a set of YAML sources into resources.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::application::{self, Application};
use crate::decode::Decoder;
use crate::deployment::{self, Deployment};
use crate::device_class::{self, DeviceClass};
use crate::diag::{Diagnostic, did_you_mean};
use crate::names::check_name;
use crate::site::{self, Site};
use crate::template::Origin;
use crate::yaml;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Application,
    Deployment,
    Site,
    DeviceClass,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Application,
        Kind::Deployment,
        Kind::Site,
        Kind::DeviceClass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Application => "Application",
            Kind::Deployment => "Deployment",
            Kind::Site => "Site",
            Kind::DeviceClass => "DeviceClass",
        }
    }

    /// The kind for a name as users type it on the command line and in URLs:
    /// `app`, `apps`, `application`, `Site`, `deployments`...
    pub fn from_user(word: &str) -> Option<Kind> {
        match word.to_ascii_lowercase().as_str() {
            "app" | "apps" | "application" | "applications" => Some(Kind::Application),
            "deployment" | "deployments" | "deploy" => Some(Kind::Deployment),
            "site" | "sites" => Some(Kind::Site),
            "deviceclass" | "deviceclasses" | "dc" => Some(Kind::DeviceClass),
            _ => None,
        }
    }

    /// The plural used in API paths: `/v1/applications`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Application => "applications",
            Kind::Deployment => "deployments",
            Kind::Site => "sites",
            Kind::DeviceClass => "deviceclasses",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated resource. Serialized, it is the document as a user would write it, with
/// `kind` first and quantities in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Resource {
    Application(Application),
    Deployment(Deployment),
    Site(Site),
    DeviceClass(DeviceClass),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Application(_) => Kind::Application,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::Site(_) => Kind::Site,
            Resource::DeviceClass(_) => Kind::DeviceClass,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Application(a) => &a.name,
            Resource::Deployment(d) => &d.name,
            Resource::Site(s) => &s.name,
            Resource::DeviceClass(c) => &c.name,
        }
    }
}

/// A resource and where it was written.
#[derive(Debug, Clone)]
pub struct Document {
    pub resource: Resource,
    pub origin: Origin,
}

/// One named text to read, such as a file's path and its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// The result of reading sources: every resource that could be read, and every problem found.
/// Resources with problems are still returned (without the bad fields) so that later checks, such
/// as rendering templates for each site, can report their own problems in the same pass.
#[derive(Debug, Default)]
pub struct Parsed {
    pub documents: Vec<Document>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Reads every document of every source. Two documents of the same kind and name are an error.
pub fn parse_sources(sources: &[Source]) -> Parsed {
    let mut parsed = Parsed::default();
    for source in sources {
        parse_source(source, &mut parsed);
    }
    for (i, doc) in parsed.documents.iter().enumerate() {
        let earlier = parsed.documents[..i].iter().find(|d| {
            d.resource.kind() == doc.resource.kind() && d.resource.name() == doc.resource.name()
        });
        if let Some(first) = earlier {
            parsed.diagnostics.push(Diagnostic {
                file: doc.origin.file.to_string(),
                line: doc.origin.line,
                column: doc.origin.column,
                path: format!("{} {}", doc.resource.kind(), doc.resource.name()),
                message: format!("defined twice; the first is at {}", first.origin),
                hint: Some("each resource is defined once per apply".into()),
            });
        }
    }
    parsed
}

fn parse_source(source: &Source, out: &mut Parsed) {
    let first = out.diagnostics.len();
    read_source(source, out);
    // Decoders visit fields in their own order; people read a file top to bottom.
    out.diagnostics[first..].sort_by_key(|d| (d.line, d.column));
}

fn read_source(source: &Source, out: &mut Parsed) {
    let file: Arc<str> = Arc::from(source.name.as_str());
    let documents = match yaml::parse_stream(&source.text) {
        Ok(docs) => docs,
        Err(e) => {
            out.diagnostics.push(Diagnostic {
                file: source.name.clone(),
                line: e.pos.line,
                column: e.pos.column,
                path: String::new(),
                message: format!("invalid YAML: {}", e.message),
                hint: None,
            });
            return;
        }
    };
    let mut d = Decoder {
        file: file.clone(),
        diags: &mut out.diagnostics,
    };
    for doc in documents {
        if let Some(resource) = decode_document(&mut d, &doc.root) {
            let origin = Origin {
                file: file.clone(),
                line: doc.root.pos.line,
                column: doc.root.pos.column,
            };
            out.documents.push(Document { resource, origin });
        }
    }
}

fn decode_document(d: &mut Decoder<'_>, root: &yaml::Node) -> Option<Resource> {
    let fields = d.map(root, "")?;
    let kind_node = d.required(&fields, "kind", "")?;
    let kind_text = d.string(kind_node, "kind")?;
    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_text) else {
        let hint = match did_you_mean(&kind_text, names.iter().copied()) {
            Some(guess) => format!("did you mean `{guess}`?"),
            None => format!("expected one of: {}", names.join(", ")),
        };
        d.error_hint(
            kind_node.pos,
            "kind",
            format!("unknown kind `{kind_text}`"),
            hint,
        );
        return None;
    };
    let name_node = d.required(&fields, "name", kind.as_str())?;
    let name = d.string(name_node, &format!("{kind}.name"))?;
    let path = format!("{kind} {name}");
    if let Err(e) = check_name(&name) {
        d.error(name_node.pos, &path, e);
    }
    Some(match kind {
        Kind::Application => Resource::Application(application::decode(d, &fields, name, &path)),
        Kind::Deployment => Resource::Deployment(deployment::decode(d, &fields, name, &path)?),
        Kind::Site => Resource::Site(site::decode(d, &fields, name, &path)),
        Kind::DeviceClass => Resource::DeviceClass(device_class::decode(d, &fields, name, &path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_the_words_users_type() {
        for (word, kind) in [
            ("app", Kind::Application),
            ("Deployments", Kind::Deployment),
            ("site", Kind::Site),
            ("deviceclass", Kind::DeviceClass),
            ("DeviceClasses", Kind::DeviceClass),
            ("dc", Kind::DeviceClass),
        ] {
            assert_eq!(Kind::from_user(word), Some(kind), "{word}");
        }
        assert_eq!(Kind::from_user("device"), None);
        for kind in Kind::ALL {
            assert_eq!(Kind::from_user(kind.as_str()), Some(kind));
            assert_eq!(Kind::from_user(kind.plural()), Some(kind));
        }
    }
}
