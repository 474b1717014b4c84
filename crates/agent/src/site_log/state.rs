//! The site's replicated state and the commands that change it: a plain serde struct and a pure
//! `apply`, so every host that applies the same log holds the same state, and the rules are
//! tested without Raft, files or a network.
//!
//! A command that the state refuses (a manifest older than the one held, a host that is not
//! known) changes nothing and says why in its [`Outcome`]: the log is the same on every host, so
//! a refusal is the same on every host too, and never an error that stops the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one host offers to the site's replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub millicpus: u64,
    pub memory_bytes: u64,
}

/// A host of the site as the log knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Whether the leader last judged the host up (liveness itself is not in the log, only the
    /// changes of this judgement).
    pub up: bool,
    pub capacity: Capacity,
}

/// A signed manifest as the control plane sent it: its revision and the signed bytes, kept
/// whole so any host can check the signature again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub revision: u64,
    #[serde(with = "base64_bytes")]
    pub signed: Vec<u8>,
}

/// Everything the site's hosts agree on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    /// The newest signed manifest accepted, if any.
    #[serde(default)]
    pub manifest: Option<SignedManifest>,
    /// Where every replica runs, as the site's scheduler wrote it (its shape is the scheduler's).
    #[serde(default)]
    pub placement: serde_json::Value,
    /// The hosts by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostRecord>,
    /// Secrets sealed to the site's hosts, by name; the log never holds them unsealed.
    #[serde(default)]
    pub sealed_secrets: BTreeMap<String, SealedSecret>,
}

/// A secret's sealed bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret(#[serde(with = "base64_bytes")] pub Vec<u8>);

/// A change to the site's state, proposed by a host and applied by all of them in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// A signed manifest the control plane sent; taken only if its revision is newer.
    AcceptManifest(SignedManifest),
    /// The placement of every replica, whole.
    SetPlacement { placement: serde_json::Value },
    /// A host judged up, with what it offers now (adds the host if it is new).
    HostUp { host: String, capacity: Capacity },
    /// A host judged down; it stays known, with its last capacity.
    HostDown { host: String },
    /// A sealed secret, new or replacing the one of that name.
    PutSecret { name: String, sealed: SealedSecret },
    /// A secret removed.
    RemoveSecret { name: String },
}

impl std::fmt::Display for Command {
    /// Names the command and its subject, never a secret's bytes or a manifest's content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::AcceptManifest(m) => write!(f, "accept manifest revision {}", m.revision),
            Command::SetPlacement { .. } => write!(f, "set placement"),
            Command::HostUp { host, .. } => write!(f, "host {host} up"),
            Command::HostDown { host } => write!(f, "host {host} down"),
            Command::PutSecret { name, .. } => write!(f, "put secret {name}"),
            Command::RemoveSecret { name } => write!(f, "remove secret {name}"),
        }
    }
}

/// What applying one command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The state changed (or already was what the command asks).
    Applied,
    /// The state is as it was, for this reason.
    Refused { reason: Refusal },
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// The manifest's revision is not newer than the one held.
    StaleManifest { held: u64, offered: u64 },
    /// The host is not known to the site's state.
    UnknownHost { host: String },
    /// No secret of that name.
    UnknownSecret { name: String },
}

impl SiteState {
    /// Applies one command: the only way the site's state changes.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let refused = |reason| Outcome::Refused { reason };
        match command {
            Command::AcceptManifest(offered) => {
                if let Some(held) = &self.manifest
                    && held.revision >= offered.revision
                {
                    return refused(Refusal::StaleManifest {
                        held: held.revision,
                        offered: offered.revision,
                    });
                }
                self.manifest = Some(offered.clone());
            }
            Command::SetPlacement { placement } => self.placement = placement.clone(),
            Command::HostUp { host, capacity } => {
                self.hosts.insert(
                    host.clone(),
                    HostRecord {
                        up: true,
                        capacity: *capacity,
                    },
                );
            }
            Command::HostDown { host } => match self.hosts.get_mut(host) {
                Some(record) => record.up = false,
                None => return refused(Refusal::UnknownHost { host: host.clone() }),
            },
            Command::PutSecret { name, sealed } => {
                self.sealed_secrets.insert(name.clone(), sealed.clone());
            }
            Command::RemoveSecret { name } => {
                if self.sealed_secrets.remove(name).is_none() {
                    return refused(Refusal::UnknownSecret { name: name.clone() });
                }
            }
        }
        Outcome::Applied
    }
}

