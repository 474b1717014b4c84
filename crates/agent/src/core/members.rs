//! Who belongs to this host's site cluster, as the manifest last kept lists them: whom the
//! host-to-host channel accepts, whom it dials, and whether there is anyone to meet at all.
//!
//! The control plane's list is the only authority on membership: a certificate the CA signed
//! proves who a peer is, never that it still belongs (a host detached keeps its certificate
//! until it expires), so a peer is accepted only when its certificate names this site and a
//! host the list has. The list lives in the kept manifest, so a host restarted with the
//! control plane unreachable meets the same peers. `--peer` addresses add places to dial (for a
//! peer whose listed address is missing or stale), never members: whoever answers there is
//! judged by the list like anyone else. A site of one host (no list) opens no port.

use std::collections::{BTreeMap, BTreeSet};

use atoll_api::SiteHost;

/// The members of one site cluster, from this host's side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members {
    pub site: String,
    /// This host's id.
    pub me: String,
    /// Every member (this host too), with the site address it reported.
    pub hosts: BTreeMap<String, Option<String>>,
    /// The member that forms the site's log, when its own is empty (`SiteHost::founder`).
    pub founder: Option<String>,
}

/// Why a peer is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its certificate names no atoll host")]
    NoIdentity,
    #[error("host {host} belongs to site {site}, not this one")]
    OtherSite { site: String, host: String },
    #[error("host {0} is not a current host of this site")]
    NotMember(String),
    #[error("it is this host itself")]
    Myself,
}

impl Members {
    /// The members `listed` in the manifest of `site`, seen by host `me`.
    pub fn new(site: &str, me: &str, listed: &[SiteHost]) -> Members {
        Members {
            site: site.to_owned(),
            me: me.to_owned(),
            hosts: listed
                .iter()
                .map(|m| (m.host.clone(), m.address.clone()))
                .collect(),
            founder: listed.iter().find(|m| m.founder).map(|m| m.host.clone()),
        }
    }

    /// Whether this host is the one to form the site's log when its own is empty and no other
    /// host's is: the control plane names it. A founder that is down leaves the site unformed
    /// until it returns (each host meanwhile runs what it decides alone, as a lone host does).
    pub fn founds(&self) -> bool {
        self.clustered() && self.founder.as_deref() == Some(self.me.as_str())
    }

    /// Whether there is a cluster to be part of: two or more members, this host one of them.
    /// Only then does the agent listen on its site address.
    pub fn clustered(&self) -> bool {
        self.hosts.len() >= 2 && self.hosts.contains_key(&self.me)
    }

    /// The host a peer is, given the site and host its certificate names (`None` when it names
    /// none), if it is let in: another current member of this site.
    pub fn admit(&self, named: Option<(&str, &str)>) -> Result<String, Refusal> {
        let (site, host) = named.ok_or(Refusal::NoIdentity)?;
        if site != self.site {
            return Err(Refusal::OtherSite {
                site: site.to_owned(),
                host: host.to_owned(),
            });
        }
        if host == self.me {
            return Err(Refusal::Myself);
        }
        if !self.clustered() || !self.hosts.contains_key(host) {
            return Err(Refusal::NotMember(host.to_owned()));
        }
        Ok(host.to_owned())
    }

    /// The addresses to dial: every other member's listed address and the `extra` ones
    /// (`--peer`), but this host's own; none unless [`Members::clustered`].
    pub fn dial(&self, extra: &[String]) -> BTreeSet<String> {
        if !self.clustered() {
            return BTreeSet::new();
        }
        let own = self.hosts.get(&self.me).cloned().flatten();
        self.hosts
            .iter()
            .filter(|(host, _)| **host != self.me)
            .filter_map(|(_, address)| address.clone())
            .chain(extra.iter().cloned())
            .filter(|a| Some(a) != own.as_ref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(hosts: &[(&str, Option<&str>)]) -> Vec<SiteHost> {
        hosts
            .iter()
            .map(|(h, a)| SiteHost {
                host: (*h).to_owned(),
                address: a.map(str::to_owned),
                founder: *h == "h-b",
            })
            .collect()
    }

    fn three() -> Members {
        Members::new(
            "s1",
            "h-a",
            &listed(&[
                ("h-a", Some("10.0.0.1:7443")),
                ("h-b", Some("10.0.0.2:7443")),
                ("h-c", None),
            ]),
        )
    }

    #[test]
    fn only_another_current_host_of_this_site_is_let_in() {
        let m = three();
        assert_eq!(m.admit(Some(("s1", "h-b"))), Ok("h-b".to_owned()));
        assert_eq!(
            m.admit(Some(("s1", "h-c"))),
            Ok("h-c".to_owned()),
            "a member with no address may still dial in"
        );
        assert_eq!(
            m.admit(Some(("s2", "h-b"))),
            Err(Refusal::OtherSite {
                site: "s2".into(),
                host: "h-b".into()
            }),
            "a host of another site, even one of the same id"
        );
        assert_eq!(
            m.admit(Some(("s1", "h-gone"))),
            Err(Refusal::NotMember("h-gone".into())),
            "a detached host keeps a valid certificate but leaves the list"
        );
        assert_eq!(m.admit(Some(("s1", "h-a"))), Err(Refusal::Myself));
        assert_eq!(m.admit(None), Err(Refusal::NoIdentity));
    }

    #[test]
    fn a_site_of_one_host_or_a_list_without_this_host_is_no_cluster() {
        let alone = Members::new("s1", "h-a", &[]);
        assert!(!alone.clustered());
        assert!(alone.dial(&["10.0.0.9:7443".into()]).is_empty());
        assert_eq!(
            alone.admit(Some(("s1", "h-b"))),
            Err(Refusal::NotMember("h-b".into()))
        );
        let without_me = Members::new(
            "s1",
            "h-a",
            &listed(&[("h-b", Some("10.0.0.2:7443")), ("h-c", None)]),
        );
        assert!(!without_me.clustered(), "this host was detached");
        assert_eq!(
            without_me.admit(Some(("s1", "h-b"))),
            Err(Refusal::NotMember("h-b".into()))
        );
        assert!(three().clustered());
    }

    #[test]
    fn only_the_listed_founder_forms_the_log() {
        assert!(!three().founds(), "h-a is not the founder");
        let b = Members {
            me: "h-b".into(),
            ..three()
        };
        assert!(b.founds());
        let alone = Members::new("s1", "h-b", &[]);
        assert!(!alone.founds(), "a host alone forms nothing");
    }

    #[test]
    fn the_listed_addresses_and_the_configured_peers_are_dialled_but_never_its_own() {
        let dial = three().dial(&["10.0.0.9:7443".into(), "10.0.0.1:7443".into()]);
        assert_eq!(
            dial.into_iter().collect::<Vec<_>>(),
            ["10.0.0.2:7443", "10.0.0.9:7443"]
        );
    }
}
