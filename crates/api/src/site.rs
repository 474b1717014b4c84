//! The host-to-host channel of a site cluster: how a host's certificate names it, and the
//! frames two agents of one site exchange over mutual TLS.
//!
//! The control plane is no party to it: each agent listens on its site address and dials its
//! peers, and both ends prove themselves with the certificates the control plane issued at
//! enrollment. So the identity a certificate carries is written and read here, once, for the
//! control plane that issues it and the agents that check it. Frames are lines of JSON, at most
//! [`MAX_FRAME_BYTES`] each: easy to read past (an unknown kind is [`PeerMessage::Unknown`], so a
//! newer peer's frames do not break an older agent's channel) and bounded, so a peer cannot make
//! an agent buffer without end. No frame is read before the peer's certificate has admitted it,
//! so the bound is sized for the site log's traffic (a snapshot holds the signed manifest), not
//! for strangers. The site log's requests travel as [`PeerMessage::Raft`], their bodies opaque
//! here: they are the agents' own Raft library's, and both ends are agents of one site.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The port an agent listens on for its site's peers when `--listen-site` names none.
pub const DEFAULT_SITE_PORT: u16 = 7443;
/// The longest frame, newline included; a longer one ends the connection.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// How often each end of a channel sends a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a channel may stay silent before its peer is taken for down and the channel closed.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);

/// The URI in a host certificate's subject alternative names that is its identity.
pub fn identity_uri(site: &str, host: &str) -> String {
    format!("atoll://site/{site}/host/{host}")
}

/// The site and host an identity URI names, if it is one and both are valid names.
pub fn parse_identity_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("atoll://site/")?;
    let (site, host) = rest.split_once("/host/")?;
    let valid = |s: &str| atoll_spec::names::check_name(s).is_ok();
    (valid(site) && valid(host)).then_some((site, host))
}

/// What two peers say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeerMessage {
    /// The first frame each end sends: who it says it is (the certificate decides; this is
    /// checked against it) and its version, for the logs.
    Hello {
        site: String,
        host: String,
        #[serde(default)]
        agent_version: String,
    },
    /// Sent every [`HEARTBEAT_EVERY`]; `sequence` counts up from 1 on each connection.
    Heartbeat {
        sequence: u64,
    },
    /// A request of the site log, answered by a [`PeerMessage::RaftReply`] of the same `id`.
    Raft {
        id: u64,
        body: serde_json::Value,
    },
    RaftReply {
        id: u64,
        body: serde_json::Value,
    },
    /// What the sending host is and runs, sent when the channel opens and on every change: the
    /// site's leader schedules on it.
    State(HostState),
    /// A frame of a kind this build does not know, from a newer peer: ignored.
    #[serde(other)]
    Unknown,
}

/// One host's own account of itself to its site's peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub inventory: crate::host::Inventory,
    /// The replicas it has containers for, running or not.
    #[serde(default)]
    pub running: Vec<RunningReplica>,
    /// Whether its site log is formed (holds a membership): the founder forms the site's log
    /// only once every other host has said its own is not.
    #[serde(default)]
    pub log_formed: bool,
}

/// A replica a host has a container for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunningReplica {
    pub deployment: String,
    pub service: String,
    pub replica: u32,
}

impl PeerMessage {
    /// The frame's bytes: its JSON and a newline.
    pub fn encode(&self) -> Vec<u8> {
        // Plain strings and numbers: serializing cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Reads one frame (without its newline).
    pub fn decode(line: &[u8]) -> Result<PeerMessage, String> {
        if line.len() >= MAX_FRAME_BYTES {
            return Err(format!(
                "a frame of {} bytes is over the limit of {MAX_FRAME_BYTES}",
                line.len()
            ));
        }
        serde_json::from_slice(line).map_err(|e| format!("a frame is not a peer message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_read_back() {
        let uri = identity_uri("store-0042", "h-7f3a");
        assert_eq!(uri, "atoll://site/store-0042/host/h-7f3a");
        assert_eq!(parse_identity_uri(&uri), Some(("store-0042", "h-7f3a")));
    }

    #[test]
    fn malformed_identity_uris_name_nobody() {
        for uri in [
            "",
            "https://site/a/host/b",
            "atoll://site/a",
            "atoll://site//host/b",
            "atoll://site/a/host/",
            "atoll://site/a/host/b/host/c",
            "atoll://site/A B/host/b",
        ] {
            assert_eq!(parse_identity_uri(uri), None, "{uri}");
        }
    }

    #[test]
    fn frames_round_trip_and_unknown_kinds_are_read_past() {
        for m in [
            PeerMessage::Hello {
                site: "s".into(),
                host: "h".into(),
                agent_version: "1.0.0".into(),
            },
            PeerMessage::Heartbeat { sequence: 7 },
        ] {
            let bytes = m.encode();
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert_eq!(PeerMessage::decode(&bytes[..bytes.len() - 1]), Ok(m));
        }
        assert_eq!(
            PeerMessage::decode(br#"{"kind":"vote","term":3}"#),
            Ok(PeerMessage::Unknown)
        );
        assert_eq!(
            PeerMessage::decode(br#"{"kind":"heartbeat","sequence":1,"extra":true}"#),
            Ok(PeerMessage::Heartbeat { sequence: 1 })
        );
    }

    #[test]
    fn a_manifest_lists_members_only_when_it_has_some_and_reads_without_them() {
        let content = crate::ManifestContent::default();
        let json = serde_json::to_string(&content).unwrap();
        assert!(!json.contains("site_hosts"), "{json}");
        let listed: crate::ManifestContent = serde_json::from_str(
            r#"{"applications":[],"site_hosts":[{"host":"h-a","address":"10.0.0.1:7443","role":"voter"},{"host":"h-b"}]}"#,
        )
        .unwrap();
        assert_eq!(
            listed.site_hosts,
            [
                crate::SiteHost {
                    host: "h-a".into(),
                    address: Some("10.0.0.1:7443".into()),
                    founder: false,
                },
                crate::SiteHost {
                    host: "h-b".into(),
                    address: None,
                    founder: false,
                }
            ]
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(PeerMessage::decode(b"").is_err());
        assert!(PeerMessage::decode(b"\xff\xfe").is_err());
        assert!(PeerMessage::decode(br#"{"kind":"heartbeat"}"#).is_err());
        assert!(PeerMessage::decode(&vec![b' '; MAX_FRAME_BYTES]).is_err());
    }
}
