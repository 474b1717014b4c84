//! The control plane's side of the agent protocol, `Agents`: join tokens, enrollment and
//! certificate renewal here; the manifest long-poll in `shell::manifests`, reports and
//! inventories in `shell::reports`, host records in `shell::hosts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::agent::{
    CreateTokenRequest, CreateTokenResponse, EnrollRequest, EnrollResponse, HostStatus, JoinToken,
    RenewRequest, RenewResponse,
};
use atoll_spec::Kind;
use atoll_store::{Enrolled, HostRow, HostState, JoinTokenRow, Store, StoreError, TokenRefusal};
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::clock::now_rfc3339;
use super::fleet::Fleet;
use super::hostbook::{Member, canonical_serial};
use super::hosts::detached;
use super::service::{ControlPlane, Error};
use super::tls::{AgentIdentity, Pki};
use crate::core::events::Retention;

/// How long an agent certificate is valid. Agents renew when a third of it is left, so a site
/// may be offline for weeks and still reconnect with the certificate it has.
pub const AGENT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_TOKEN_TTL: u64 = 24 * 3600;
/// The longest a join token may live: a year.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// How many ids an enrollment draws before it gives up (a broken generator, never chance).
const HOST_ID_ATTEMPTS: usize = 5;
/// How long the certificate a renewal replaced is still accepted: requests in flight, and an
/// agent that renewed and restarted before it saved the new one.
pub const RENEWAL_OVERLAP: Duration = Duration::from_secs(10 * 60);

pub use super::manifests::{MAX_WAIT, Poll};

#[derive(Clone)]
pub struct Agents {
    pub(super) store: Arc<dyn Store>,
    /// Seals each site's secrets for its hosts.
    pub(super) control: ControlPlane,
    pub(super) fleet: Arc<Fleet>,
    pub(super) pki: Arc<Pki>,
    /// Told of every stored report, so running rollouts look at it at once.
    pub(super) reported: Arc<tokio::sync::Notify>,
    /// Draws a new host's id; a seam so a test can force two enrollments onto one id.
    pub(super) new_host_id: fn(&str) -> String,
    /// How many of each site's events are kept, applied as reports arrive.
    pub(super) retention: Retention,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents").finish_non_exhaustive()
    }
}

impl Agents {
    pub fn new(
        store: Arc<dyn Store>,
        control: ControlPlane,
        fleet: Arc<Fleet>,
        pki: Arc<Pki>,
    ) -> Agents {
        Agents {
            store,
            control,
            fleet,
            pki,
            reported: Arc::new(tokio::sync::Notify::new()),
            new_host_id: host_id,
            retention: Retention::default(),
        }
    }

    /// [`Agents::new`] keeping each site's events as `retention` says.
    pub fn with_retention(mut self, retention: Retention) -> Agents {
        self.retention = retention;
        self
    }

