//! `atoll label host|site NAME key=value… key-…`: add, change and remove labels, as
//! `kubectl label` does.
//!
//! `label` is a generic verb over kinds, like `get` and `describe`, so the kind comes first.
//! The CLI reads only the grammar of the arguments (`key=value` sets, `key-` removes) and
//! refuses anything else, naming it; whether a key or value is allowed is the control plane's
//! rule, the spec's, which answers every problem at once.

use atoll_api::labels::{LabelChange, Labels};

use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, Result};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// host or site.
    pub kind: String,
    /// The host's id (as `atoll get hosts` shows it) or the site's name.
    pub name: String,
    /// `key=value` adds or changes a label, `key-` removes one.
    #[arg(required = true, value_name = "key=value|key-")]
    pub changes: Vec<String>,
}

/// What can be labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labelled {
    Host,
    Site,
}

impl Labelled {
    pub fn from_word(word: &str) -> Result<Labelled> {
        match word.to_ascii_lowercase().as_str() {
            "host" | "hosts" => Ok(Labelled::Host),
            "site" | "sites" => Ok(Labelled::Site),
            _ => Err(CliError::user(format!(
                "cannot label `{word}`: choose host or site (other resources carry their labels in their YAML)"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Labelled::Host => "host",
            Labelled::Site => "site",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Labelled::Host => "hosts",
            Labelled::Site => "sites",
        }
    }
}

/// The change the arguments ask for: `key=value` sets (the value may hold `=`), `key-`
/// removes; a key given twice, or an argument that is neither, is refused by name.
pub fn parse(args: &[String]) -> Result<LabelChange> {
    let mut change = LabelChange::default();
    let mut seen = std::collections::BTreeSet::new();
    for arg in args {
        let key = if let Some((key, value)) = arg.split_once('=') {
            if key.is_empty() {
                return Err(neither(arg, "it has no key before `=`"));
            }
            change.set.insert(key.to_owned(), value.to_owned());
            key
        } else if let Some(key) = arg.strip_suffix('-').filter(|k| !k.is_empty()) {
            change.remove.push(key.to_owned());
            key
        } else {
            return Err(neither(arg, "it is neither `key=value` nor `key-`"));
        };
        if !seen.insert(key.to_owned()) {
            return Err(CliError::user(format!(
                "label `{key}` is given more than once: set it or remove it, once"
            )));
        }
    }
    Ok(change)
}

fn neither(arg: &str, why: &str) -> CliError {
    CliError::user(format!(
        "cannot read `{arg}`: {why}; write `key=value` to add or change a label, `key-` to remove one"
    ))
}

pub async fn run(args: Args) -> Result<()> {
    let what = Labelled::from_word(&args.kind)?;
    let change = parse(&args.changes)?;
    let client = Client::from_config(&Config::load()?)?;
    let path = format!("/v1/{}/{}/labels", what.plural(), args.name);
    let answer: Labels = client.patch(&path, &change).await?;
    output::print(&said(what, &args.name, &answer));
    Ok(())
}

/// `host h1 labels: a=1,b=2`, then a line for each key removed that was not there.
pub fn said(what: Labelled, name: &str, answer: &Labels) -> String {
    let mut out = format!(
        "{} {name} labels: {}\n",
        what.as_str(),
        output::labels(&answer.labels)
    );
    for key in &answer.not_found {
        out.push_str(&format!("label `{key}` not found, nothing to remove\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn sets_changes_and_removes_as_kubectl_does() {
        let change = parse(&args(&["size=medium", "old-", "note=a=b", "empty="])).unwrap();
        assert_eq!(change.set["size"], "medium");
        assert_eq!(change.set["note"], "a=b", "the value keeps its `=`");
        assert_eq!(change.set["empty"], "");
        assert_eq!(change.remove, ["old"]);
    }

    #[test]
    fn an_argument_that_is_neither_is_refused_by_name() {
        for (bad, why) in [
            ("size", "neither"),
            ("=v", "no key"),
            ("-", "neither"),
            ("", "neither"),
        ] {
            let e = parse(&args(&["ok=1", bad])).unwrap_err();
            assert!(e.message.contains(&format!("`{bad}`")), "{}", e.message);
            assert!(e.message.contains(why), "{}", e.message);
            assert!(e.message.contains("key=value"), "{}", e.message);
        }
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        for twice in [["a=1", "a=2"], ["a=1", "a-"], ["a-", "a-"]] {
            let e = parse(&args(&twice)).unwrap_err();
            assert!(
                e.message.contains("`a` is given more than once"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn only_hosts_and_sites_are_labelled() {
        assert_eq!(Labelled::from_word("host").unwrap(), Labelled::Host);
        assert_eq!(Labelled::from_word("Sites").unwrap(), Labelled::Site);
        for other in ["app", "deployment", "deviceclass", "secret"] {
            let e = Labelled::from_word(other).unwrap_err();
            assert!(
                e.message
                    .contains(&format!("cannot label `{other}`: choose host or site")),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn the_answer_names_keys_that_were_not_there() {
        let answer = Labels {
            labels: [("size".to_owned(), "medium".to_owned())].into(),
            not_found: vec!["gone".into()],
        };
        assert_eq!(
            said(Labelled::Host, "h1", &answer),
            "host h1 labels: size=medium\nlabel `gone` not found, nothing to remove\n"
        );
        assert_eq!(
            said(Labelled::Site, "s", &Labels::default()),
            "site s labels: <none>\n"
        );
    }

    #[test]
    fn the_verb_parses_kind_name_and_changes() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: crate::Command,
        }
        let cli =
            Cli::try_parse_from(["atoll", "label", "host", "h1", "size=large", "old-"]).unwrap();
        let crate::Command::Label(a) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!((a.kind.as_str(), a.name.as_str()), ("host", "h1"));
        assert_eq!(a.changes, ["size=large", "old-"]);
        assert!(Cli::try_parse_from(["atoll", "label", "host", "h1"]).is_err());
    }
}