/// Bytes as one base64 string in JSON, not an array of numbers (a signed manifest is large).
pub(super) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn manifest(revision: u64) -> Command {
        Command::AcceptManifest(SignedManifest {
            revision,
            signed: vec![revision as u8; 3],
        })
    }

    #[test]
    fn a_newer_manifest_replaces_the_held_one_and_an_older_is_refused() {
        let mut state = SiteState::default();
        assert_eq!(state.apply(&manifest(2)), Outcome::Applied);
        assert_eq!(state.apply(&manifest(3)), Outcome::Applied);
        let before = state.clone();
        assert_eq!(
            state.apply(&manifest(3)),
            Outcome::Refused {
                reason: Refusal::StaleManifest {
                    held: 3,
                    offered: 3
                }
            }
        );
        assert!(matches!(state.apply(&manifest(1)), Outcome::Refused { .. }));
        assert_eq!(state, before);
        assert_eq!(state.manifest.map(|m| m.revision), Some(3));
    }

    #[test]
    fn a_host_goes_down_and_comes_back_with_its_new_capacity() {
        let mut state = SiteState::default();
        let small = Capacity {
            millicpus: 2000,
            memory_bytes: 1 << 30,
        };
        let big = Capacity {
            millicpus: 4000,
            memory_bytes: 1 << 31,
        };
        state.apply(&Command::HostUp {
            host: "h1".into(),
            capacity: small,
        });
        assert_eq!(
            state.apply(&Command::HostDown { host: "h1".into() }),
            Outcome::Applied
        );
        assert_eq!(
            state.hosts["h1"],
            HostRecord {
                up: false,
                capacity: small
            }
        );
        state.apply(&Command::HostUp {
            host: "h1".into(),
            capacity: big,
        });
        assert_eq!(
            state.hosts["h1"],
            HostRecord {
                up: true,
                capacity: big
            }
        );
    }

    #[test]
    fn an_unknown_host_cannot_go_down() {
        let mut state = SiteState::default();
        assert_eq!(
            state.apply(&Command::HostDown { host: "h9".into() }),
            Outcome::Refused {
                reason: Refusal::UnknownHost { host: "h9".into() }
            }
        );
        assert!(state.hosts.is_empty());
    }

    #[test]
    fn secrets_are_put_replaced_and_removed_by_name() {
        let mut state = SiteState::default();
        let put = |b: u8| Command::PutSecret {
            name: "db".into(),
            sealed: SealedSecret(vec![b]),
        };
        state.apply(&put(1));
        state.apply(&put(2));
        assert_eq!(state.sealed_secrets["db"], SealedSecret(vec![2]));
        let remove = Command::RemoveSecret { name: "db".into() };
        assert_eq!(state.apply(&remove), Outcome::Applied);
        assert!(matches!(state.apply(&remove), Outcome::Refused { .. }));
    }

    #[test]
    fn a_command_names_its_subject_and_never_a_secrets_bytes() {
        let put = Command::PutSecret {
            name: "db".into(),
            sealed: SealedSecret(b"sealed-bytes".to_vec()),
        };
        assert_eq!(put.to_string(), "put secret db");
        assert_eq!(manifest(7).to_string(), "accept manifest revision 7");
    }

    #[test]
    fn bytes_travel_as_base64_and_unknown_fields_are_tolerated() {
        let json = serde_json::to_value(manifest(1)).unwrap();
        assert_eq!(json["signed"], "AQEB");
        let state: SiteState = serde_json::from_str(r#"{"hosts":{},"newer_field":1}"#).unwrap();
        assert_eq!(state, SiteState::default());
        assert!(serde_json::from_str::<SignedManifest>(r#"{"revision":1,"signed":"!"}"#).is_err());
    }

    fn command() -> impl Strategy<Value = Command> {
        let host = prop::sample::select(vec!["h1", "h2", "h3"]).prop_map(String::from);
        let name = prop::sample::select(vec!["a", "b"]).prop_map(String::from);
        prop_oneof![
            (0u64..6).prop_map(manifest),
            (0u64..4).prop_map(|n| Command::SetPlacement {
                placement: serde_json::json!({ "n": n })
            }),
            (host.clone(), 0u64..4).prop_map(|(host, c)| Command::HostUp {
                host,
                capacity: Capacity {
                    millicpus: c,
                    memory_bytes: c
                }
            }),
            host.prop_map(|host| Command::HostDown { host }),
            (name.clone(), any::<u8>()).prop_map(|(name, b)| Command::PutSecret {
                name,
                sealed: SealedSecret(vec![b])
            }),
            name.prop_map(|name| Command::RemoveSecret { name }),
        ]
    }

    proptest! {
        /// What snapshots and restarts rely on: the state after a log is a function of the log,
        /// it survives a round trip through its own serialization, and the held manifest's
        /// revision never goes back.
        #[test]
        fn the_state_is_a_function_of_the_log(log in prop::collection::vec(command(), 0..40)) {
            let mut one = SiteState::default();
            let mut other = SiteState::default();
            let mut revision = None;
            for (i, c) in log.iter().enumerate() {
                prop_assert_eq!(one.apply(c), other.apply(c));
                let now = one.manifest.as_ref().map(|m| m.revision);
                prop_assert!(now >= revision);
                revision = now;
                if i % 7 == 0 {
                    let bytes = serde_json::to_vec(&one).unwrap();
                    one = serde_json::from_slice(&bytes).unwrap();
                }
            }
            prop_assert_eq!(one, other);
        }
    }
}