    /// [`Agents::new`] drawing host ids with `new_host_id` (tests force collisions with it).
    #[cfg(test)]
    fn with_host_ids(mut self, new_host_id: fn(&str) -> String) -> Agents {
        self.new_host_id = new_host_id;
        self
    }

    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
        actor: &str,
    ) -> Result<CreateTokenResponse, Error> {
        if self
            .store
            .resource(Kind::Site.as_str(), &req.site)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "site {} does not exist; apply it first",
                req.site
            )));
        }
        let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl == 0 || ttl > MAX_TOKEN_TTL_SECONDS {
            return Err(invalid(
                "ttl",
                "a join token lives between one second and one year",
            ));
        }
        let uses = req.uses.unwrap_or(1);
        if uses == 0 {
            return Err(invalid("uses", "a join token needs at least one use"));
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let token = JoinToken {
            secret,
            ca_fingerprint: self.pki.ca_fingerprint.clone(),
        };
        let expires_at = rfc3339(
            OffsetDateTime::now_utc()
                + time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX)),
        );
        let id = hex::encode(&Sha256::digest(token.secret.as_bytes())[..6]);
        let now = now_rfc3339();
        self.store
            .create_join_token(JoinTokenRow {
                id: id.clone(),
                hash: secret_hash(&token.secret),
                site: req.site.clone(),
                uses_left: uses,
                expires_at: expires_at.clone(),
                created_at: now.clone(),
            })
            .await?;
        self.store
            .append_audit(
                &now,
                actor,
                "token",
                &format!(
                    "join token {id} for site {} ({uses} uses, until {expires_at})",
                    req.site
                ),
            )
            .await?;
        Ok(CreateTokenResponse {
            token: token.to_string(),
            site: req.site.clone(),
            expires_at,
            uses,
        })
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, Error> {
        let token = JoinToken::parse(&req.token).map_err(Error::Unauthorized)?;
        if token.ca_fingerprint != self.pki.ca_fingerprint {
            return Err(Error::Unauthorized(
                "this join token was made by another control plane (its CA fingerprint differs); create one here".into(),
            ));
        }
        let now = now_rfc3339();
        let row = match self
            .store
            .use_join_token(&secret_hash(&token.secret), &now)
            .await?
        {
            Ok(row) => row,
            Err(TokenRefusal::Unknown) => {
                return Err(Error::Unauthorized(
                    "unknown join token; create one with `atoll token create`".into(),
                ));
            }
            Err(TokenRefusal::Expired) => {
                return Err(Error::Unauthorized(
                    "this join token has expired; create a new one".into(),
                ));
            }
            Err(TokenRefusal::UsedUp) => {
                return Err(Error::Unauthorized("this join token has been used up; create a new one (`--uses N` for several hosts)".into()));
            }
        };
        if self
            .store
            .resource(Kind::Site.as_str(), &row.site)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "site {} no longer exists",
                row.site
            )));
        }
        if let Some(r) = &req.recipient {
            atoll_seal::parse_recipient(r).map_err(|e| invalid("recipient", &e.to_string()))?;
        }
        let inventory = serde_json::to_string(&req.inventory).unwrap_or_default();
        let not_after = OffsetDateTime::now_utc() + AGENT_CERT_LIFETIME;
        // The id is drawn again if it is taken (with 128 random bits, never in practice): the
        // store's insert refuses an existing id, so no enrollment replaces another host.
        let mut attempts = 0;
        let (identity, issued) = loop {
            attempts += 1;
            let mut identity = AgentIdentity {
                site: row.site.clone(),
                host: (self.new_host_id)(&req.inventory.hostname),
                serial: String::new(),
            };
            let issued = self
                .pki
                .issue_agent_certificate(&req.csr_pem, &identity, not_after)
                .map_err(|e| {
                    invalid(
                        "csr_pem",
                        &format!("the certificate request cannot be signed: {e}"),
                    )
                })?;
            let enrolled = self
                .store
                .enroll_host(
                    HostRow {
                        id: identity.host.clone(),
                        site: identity.site.clone(),
                        hostname: req.inventory.hostname.clone(),
                        inventory: inventory.clone(),
                        cert_serial: issued.serial.clone(),
                        cert_expiry: rfc3339(not_after),
                        enrolled_at: now.clone(),
                        last_seen: Some(now.clone()),
                        recipient: req.recipient.clone(),
                        ..HostRow::default()
                    },
                    &row.id,
                )
                .await?;
            match enrolled {
                Enrolled::Yes => {
                    identity.serial.clone_from(&issued.serial);
                    break (identity, issued);
                }
                Enrolled::SiteDeleted => {
                    return Err(Error::NotFound(format!(
                        "site {} was deleted while this host enrolled",
                        row.site
                    )));
                }
                Enrolled::IdTaken => {}
            }
            tracing::warn!(host = %identity.host, "a new host id was taken already; drawing another");
            if attempts >= HOST_ID_ATTEMPTS {
                return Err(Error::Store(StoreError::Backend(format!(
                    "{HOST_ID_ATTEMPTS} host ids drawn for {} were all taken; the id generator is broken",
                    req.inventory.hostname
                ))));
            }
        };
        self.store
            .append_audit(
                &now,
                &format!("join token {}", row.id),
                "enroll",
                &format!("host {} joined site {}", identity.host, identity.site),
            )
            .await?;
        self.fleet.hosts().follow(self.store.as_ref()).await?;
        self.fleet.seen(&identity.host, &identity.site);
        // With this host the site has two or more, its next manifest lists it among its members
        // (and a template reading the site's hosts sees it). The host is enrolled either way: a
        // template failing for it is said, not a refusal. A site's first host changes no
        // manifest's members, and recompiling for it would read the whole store once per
        // enrollment.
        let membership = self.fleet.hosts().attached_in(&identity.site) >= 2;
        if let Err(e) = self.control.hosts_changed(&identity.site, membership).await {
            let error = match &e {
                Error::Invalid(d) => d
                    .iter()
                    .map(|d| d.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            tracing::warn!(site = %identity.site, %error, "the site's manifest does not follow its new host");
        }
        Ok(EnrollResponse {
            site: identity.site,
            host: identity.host,
            certificate_pem: issued.pem,
            certificate_expires_at: rfc3339(not_after),
            ca_pem: self.pki.ca_pem.clone(),
            signing_key: self.control.signer().public_key(),
        })
    }

    /// Checks that a client certificate's identity may act for `site` (and `host`, if given):
    /// the certificate names them and the host is still enrolled there.
    pub async fn authorize(
        &self,
        identity: &AgentIdentity,
        site: &str,
        host: Option<&str>,
    ) -> Result<(), Error> {
        if identity.site != site || host.is_some_and(|h| h != identity.host) {
            return Err(Error::Forbidden(format!(
                "this client certificate is for host {} of site {}, not for {}",
                identity.host,
                identity.site,
                host.map_or_else(
                    || format!("site {site}"),
                    |h| format!("host {h} of site {site}")
                )
            )));
        }
        self.admit(identity).await?;
        self.fleet.seen(&identity.host, &identity.site);
        Ok(())
    }

    /// Whether the host book lets the certificate of `identity` act for its host now
    /// ([`admitted`]); the store is read only for a host the book has not seen.
    pub(super) async fn admit(&self, identity: &AgentIdentity) -> Result<(), Error> {
        let member = self
            .fleet
            .hosts()
            .find(self.store.as_ref(), &identity.host)
            .await?;
        admitted(identity, member.as_ref(), &now_rfc3339())
    }

    /// Issues the host a new certificate for the key in the request. Only the host's current
    /// certificate renews (the one it replaces is still accepted for [`RENEWAL_OVERLAP`], for
    /// requests in flight, never after), so a stolen certificate stops working once the host
    /// renews, and cannot renew for ever. A sealing key sent by a host that has none is
    /// registered; a different one from a host that has one waits for an operator's approval
    /// (`atoll host approve-key`), so the holder of a stolen certificate cannot have the
    /// host's secrets sealed to itself. Each is audited.
    pub async fn renew(
        &self,
        identity: &AgentIdentity,
        req: &RenewRequest,
    ) -> Result<RenewResponse, Error> {
        let csr_pem = &req.csr_pem;
        if let Some(r) = &req.recipient {
            atoll_seal::parse_recipient(r).map_err(|e| invalid("recipient", &e.to_string()))?;
        }
        let mut host =
            self.store.host(&identity.host).await?.ok_or_else(|| {
                Error::Forbidden(format!("host {} is not enrolled", identity.host))
            })?;
        let replacing = host.cert_serial.clone();
        if canonical_serial(&replacing) != identity.serial {
            return Err(Error::Forbidden(format!(
                "host {}: only its current certificate renews, and this one (serial {}) was replaced",
                identity.host, identity.serial
            )));
        }
        let now = OffsetDateTime::now_utc();
        let not_after = now + AGENT_CERT_LIFETIME;
        let issued = self
            .pki
            .issue_agent_certificate(csr_pem, identity, not_after)
            .map_err(|e| {
                invalid(
                    "csr_pem",
                    &format!("the certificate request cannot be signed: {e}"),
                )
            })?;
        let mut audit = vec![format!(
            "host {} of site {} renewed its certificate: serial {} replaced by {}, accepted until {}",
            identity.host,
            identity.site,
            identity.serial,
            issued.serial,
            rfc3339(now + RENEWAL_OVERLAP)
        )];
        host.previous_serial = Some(replacing.clone());
        host.previous_until = Some(rfc3339(now + RENEWAL_OVERLAP));
        host.cert_serial.clone_from(&issued.serial);
        host.cert_expiry = rfc3339(not_after);
        let mut key_pending = false;
        match (&host.recipient, &req.recipient) {
            (_, None) => {}
            (Some(current), Some(sent)) if current == sent => {}
            (None, Some(sent)) => {
                host.recipient = Some(sent.clone());
                audit.push(format!("host {} registered its sealing key", identity.host));
            }
            (Some(_), Some(sent)) => {
                key_pending = true;
                host.pending_recipient = Some(sent.clone());
                audit.push(format!(
                    "host {} sent a new sealing key; secrets stay sealed to its old one until an operator approves the new one with `atoll host approve-key {}`",
                    identity.host, identity.host
                ));
                tracing::warn!(host = %identity.host, "a renewal sent a new sealing key; it waits for an operator's approval");
            }
        }
        self.replace_host(identity, host, &replacing).await?;
        let at = now_rfc3339();
        for detail in audit {
            self.store
                .append_audit(&at, &format!("host {}", identity.host), "renew", &detail)
                .await?;
        }
        Ok(RenewResponse {
            certificate_pem: issued.pem,
            certificate_expires_at: rfc3339(not_after),
            sealing_key_pending: key_pending,
        })
    }

    /// The newest status of every host that reported.
    pub async fn statuses(&self) -> Result<BTreeMap<String, HostStatus>, Error> {
        Ok(super::reports::statuses(self.store.as_ref()).await?)
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Notified whenever a report is stored.
    pub fn reported(&self) -> Arc<tokio::sync::Notify> {
        self.reported.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Whether the host book's `member` lets the certificate of `identity` act for its host and
/// site at `now` (RFC 3339): the host is attached there, and this is its current certificate,
/// or the one its last renewal replaced, within the overlap.
pub(super) fn admitted(
    identity: &AgentIdentity,
    member: Option<&Member>,
    now: &str,
) -> Result<(), Error> {
    let Some(m) = member.filter(|m| m.site == identity.site) else {
        return Err(Error::Forbidden(format!(
            "host {} is not enrolled in site {}; enroll it again",
            identity.host, identity.site
        )));
    };
    if m.state != HostState::Attached {
        return Err(detached(identity));
    }
    let replaced_in_overlap = m
        .previous
        .as_ref()
        .is_some_and(|(serial, until)| *serial == identity.serial && now < until.as_str());
    if m.serial == identity.serial || replaced_in_overlap {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "this certificate of host {} (serial {}) was replaced by a renewal; only the host's current certificate is accepted",
        identity.host, identity.serial
    )))
}

fn invalid(field: &str, message: &str) -> Error {
    Error::Invalid(vec![atoll_spec::Diagnostic {
        file: String::new(),
        line: 0,
        column: 0,
        path: field.to_owned(),
        message: message.to_owned(),
        hint: None,
    }])
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A host id: its hostname made DNS-safe (at most 30 characters), and 128 random bits in hex,
/// so ten thousand hosts from one cloned image (all `raspberrypi`) still never share an id
/// (the odds of one collision are below 1 in 10^29), and the whole stays a DNS label (at most
/// 63 characters).
fn host_id(hostname: &str) -> String {
    let mut base: String = hostname
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(30)
        .collect();
    base = base.trim_end_matches('-').to_owned();
    if base.is_empty() {
        base = "host".into();
    }
    let mut suffix = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    format!("{base}-{}", hex::encode(suffix))
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use atoll_api::agent::Inventory;
    use atoll_api::host::InventoryReport;

    use super::*;

    /// A control plane's agents over a store in `dir`, with site `s1` applied.
    async fn agents_with_site(dir: &std::path::Path) -> Agents {
        let store: Arc<dyn Store> =
            Arc::new(atoll_store::SqliteStore::open(&dir.join("atoll.db")).unwrap());
        let fleet = Arc::new(Fleet::default());
        let pki = Arc::new(Pki::load_or_create(dir, &[]).unwrap());
        let signer = Arc::new(super::super::signing::ManifestSigner::load_or_create(dir).unwrap());
        let vault = Arc::new(super::super::vault::Vault::from_key([5; 32]));
        let control = ControlPlane::new(store.clone(), fleet.clone(), vault, signer);
        let site = atoll_spec::Source {
            name: "s.yaml".into(),
            text: "kind: Site\nname: s1\n".into(),
        };
        control.apply(&[site], false, "t").await.unwrap();
        Agents::new(store, control, fleet, pki)
    }

    async fn enroll_one(agents: &Agents, hostname: &str) -> EnrollResponse {
        let token = agents
            .create_token(
                &CreateTokenRequest {
                    site: "s1".into(),
                    ttl_seconds: None,
                    uses: None,
                },
                "t",
            )
            .await
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        agents
            .enroll(&EnrollRequest {
                token: token.token,
                csr_pem: csr,
                inventory: Inventory {
                    hostname: hostname.into(),
                    ..Inventory::default()
                },
                recipient: None,
            })
            .await
            .unwrap()
    }

    /// Issue 12, item 19: two enrollments that drew one id made one host, the second taking
    /// over the first one's record. Now the second draws again and the first is untouched.
    #[tokio::test]
    async fn host_ids_collide_the_second_enrollment_draws_another_id() {
        static DRAWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // The first two draws give one id, as two cloned images with bad luck would.
        fn colliding(_: &str) -> String {
            match DRAWN.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 | 1 => "raspberrypi-1".into(),
                n => format!("raspberrypi-{n}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let agents = agents_with_site(dir.path()).await.with_host_ids(colliding);
        let first = enroll_one(&agents, "raspberrypi").await;
        let before = agents.store.host(&first.host).await.unwrap().unwrap();
        let second = enroll_one(&agents, "raspberrypi").await;
        assert_eq!(first.host, "raspberrypi-1");
        assert_eq!(second.host, "raspberrypi-2");
        assert_eq!(agents.store.host(&first.host).await.unwrap(), Some(before));
        assert_eq!(agents.store.site_hosts("s1").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_inventory_is_stored_and_its_changes_are_the_sites_events() {
        let dir = tempfile::tempdir().unwrap();
        let agents = agents_with_site(dir.path()).await;
        let enrolled = enroll_one(&agents, "h").await;
        let identity = AgentIdentity {
            site: enrolled.site.clone(),
            host: enrolled.host.clone(),
            serial: String::new(),
        };
        let camera = atoll_api::host::Device {
            path: "/dev/video1".into(),
            subsystem: "video4linux".into(),
            name: "HD Pro Webcam C920".into(),
            ..atoll_api::host::Device::default()
        };
        let mut inventory = Inventory {
            hostname: "h".into(),
            devices: vec![camera],
            ..Inventory::default()
        };
        let report = InventoryReport {
            inventory: inventory.clone(),
        };
        let stored = agents
            .put_inventory(&identity, report.clone())
            .await
            .unwrap();
        assert_eq!(stored, report);
        // The same inventory again (an answer lost) makes no second event.
        agents.put_inventory(&identity, report).await.unwrap();
        let events: Vec<(String, u64, String)> = agents
            .control
            .events("s1", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.seq, e.message))
            .collect();
        assert_eq!(
            events,
            [(
                "inventory".to_owned(),
                0,
                format!(
                    "host {}: device /dev/video1 (video4linux, HD Pro Webcam C920) appeared",
                    enrolled.host
                )
            )]
        );
        let hosts = agents.hosts().await.unwrap();
        assert_eq!(hosts[0].inventory.devices[0].path, "/dev/video1");

        inventory.devices = vec![atoll_api::host::Device::default(); 257];
        let refused = agents
            .put_inventory(&identity, InventoryReport { inventory })
            .await;
        let Err(Error::Invalid(problems)) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(problems[0].path, "inventory.devices");
        assert_eq!(agents.hosts().await.unwrap()[0].inventory.devices.len(), 1);
    }

    #[test]
    fn host_ids_carry_128_random_bits() {
        let id = host_id("raspberrypi");
        let suffix = id.strip_prefix("raspberrypi-").unwrap();
        assert_eq!(suffix.len(), 32, "{id}");
        assert_ne!(host_id("raspberrypi"), id);
    }

    #[test]
    fn host_ids_are_dns_labels() {
        for name in [
            "store-0042.acme.local",
            "POS_Till 1",
            "",
            "---",
            &"x".repeat(100),
        ] {
            let id = host_id(name);
            assert!(
                atoll_spec::names::check_name(&id).is_ok(),
                "{name:?} -> {id}"
            );
        }
        assert!(host_id("till1").starts_with("till1-"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
