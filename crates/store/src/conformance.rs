//! The behaviour every [`Store`] backend must have, written against the trait only.
//!
//! A backend runs the whole suite with `conformance_suite!(factory)`, where `factory` makes a
//! fresh, empty store from a scratch folder, or `conformance_suite!(async factory)` when the
//! factory returns a future of the store (a backend that connects to a server).

use crate::{
    AppVersionRow, Enrolled, EventCounts, EventRetention, HostRow, HostState, InventoryChange,
    JoinTokenRow, ManifestHead, ManifestRow, PresenceRow, PresenceSeen, ReportBatch, ResourceRow,
    RolloutRow, SecretHead, SecretRow, Store, StoreError, TokenRefusal, TokenRow, Write,
};
use std::time::Duration;

#[macro_export]
macro_rules! conformance_suite {
    (async $factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            empty_store_starts_at_version_zero,
            commit_bumps_the_version_and_is_visible,
            stale_batches_are_refused_whole,
            resources_update_in_place_and_delete,
            app_versions_are_immutable,
            manifest_revisions_only_grow,
            manifests_are_read_by_site_in_one_read,
            a_commit_of_thousands_of_manifests_stores_each_in_the_order_written,
            every_manifest_write_takes_the_next_manifest_change_number,
            snapshot_is_consistent,
            tokens_are_found_by_hash,
            audit_is_newest_first,
            a_failed_batch_changes_nothing,
            join_tokens_are_used_up_and_expire,
            hosts_are_kept_and_listed,
            host_labels_change_only_from_what_was_read_and_only_for_attached_hosts,
            host_ids_collide_an_enrollment_never_replaces_another_host,
            a_deleted_sites_hosts_are_detached_and_its_tokens_and_events_forgotten,
            every_change_of_a_host_takes_the_next_host_change_number,
            reports_are_stored_once_and_acknowledged,
            an_inventory_replaces_the_hosts_and_its_events_join_the_sites,
            concurrent_reports_and_enrollments_are_each_answered_exactly,
            an_event_dated_2099_does_not_sort_as_newest,
            events_beyond_the_retention_are_pruned,
            events_older_than_the_retention_are_pruned,
            rollouts_are_kept_with_the_snapshot_and_archived,
            secrets_and_settings_are_kept_with_their_bytes,
            a_lease_is_refused_while_held_and_taken_over_after_expiry_with_the_next_fence,
            a_renewal_by_the_holder_keeps_the_fence,
            a_commit_with_a_stale_fence_is_refused_whole,
            presence_is_kept_per_replica_on_the_stores_clock_and_followed_by_change_number,
            a_replica_silent_too_long_is_forgotten_with_its_presence,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let dir = tempfile::tempdir().unwrap();
                let store = ($factory)(dir.path()).await;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
    ($factory:expr) => {
        $crate::conformance_suite!(async |dir: &::std::path::Path| {
            let store = ($factory)(dir);
            async move { store }
        });
    };
}

pub fn site_row(name: &str, generation: u64) -> Write {
    Write::PutResource(ResourceRow {
        kind: "Site".into(),
        name: name.into(),
        generation,
        spec: format!(r#"{{"kind":"Site","name":"{name}","generation":{generation}}}"#),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: format!("2026-01-01T00:00:{generation:02}Z"),
    })
}

fn manifest(site: &str, revision: u64) -> Write {
    Write::PutManifest(ManifestRow {
        site: site.into(),
        revision,
        hash: format!("hash-{revision}"),
        body: format!(r#"{{"revision":{revision}}}"#),
        updated_at: "2026-01-01T00:00:00Z".into(),
    })
}

fn version(name: &str, version: &str, spec: &str) -> Write {
    Write::PutAppVersion(AppVersionRow {
        name: name.into(),
        version: version.into(),
        spec: spec.into(),
        applied_at: "2026-01-01T00:00:00Z".into(),
    })
}

pub async fn empty_store_starts_at_version_zero(store: &dyn Store) {
    assert_eq!(store.version().await.unwrap(), 0);
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.version, 0);
    assert!(snap.resources.is_empty() && snap.manifests.is_empty());
    assert!(store.resource("Site", "x").await.unwrap().is_none());
    assert!(store.manifest("x").await.unwrap().is_none());
}

pub async fn commit_bumps_the_version_and_is_visible(store: &dyn Store) {
    assert_eq!(store.commit(0, vec![site_row("a", 1)]).await.unwrap(), 1);
    assert_eq!(store.commit(1, vec![]).await.unwrap(), 2);
    let row = store.resource("Site", "a").await.unwrap().unwrap();
    assert_eq!(row.generation, 1);
    assert_eq!(store.version().await.unwrap(), 2);
}

pub async fn stale_batches_are_refused_whole(store: &dyn Store) {
    store.commit(0, vec![site_row("a", 1)]).await.unwrap();
    let err = store.commit(0, vec![site_row("b", 1)]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 0,
                actual: 1
            }
        ),
        "{err}"
    );
    assert!(store.resource("Site", "b").await.unwrap().is_none());
}

pub async fn resources_update_in_place_and_delete(store: &dyn Store) {
    store
        .commit(0, vec![site_row("b", 1), site_row("a", 1)])
        .await
        .unwrap();
    store.commit(1, vec![site_row("a", 2)]).await.unwrap();
    let a = store.resource("Site", "a").await.unwrap().unwrap();
    assert_eq!(a.generation, 2);
    assert_eq!(
        a.created_at, "2026-01-01T00:00:00Z",
        "created_at is kept on update"
    );
    assert_eq!(a.updated_at, "2026-01-01T00:00:02Z");
    let names: Vec<String> = store
        .resources("Site")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(store.resources("Deployment").await.unwrap().is_empty());
    store
        .commit(
            2,
            vec![Write::DeleteResource {
                kind: "Site".into(),
                name: "a".into(),
            }],
        )
        .await
        .unwrap();
    assert!(store.resource("Site", "a").await.unwrap().is_none());
}

pub async fn app_versions_are_immutable(store: &dyn Store) {
    store
        .commit(
            0,
            vec![
                version("pos", "1.0.0", "{}"),
                version("pos", "1.1.0", "{\"x\":1}"),
            ],
        )
        .await
        .unwrap();
    // The same content again is accepted and changes nothing.
    store
        .commit(1, vec![version("pos", "1.0.0", "{}")])
        .await
        .unwrap();
    let err = store
        .commit(2, vec![version("pos", "1.0.0", "{\"y\":2}")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let versions: Vec<String> = store
        .app_versions("pos")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
    assert_eq!(
        store
            .app_version("pos", "1.0.0")
            .await
            .unwrap()
            .unwrap()
            .spec,
        "{}"
    );
    assert!(store.app_version("pos", "9").await.unwrap().is_none());
    store
        .commit(2, vec![Write::DeleteAppVersions { name: "pos".into() }])
        .await
        .unwrap();
    assert!(store.app_versions("pos").await.unwrap().is_empty());
}

pub async fn manifests_are_read_by_site_in_one_read(store: &dyn Store) {
    store
        .commit(0, vec![manifest("a", 1), manifest("b", 1)])
        .await
        .unwrap();
    store.commit(1, vec![manifest("a", 2)]).await.unwrap();
    let mut rows = store
        .manifests_of(&["a".into(), "nowhere".into(), "b".into()])
        .await
        .unwrap();
    rows.sort_by(|x, y| x.site.cmp(&y.site));
    let heads: Vec<(&str, u64, &str)> = rows
        .iter()
        .map(|m| (m.site.as_str(), m.revision, m.body.as_str()))
        .collect();
    assert_eq!(
        heads,
        [("a", 2, r#"{"revision":2}"#), ("b", 1, r#"{"revision":1}"#)]
    );
    assert!(store.manifests_of(&[]).await.unwrap().is_empty());
}

pub async fn manifest_revisions_only_grow(store: &dyn Store) {
    store.commit(0, vec![manifest("s", 1)]).await.unwrap();
    store.commit(1, vec![manifest("s", 2)]).await.unwrap();
    assert!(store.commit(2, vec![manifest("s", 2)]).await.is_err());
    assert!(store.commit(2, vec![manifest("s", 1)]).await.is_err());
    let m = store.manifest("s").await.unwrap().unwrap();
    assert_eq!((m.revision, m.hash.as_str()), (2, "hash-2"));
}

/// A fleet-wide change: thousands of manifests in one commit, in pages, each taking the next
/// change number in the order written; a site written twice in one commit keeps the second;
/// a revision going back anywhere refuses the whole commit.
pub async fn a_commit_of_thousands_of_manifests_stores_each_in_the_order_written(
    store: &dyn Store,
) {
    let sites: Vec<String> = (0..2_500).map(|i| format!("s{:04}", 2_499 - i)).collect();
    let mut writes: Vec<Write> = sites.iter().map(|s| manifest(s, 1)).collect();
    writes.extend([manifest("twice", 1), manifest("twice", 2)]);
    store.commit(0, writes).await.unwrap();
    let changes = store.manifest_changes(0, 10_000).await.unwrap();
    let order: Vec<&str> = changes.iter().map(|(_, h)| h.site.as_str()).collect();
    let mut written: Vec<&str> = sites.iter().map(String::as_str).collect();
    written.push("twice");
    assert_eq!(order, written);
    assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(store.manifest("twice").await.unwrap().unwrap().revision, 2);

    let mut writes: Vec<Write> = sites.iter().map(|s| manifest(s, 2)).collect();
    writes[1_700] = manifest(&sites[1_700], 1);
    assert!(store.commit(1, writes).await.is_err());
    assert_eq!(
        store.manifest(&sites[0]).await.unwrap().unwrap().revision,
        1
    );
    assert_eq!(store.version().await.unwrap(), 1);
}

/// What another replica's fleet follows: every manifest written, in the order written, once
/// per site with its newest head, in pages; a refused batch takes no number.
pub async fn every_manifest_write_takes_the_next_manifest_change_number(store: &dyn Store) {
    let heads = |changes: Vec<(u64, ManifestHead)>| -> Vec<(String, u64)> {
        changes
            .into_iter()
            .map(|(_, h)| (h.site, h.revision))
            .collect()
    };
    assert_eq!(store.last_manifest_change().await.unwrap(), 0);
    assert!(store.manifest_changes(0, 100).await.unwrap().is_empty());

    store
        .commit(0, vec![manifest("a", 1), manifest("b", 1)])
        .await
        .unwrap();
    let first = store.manifest_changes(0, 100).await.unwrap();
    assert_eq!(heads(first.clone()), [("a".into(), 1), ("b".into(), 1)]);
    assert!(first[0].0 > 0 && first[0].0 < first[1].0, "{first:?}");
    let seen = store.last_manifest_change().await.unwrap();
    assert_eq!(seen, first[1].0);

    store.commit(1, vec![manifest("a", 2)]).await.unwrap();
    assert!(
        store
            .commit(2, vec![manifest("c", 1), manifest("b", 1)])
            .await
            .is_err()
    );
    let later = store.manifest_changes(seen, 100).await.unwrap();
    assert_eq!(heads(later.clone()), [("a".into(), 2)]);
    assert_eq!(later[0].1.hash, "hash-2");
    assert!(later[0].0 > seen);
    assert_eq!(store.last_manifest_change().await.unwrap(), later[0].0);
    assert_eq!(
        heads(store.manifest_changes(0, 100).await.unwrap()),
        [("b".into(), 1), ("a".into(), 2)],
        "a site appears once, where its newest write is"
    );

    let page = store.manifest_changes(0, 1).await.unwrap();
    assert_eq!(heads(page.clone()), [("b".into(), 1)]);
    assert_eq!(
        heads(store.manifest_changes(page[0].0, 1).await.unwrap()),
        [("a".into(), 2)],
        "the next page goes on after the last number read"
    );
    assert!(
        store
            .manifest_changes(later[0].0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn snapshot_is_consistent(store: &dyn Store) {
    store
        .commit(0, vec![site_row("a", 1), manifest("a", 1)])
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.version, 1);
    assert_eq!(snap.resources.len(), 1);
    assert_eq!(snap.manifests[0].revision, 1);
    assert_eq!(snap.manifests[0].hash, "hash-1");
}

pub async fn tokens_are_found_by_hash(store: &dyn Store) {
    let token = TokenRow {
        id: "t1".into(),
        name: "admin".into(),
        hash: "abc".into(),
        role: "admin".into(),
        created_at: "now".into(),
    };
    store
        .commit(0, vec![Write::PutToken(token.clone())])
        .await
        .unwrap();
    assert_eq!(store.token_by_hash("abc").await.unwrap(), Some(token));
    assert_eq!(store.token_by_hash("abd").await.unwrap(), None);
}

pub async fn audit_is_newest_first(store: &dyn Store) {
    for i in 0..3u64 {
        let entry = Write::Audit {
            at: format!("t{i}"),
            actor: "admin".into(),
            action: "apply".into(),
            detail: format!("{i}"),
        };
        store.commit(i, vec![entry]).await.unwrap();
    }
    let entries = store.audit(2).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e.detail.as_str())
            .collect::<Vec<_>>(),
        ["2", "1"]
    );
}

pub async fn a_failed_batch_changes_nothing(store: &dyn Store) {
    store.commit(0, vec![manifest("s", 5)]).await.unwrap();
    // The second write fails (revision goes back): the first must not be kept.
    assert!(
        store
            .commit(1, vec![site_row("x", 1), manifest("s", 3)])
            .await
            .is_err()
    );
    assert!(store.resource("Site", "x").await.unwrap().is_none());
    assert_eq!(store.version().await.unwrap(), 1);
}

fn join_token(id: &str, uses: u32, expires_at: &str) -> JoinTokenRow {
    JoinTokenRow {
        id: id.into(),
        hash: format!("hash-{id}"),
        site: "s".into(),
        uses_left: uses,
        expires_at: expires_at.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

pub async fn join_tokens_are_used_up_and_expire(store: &dyn Store) {
    let now = "2026-06-01T00:00:00Z";
    store
        .create_join_token(join_token("once", 1, "2027-01-01T00:00:00Z"))
        .await
        .unwrap();
    store
        .create_join_token(join_token("twice", 2, "2027-01-01T00:00:00Z"))
        .await
        .unwrap();
    store
        .create_join_token(join_token("old", 5, "2026-05-01T00:00:00Z"))
        .await
        .unwrap();
    let used = store
        .use_join_token("hash-once", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((used.site.as_str(), used.uses_left), ("s", 0));
    assert_eq!(
        store.use_join_token("hash-once", now).await.unwrap(),
        Err(TokenRefusal::UsedUp)
    );
    assert!(
        store
            .use_join_token("hash-twice", now)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(
        store
            .use_join_token("hash-twice", now)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(
        store.use_join_token("hash-twice", now).await.unwrap(),
        Err(TokenRefusal::UsedUp)
    );
    assert_eq!(
        store.use_join_token("hash-old", now).await.unwrap(),
        Err(TokenRefusal::Expired)
    );
    assert_eq!(
        store.use_join_token("hash-none", now).await.unwrap(),
        Err(TokenRefusal::Unknown)
    );
}

fn host(id: &str, site: &str) -> HostRow {
    HostRow {
        id: id.into(),
        site: site.into(),
        hostname: format!("{id}.local"),
        inventory: "{}".into(),
        cert_serial: "01".into(),
        cert_expiry: "2027-01-01T00:00:00Z".into(),
        enrolled_at: "2026-01-01T00:00:00Z".into(),
        last_seen: None,
        recipient: Some(format!("key-of-{id}")),
        ..HostRow::default()
    }
}

/// Enrolls `host` with a join token of its own site, made for it.
async fn enroll(store: &dyn Store, host: HostRow) -> Enrolled {
    let token = format!("for-{}-{}", host.id, host.site);
    store
        .create_join_token(JoinTokenRow {
            site: host.site.clone(),
            ..join_token(&token, 1, "2027-01-01T00:00:00Z")
        })
        .await
        .unwrap();
    store.enroll_host(host, &token).await.unwrap()
}

/// A stored host without what the store sets (its host-change number).
fn unnumbered(mut host: HostRow) -> HostRow {
    host.changed = 0;
    host
}

pub async fn hosts_are_kept_and_listed(store: &dyn Store) {
    assert_eq!(enroll(store, host("h2", "b")).await, Enrolled::Yes);
    assert_eq!(enroll(store, host("h1", "a")).await, Enrolled::Yes);
    let mut renewed = host("h1", "a");
    renewed.cert_serial = "02".into();
    renewed.previous_serial = Some("01".into());
    renewed.previous_until = Some("2026-01-01T00:10:00Z".into());
    renewed.pending_recipient = Some("new-key-of-h1".into());
    assert!(store.put_host(renewed.clone(), "01").await.unwrap());
    // A second renewal made with the replaced certificate stores nothing.
    let mut late = host("h1", "a");
    late.cert_serial = "03".into();
    assert!(!store.put_host(late, "01").await.unwrap());
    assert_eq!(
        store.host("h1").await.unwrap().map(unnumbered),
        Some(renewed)
    );
    assert_eq!(
        store
            .hosts()
            .await
            .unwrap()
            .iter()
            .map(|h| h.id.as_str())
            .collect::<Vec<_>>(),
        ["h1", "h2"]
    );
    assert!(store.host("nope").await.unwrap().is_none());
    enroll(store, host("h0", "b")).await;
    let b: Vec<String> = store
        .site_hosts("b")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(b, ["h0", "h2"]);
    assert!(store.site_hosts("c").await.unwrap().is_empty());
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub async fn host_labels_change_only_from_what_was_read_and_only_for_attached_hosts(
    store: &dyn Store,
) {
    let mut given = host("h1", "a");
    given.labels = labels(&[("size", "large")]);
    assert_eq!(enroll(store, given).await, Enrolled::Yes);
    let enrolled = store.host("h1").await.unwrap().unwrap();
    assert!(
        enrolled.labels.is_empty(),
        "an enrollment starts unlabelled"
    );
    let before = store.host_changes(0).await.unwrap();

    let medium = labels(&[("size", "medium"), ("zone", "till")]);
    assert!(
        store
            .set_host_labels("h1", &labels(&[]), &medium)
            .await
            .unwrap()
    );
    assert_eq!(store.host("h1").await.unwrap().unwrap().labels, medium);
    assert_eq!(
        store.hosts().await.unwrap()[0].labels,
        medium,
        "listed with its labels"
    );
    // A change made from an older reading stores nothing.
    assert!(
        !store
            .set_host_labels("h1", &labels(&[]), &labels(&[("size", "small")]))
            .await
            .unwrap()
    );
    assert_eq!(store.host("h1").await.unwrap().unwrap().labels, medium);
    assert_eq!(
        store.host_changes(0).await.unwrap(),
        before
            .into_iter()
            .map(|h| HostRow {
                labels: medium.clone(),
                ..h
            })
            .collect::<Vec<_>>(),
        "a label change is no change of membership or credentials"
    );
    // A renewal keeps the labels.
    let mut renewed = host("h1", "a");
    renewed.cert_serial = "02".into();
    assert!(store.put_host(renewed, "01").await.unwrap());
    assert_eq!(store.host("h1").await.unwrap().unwrap().labels, medium);
    // Unknown and detached hosts are not labelled.
    assert!(
        !store
            .set_host_labels("nope", &labels(&[]), &medium)
            .await
            .unwrap()
    );
    let base = store.version().await.unwrap();
    store
        .commit(
            base,
            vec![Write::RetireSite {
                site: "a".into(),
                at: "2026-01-02T00:00:00Z".into(),
            }],
        )
        .await
        .unwrap();
    assert!(
        !store
            .set_host_labels("h1", &medium, &labels(&[]))
            .await
            .unwrap()
    );
    assert_eq!(store.host("h1").await.unwrap().unwrap().labels, medium);
}

/// Issue 12, item 19: an enrollment that drew an id already taken wrote `INSERT OR REPLACE`
/// and took over the other host's site, certificate serial and sealing key.
pub async fn host_ids_collide_an_enrollment_never_replaces_another_host(store: &dyn Store) {
    let first = host("till-1", "a");
    assert_eq!(enroll(store, first.clone()).await, Enrolled::Yes);
    let mut clone = host("till-1", "b");
    clone.cert_serial = "ff".into();
    clone.recipient = Some("key-of-the-clone".into());
    assert_eq!(enroll(store, clone).await, Enrolled::IdTaken);
    assert_eq!(
        store.host("till-1").await.unwrap().map(unnumbered),
        Some(first)
    );
    assert!(store.site_hosts("b").await.unwrap().is_empty());
}

/// Issue 12, item 1: a deleted site's hosts kept fetching its manifest and posting reports, and
/// received the secrets of a site re-created under the same name. Detaching is for good, in the
/// commit that deletes the site, and it forgets the site's join tokens (so a host enrolling with
/// a token used just before the deletion is not stored either) and its events.
pub async fn a_deleted_sites_hosts_are_detached_and_its_tokens_and_events_forgotten(
    store: &dyn Store,
) {
    enroll(store, host("h1", "a")).await;
    enroll(store, host("h2", "a")).await;
    enroll(store, host("h3", "b")).await;
    let late = JoinTokenRow {
        site: "a".into(),
        ..join_token("late", 2, "2027-01-01T00:00:00Z")
    };
    store.create_join_token(late).await.unwrap();
    let now = "2026-06-01T00:00:00Z";
    assert!(
        store
            .use_join_token("hash-late", now)
            .await
            .unwrap()
            .is_ok()
    );
    for (host, site) in [("h1", "a"), ("h3", "b")] {
        store
            .record_report(host, site, now, vec![batch(1, 2, None)], &keep_all())
            .await
            .unwrap();
    }
    let before = store
        .hosts()
        .await
        .unwrap()
        .iter()
        .map(|h| h.changed)
        .max()
        .unwrap();

    let at = "2026-06-01T00:00:01Z";
    let writes = vec![Write::RetireSite {
        site: "a".into(),
        at: at.into(),
    }];
    store.commit(0, writes).await.unwrap();

    for id in ["h1", "h2"] {
        let h = store.host(id).await.unwrap().unwrap();
        assert_eq!(
            (h.state, h.detached_at.as_deref()),
            (HostState::Detached, Some(at)),
            "{id}"
        );
    }
    assert_eq!(
        store.host("h3").await.unwrap().unwrap().state,
        HostState::Attached
    );
    assert!(store.site_hosts("a").await.unwrap().is_empty());
    let members: Vec<String> = store
        .hosts()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(members, ["h3"], "a detached host is no site's member");
    assert_eq!(
        store.all_hosts().await.unwrap().len(),
        3,
        "detached hosts are still listed"
    );
    let changed: Vec<String> = store
        .host_changes(before)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(changed, ["h1", "h2"]);
    // A renewal racing the deletion does not bring a host back.
    assert!(!store.put_host(host("h1", "a"), "01").await.unwrap());
    assert_eq!(
        store.host("h1").await.unwrap().unwrap().state,
        HostState::Detached
    );
    // The token used before the deletion no longer enrolls, and no token of the site is left.
    assert_eq!(
        store.enroll_host(host("h4", "a"), "late").await.unwrap(),
        Enrolled::SiteDeleted
    );
    assert!(store.host("h4").await.unwrap().is_none());
    assert_eq!(
        store.use_join_token("hash-late", now).await.unwrap(),
        Err(TokenRefusal::Unknown)
    );
    // Its events went with it; another site's stayed.
    assert!(store.events("a", 10).await.unwrap().is_empty());
    assert_eq!(store.events("b", 10).await.unwrap().len(), 2);
    let counted: Vec<String> = store
        .event_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.site)
        .collect();
    assert_eq!(counted, ["b"]);
    // Detaching again changes nothing.
    let again = vec![Write::RetireSite {
        site: "a".into(),
        at: "2026-07-01T00:00:00Z".into(),
    }];
    store.commit(1, again).await.unwrap();
    assert!(store.host_changes(before + 1).await.unwrap().is_empty());
    assert_eq!(
        store
            .host("h1")
            .await
            .unwrap()
            .unwrap()
            .detached_at
            .as_deref(),
        Some(at)
    );
}

/// Caches of host state follow the store by host-change number: each enrollment and renewal
/// takes a number above every one before, and reading after a number gives exactly the later
/// changes.
pub async fn every_change_of_a_host_takes_the_next_host_change_number(store: &dyn Store) {
    assert!(store.host_changes(0).await.unwrap().is_empty());
    enroll(store, host("h1", "s")).await;
    enroll(store, host("h2", "s")).await;
    let first: Vec<(String, u64)> = store
        .host_changes(0)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.changed))
        .collect();
    assert_eq!(first.len(), 2);
    assert!(first[0].1 < first[1].1, "{first:?}");
    assert_eq!(first[0].0, "h1");
    let mut renewed = host("h1", "s");
    renewed.cert_serial = "02".into();
    assert!(store.put_host(renewed, "01").await.unwrap());
    let after: Vec<HostRow> = store.host_changes(first[1].1).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].id.as_str(), after[0].cert_serial.as_str()),
        ("h1", "02")
    );
    assert!(after[0].changed > first[1].1);
    assert!(
        store
            .host_changes(after[0].changed)
            .await
            .unwrap()
            .is_empty()
    );
    // Reports move last-seen, not the host-change number.
    store
        .record_report(
            "h2",
            "s",
            "2026-01-01T00:05:00Z",
            vec![batch(1, 1, None)],
            &keep_all(),
        )
        .await
        .unwrap();
    assert!(
        store
            .host_changes(after[0].changed)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A retention that removes nothing the tests store.
fn keep_all() -> EventRetention {
    EventRetention {
        keep: u64::MAX,
        received_after: "2000-01-01T00:00:00Z".into(),
    }
}

fn batch(seq: u64, events: usize, status: Option<&str>) -> ReportBatch {
    ReportBatch {
        seq,
        events: (0..events)
            .map(|i| {
                (
                    format!("2026-01-01T00:00:{seq:02}Z"),
                    "test".into(),
                    format!("{seq}.{i}"),
                )
            })
            .collect(),
        status: status.map(str::to_owned),
    }
}

pub async fn reports_are_stored_once_and_acknowledged(store: &dyn Store) {
    enroll(store, host("h1", "s")).await;
    let now = "2026-01-01T00:01:00Z";
    assert_eq!(
        store
            .record_report(
                "h1",
                "s",
                now,
                vec![batch(1, 2, Some("one")), batch(2, 1, None)],
                &keep_all(),
            )
            .await
            .unwrap()
            .acked,
        2
    );
    // Resending batches already stored (an ack lost on the way) stores nothing twice.
    assert_eq!(
        store
            .record_report(
                "h1",
                "s",
                now,
                vec![
                    batch(1, 2, Some("stale")),
                    batch(2, 1, None),
                    batch(3, 1, Some("three"))
                ],
                &keep_all(),
            )
            .await
            .unwrap()
            .acked,
        3
    );
    let events: Vec<String> = store
        .events("s", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(events, ["1.0", "1.1", "2.0", "3.0"]);
    let statuses = store.host_statuses().await.unwrap();
    assert_eq!((statuses[0].seq, statuses[0].status.as_str()), (3, "three"));
    assert_eq!(
        store
            .host("h1")
            .await
            .unwrap()
            .unwrap()
            .last_seen
            .as_deref(),
        Some(now)
    );
    // An empty report is a heartbeat: it acknowledges what is stored.
    assert_eq!(
        store
            .record_report("h1", "s", now, vec![], &keep_all())
            .await
            .unwrap()
            .acked,
        3
    );
    assert_eq!(store.events("s", 2).await.unwrap().len(), 2);
}

fn inventory_change(host: &str, inventory: &str, events: &[&str]) -> InventoryChange {
    InventoryChange {
        host: host.into(),
        hostname: format!("{host}.lan"),
        inventory: inventory.into(),
        now: "2026-01-01T00:02:00Z".into(),
        events: events
            .iter()
            .map(|m| ("inventory".to_owned(), (*m).to_owned()))
            .collect(),
        retention: keep_all(),
    }
}

pub async fn an_inventory_replaces_the_hosts_and_its_events_join_the_sites(store: &dyn Store) {
    enroll(store, host("h1", "s")).await;
    let before = store.host("h1").await.unwrap().unwrap();
    store
        .record_report(
            "h1",
            "s",
            "2026-01-01T00:01:00Z",
            vec![batch(1, 1, None)],
            &keep_all(),
        )
        .await
        .unwrap();
    assert!(
        store
            .put_inventory(inventory_change("h1", r#"{"cpus":4}"#, &["a", "b"]))
            .await
            .unwrap()
    );
    // Stored again with events of the same moment: they follow, colliding with nothing.
    assert!(
        store
            .put_inventory(inventory_change("h1", r#"{"cpus":8}"#, &["c"]))
            .await
            .unwrap()
    );
    let after = store.host("h1").await.unwrap().unwrap();
    assert_eq!(after.inventory, r#"{"cpus":8}"#);
    assert_eq!(after.hostname, "h1.lan");
    assert_eq!(after.last_seen.as_deref(), Some("2026-01-01T00:02:00Z"));
    assert_eq!(
        after.changed, before.changed,
        "an inventory is not a change of membership"
    );
    assert_eq!(after.cert_serial, before.cert_serial);
    let events: Vec<(u64, String, String)> = store
        .events("s", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.kind, e.message))
        .collect();
    assert_eq!(
        events,
        [
            (1, "test".into(), "1.0".into()),
            (0, "inventory".into(), "a".into()),
            (0, "inventory".into(), "b".into()),
            (0, "inventory".into(), "c".into()),
        ]
    );
    let counts = store.event_counts().await.unwrap();
    assert_eq!(counts[0].kept, 4);
    // The report that follows is stored as ever: sequence 0 is not a batch's.
    assert_eq!(
        store
            .record_report(
                "h1",
                "s",
                "2026-01-01T00:03:00Z",
                vec![batch(2, 1, None)],
                &keep_all()
            )
            .await
            .unwrap()
            .acked,
        2
    );
    assert!(
        !store
            .put_inventory(inventory_change("nope", "{}", &["x"]))
            .await
            .unwrap()
    );
    store
        .commit(
            store.version().await.unwrap(),
            vec![Write::RetireSite {
                site: "s".into(),
                at: "2026-01-01T00:04:00Z".into(),
            }],
        )
        .await
        .unwrap();
    assert!(
        !store
            .put_inventory(inventory_change("h1", "{}", &["x"]))
            .await
            .unwrap(),
        "a detached host's inventory is not stored"
    );
}

/// Many hosts at once (a fleet coming back): every report gets its own acknowledgement, and a
/// join token's uses are consumed exactly, however the backend batches the writes.
pub async fn concurrent_reports_and_enrollments_are_each_answered_exactly(store: &dyn Store) {
    let hosts = 40;
    for i in 0..hosts {
        enroll(store, host(&format!("h{i}"), "s")).await;
    }
    store
        .create_join_token(join_token("few", 5, "2027-01-01T00:00:00Z"))
        .await
        .unwrap();
    let now = "2026-01-01T00:01:00Z";
    let reports = (0..hosts).map(|i| {
        let batches = (1..=i % 4 + 1)
            .map(|seq| batch(seq, 1, Some(&format!("h{i}@{seq}"))))
            .collect();
        async move {
            (
                i,
                store
                    .record_report(&format!("h{i}"), "s", now, batches, &keep_all())
                    .await
                    .unwrap()
                    .acked,
            )
        }
    });
    let uses = (0..20).map(|_| async { store.use_join_token("hash-few", now).await.unwrap() });
    let (acks, uses) = tokio::join!(
        futures_util::future::join_all(reports),
        futures_util::future::join_all(uses)
    );
    for (i, acked) in acks {
        assert_eq!(acked, i % 4 + 1, "host h{i}");
    }
    assert_eq!(uses.iter().filter(|u| u.is_ok()).count(), 5);
    assert!(
        uses.iter()
            .filter_map(|u| u.as_ref().err())
            .all(|e| *e == TokenRefusal::UsedUp)
    );
    let statuses = store.host_statuses().await.unwrap();
    assert_eq!(statuses.len(), hosts as usize);
    for s in statuses {
        let i: u64 = s.host[1..].parse().unwrap();
        assert_eq!(s.status, format!("h{i}@{}", i % 4 + 1));
    }
    assert_eq!(store.events("s", 1000).await.unwrap().len(), 100);
}

/// Issue 12, item 13: events were ordered by the time their agent claimed, so an event dated
/// 2099 sorted as the newest for ever. They are ordered by the time received; the claim is kept.
pub async fn an_event_dated_2099_does_not_sort_as_newest(store: &dyn Store) {
    enroll(store, host("h1", "s")).await;
    let event = |at: &str, message: &str| ReportBatch {
        seq: 0,
        events: vec![(at.into(), "test".into(), message.into())],
        status: None,
    };
    let reports = [
        (
            "2026-01-01T00:00:01Z",
            event("2099-01-01T00:00:00Z", "from the future"),
        ),
        (
            "2026-01-01T00:00:02Z",
            event("2026-01-01T00:00:02Z", "second"),
        ),
        (
            "2026-01-01T00:00:03Z",
            event("1970-01-01T00:00:00Z", "third, from the past"),
        ),
    ];
    for (seq, (now, mut b)) in (1..).zip(reports) {
        b.seq = seq;
        store
            .record_report("h1", "s", now, vec![b], &keep_all())
            .await
            .unwrap();
    }
    let events = store.events("s", 100).await.unwrap();
    let shown: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.message.as_str(), e.at.as_str(), e.received_at.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "from the future",
                "2099-01-01T00:00:00Z",
                "2026-01-01T00:00:01Z"
            ),
            ("second", "2026-01-01T00:00:02Z", "2026-01-01T00:00:02Z"),
            (
                "third, from the past",
                "1970-01-01T00:00:00Z",
                "2026-01-01T00:00:03Z"
            ),
        ]
    );
    let newest = store.events("s", 1).await.unwrap();
    assert_eq!(newest[0].message, "third, from the past");
}

/// Issue 12, item 13: a site's events were kept without bound. Past the count kept, the oldest
/// received go, in the transaction of the report that brought the new ones, and are counted.
pub async fn events_beyond_the_retention_are_pruned(store: &dyn Store) {
    for h in ["h1", "h2"] {
        enroll(store, host(h, "s")).await;
    }
    enroll(store, host("other", "t")).await;
    let retention = EventRetention {
        keep: 5,
        received_after: "2000-01-01T00:00:00Z".into(),
    };
    let mut pruned = 0;
    for seq in 1..=4 {
        for h in ["h1", "h2"] {
            let now = format!("2026-01-01T00:00:{seq:02}Z");
            pruned += store
                .record_report(h, "s", &now, vec![batch(seq, 2, None)], &retention)
                .await
                .unwrap()
                .pruned;
        }
    }
    store
        .record_report(
            "other",
            "t",
            "2026-01-01T00:00:09Z",
            vec![batch(1, 3, None)],
            &retention,
        )
        .await
        .unwrap();
    assert_eq!(pruned, 16 - 5, "every event past the fifth is pruned");
    let kept: Vec<(String, String)> = store
        .events("s", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.host, e.message))
        .collect();
    let expected: Vec<(String, String)> = [("h1", "4.1"), ("h2", "4.0"), ("h2", "4.1")]
        .into_iter()
        .map(|(h, m)| (h.to_owned(), m.to_owned()))
        .collect();
    assert_eq!(kept.len(), 5, "{kept:?}");
    assert_eq!(kept[2..], expected[..], "the newest received are kept");
    assert_eq!(
        store.events("t", 100).await.unwrap().len(),
        3,
        "another site's are its own"
    );
    assert_eq!(
        store.event_counts().await.unwrap(),
        [
            EventCounts {
                site: "s".into(),
                kept: 5,
                pruned: 11
            },
            EventCounts {
                site: "t".into(),
                kept: 3,
                pruned: 0
            },
        ]
    );
}

/// Issue 12, item 13: events were kept for ever. Those received before the retention's cutoff
/// go as reports arrive, whatever time their agent claimed.
pub async fn events_older_than_the_retention_are_pruned(store: &dyn Store) {
    enroll(store, host("h1", "s")).await;
    let retention = |after: &str| EventRetention {
        keep: 1000,
        received_after: after.into(),
    };
    store
        .record_report(
            "h1",
            "s",
            "2026-01-01T00:00:00Z",
            vec![batch(1, 3, None)],
            &retention("2025-12-25T00:00:00Z"),
        )
        .await
        .unwrap();
    store
        .record_report(
            "h1",
            "s",
            "2026-01-05T00:00:00Z",
            vec![batch(2, 1, None)],
            &retention("2025-12-29T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.events("s", 100).await.unwrap().len(),
        4,
        "none is older than the cutoff yet"
    );
    let recorded = store
        .record_report(
            "h1",
            "s",
            "2026-01-09T00:00:00Z",
            vec![batch(3, 1, None)],
            &retention("2026-01-02T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!((recorded.acked, recorded.pruned), (3, 3));
    let kept: Vec<String> = store
        .events("s", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(kept, ["2.0", "3.0"]);
    assert_eq!(
        store.event_counts().await.unwrap(),
        [EventCounts {
            site: "s".into(),
            kept: 2,
            pruned: 3
        }]
    );
}

pub async fn rollouts_are_kept_with_the_snapshot_and_archived(store: &dyn Store) {
    let row = |state: &str| {
        Write::PutRollout(RolloutRow {
            deployment: "d".into(),
            state: state.into(),
            at: "t1".into(),
        })
    };
    store.commit(0, vec![row("first")]).await.unwrap();
    store.commit(1, vec![row("first, further")]).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.rollouts.len(), 1);
    assert_eq!(snap.rollouts[0].state, "first, further");
    // A newer rollout: the current one goes to the history, in the same commit.
    store
        .commit(
            2,
            vec![
                Write::ArchiveRollout {
                    deployment: "d".into(),
                    at: "t2".into(),
                },
                row("second"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.snapshot().await.unwrap().rollouts[0].state, "second");
    assert_eq!(
        store.rollouts().await.unwrap(),
        store.snapshot().await.unwrap().rollouts
    );
    let history = store.rollout_history("d").await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| (r.state.as_str(), r.at.as_str()))
            .collect::<Vec<_>>(),
        [("first, further", "t2")]
    );
    assert!(store.rollout_history("other").await.unwrap().is_empty());
}

fn secret(name: &str, meta: &str, ciphertext: &[u8]) -> SecretRow {
    SecretRow {
        name: name.into(),
        meta: meta.into(),
        key_id: "k1".into(),
        wrapped_key: vec![0, 1, 2, 255],
        ciphertext: ciphertext.to_vec(),
        updated_at: "2026-01-01T00:00:00Z".into(),
    }
}

pub async fn secrets_and_settings_are_kept_with_their_bytes(store: &dyn Store) {
    let v = store
        .commit(
            0,
            vec![
                Write::PutSecret(secret("db", r#"{"version":1}"#, &[9, 0, 8])),
                Write::PutSecret(secret("api", r#"{"version":1}"#, b"x")),
                Write::PutSetting {
                    name: "check".into(),
                    value: "abc".into(),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.secret("db").await.unwrap(),
        Some(secret("db", r#"{"version":1}"#, &[9, 0, 8]))
    );
    assert_eq!(
        store.setting("check").await.unwrap().as_deref(),
        Some("abc")
    );
    assert_eq!(store.setting("other").await.unwrap(), None);
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(
        snapshot.secrets,
        vec![
            SecretHead {
                name: "api".into(),
                meta: r#"{"version":1}"#.into()
            },
            SecretHead {
                name: "db".into(),
                meta: r#"{"version":1}"#.into()
            },
        ]
    );
    let v = store
        .commit(
            v,
            vec![
                Write::PutSecret(secret("db", r#"{"version":2}"#, &[7])),
                Write::DeleteSecret { name: "api".into() },
                Write::PutSetting {
                    name: "check".into(),
                    value: "def".into(),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(v, 2);
    let all = store.secrets().await.unwrap();
    assert_eq!(all, vec![secret("db", r#"{"version":2}"#, &[7])]);
    assert_eq!(
        store.setting("check").await.unwrap().as_deref(),
        Some("def")
    );
}

const TTL: Duration = Duration::from_secs(5);

pub async fn a_lease_is_refused_while_held_and_taken_over_after_expiry_with_the_next_fence(
    store: &dyn Store,
) {
    assert_eq!(store.lease("rollouts").await.unwrap(), None);
    assert_eq!(
        store
            .acquire_lease("rollouts", "a", TTL, 1_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "b", TTL, 5_999)
            .await
            .unwrap(),
        None,
        "held until 6000"
    );
    assert_eq!(
        store.acquire_lease("other", "b", TTL, 5_999).await.unwrap(),
        Some(1),
        "leases are independent"
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "b", TTL, 6_000)
            .await
            .unwrap(),
        Some(2),
        "expired: taken over with the next fence"
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "a", TTL, 6_001)
            .await
            .unwrap(),
        None,
        "the old holder cannot come back while b holds it"
    );
    let row = store.lease("rollouts").await.unwrap().unwrap();
    assert_eq!(
        (row.holder.as_str(), row.fence, row.expires_at_ms),
        ("b", 2, 11_000)
    );

    assert!(!store.release_lease("rollouts", "a").await.unwrap());
    assert!(store.release_lease("rollouts", "b").await.unwrap());
    assert_eq!(
        store
            .acquire_lease("rollouts", "a", TTL, 6_002)
            .await
            .unwrap(),
        Some(3),
        "released: free at once, and the fence still grows"
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "b", TTL, 6_003)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .acquire_lease("rollouts", "", TTL, 6_003)
            .await
            .is_err(),
        "the empty holder is a released lease's"
    );
}

pub async fn a_renewal_by_the_holder_keeps_the_fence(store: &dyn Store) {
    assert_eq!(
        store
            .acquire_lease("rollouts", "a", TTL, 1_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "a", TTL, 4_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "b", TTL, 6_500)
            .await
            .unwrap(),
        None,
        "the renewal moved the expiry to 9000"
    );
    assert_eq!(
        store
            .acquire_lease("rollouts", "a", TTL, 20_000)
            .await
            .unwrap(),
        Some(1),
        "expired but taken by no one: still the holder's fence"
    );
    assert_eq!(
        store
            .lease("rollouts")
            .await
            .unwrap()
            .unwrap()
            .expires_at_ms,
        25_000
    );
}

pub async fn a_commit_with_a_stale_fence_is_refused_whole(store: &dyn Store) {
    let fenced = |fence| Write::Fenced {
        lease: "rollouts".into(),
        fence,
    };
    let err = store
        .commit(0, vec![fenced(1), site_row("a", 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 0
            }
        ),
        "no lease yet: {err}"
    );
    let a = store
        .acquire_lease("rollouts", "a", TTL, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .commit(0, vec![fenced(a), site_row("a", 1)])
            .await
            .unwrap(),
        1
    );
    let b = store
        .acquire_lease("rollouts", "b", TTL, 7_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b, a + 1);
    // `a` was paused past its lease and wakes up: its write is refused, whole.
    let err = store
        .commit(1, vec![site_row("b", 1), fenced(a)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected, actual } if expected == a && actual == b),
        "{err}"
    );
    assert!(store.resource("Site", "b").await.unwrap().is_none());
    assert_eq!(store.version().await.unwrap(), 1);
    assert_eq!(
        store
            .commit(1, vec![fenced(b), site_row("b", 1)])
            .await
            .unwrap(),
        2
    );
}

fn seen(host: &str, site: &str, polls: u32, seen_ago_ms: u64) -> PresenceSeen {
    PresenceSeen {
        host: host.into(),
        site: site.into(),
        polls,
        seen_ago_ms,
    }
}

/// Long enough that no replica of these tests is forgotten unless the test means it.
const REMEMBER: Duration = Duration::from_secs(3600);

pub async fn presence_is_kept_per_replica_on_the_stores_clock_and_followed_by_change_number(
    store: &dyn Store,
) {
    let empty = store.presence_changes(0, 100).await.unwrap();
    assert!(empty.rows.is_empty() && empty.beats.is_empty(), "{empty:?}");
    assert!(
        empty.now_ms > 1_700_000_000_000,
        "the store's clock: {}",
        empty.now_ms
    );

    // A heartbeat alone is one write with no row.
    let beat = store.put_presence("a", vec![], REMEMBER).await.unwrap();
    let read = store.presence_changes(0, 100).await.unwrap();
    assert!(read.rows.is_empty());
    assert_eq!(read.beats, vec![("a".to_owned(), beat)]);
    assert!(read.now_ms >= beat);

    let at = store
        .put_presence(
            "a",
            vec![seen("h1", "s1", 1, 0), seen("h2", "s2", 0, 10_000)],
            REMEMBER,
        )
        .await
        .unwrap();
    let read = store.presence_changes(0, 100).await.unwrap();
    let rows: Vec<&PresenceRow> = read.rows.iter().map(|(_, r)| r).collect();
    assert_eq!(
        rows,
        vec![
            &PresenceRow {
                replica: "a".into(),
                host: "h1".into(),
                site: "s1".into(),
                polls: 1,
                seen_at_ms: at,
            },
            &PresenceRow {
                replica: "a".into(),
                host: "h2".into(),
                site: "s2".into(),
                polls: 0,
                seen_at_ms: at - 10_000,
            },
        ]
    );
    let first = read.rows[0].0;
    assert!(first > 0 && read.rows[1].0 > first, "{:?}", read.rows);
    let last = read.rows[1].0;

    // Another replica's record of the same host is its own row; a rewrite of `a`'s takes the
    // next number, and a follower reading after `last` sees only those.
    store
        .put_presence("b", vec![seen("h1", "s1", 0, 500)], REMEMBER)
        .await
        .unwrap();
    store
        .put_presence("a", vec![seen("h1", "s1", 0, 0)], REMEMBER)
        .await
        .unwrap();
    let read = store.presence_changes(last, 100).await.unwrap();
    let changed: Vec<(&str, &str, u32)> = read
        .rows
        .iter()
        .map(|(_, r)| (r.replica.as_str(), r.host.as_str(), r.polls))
        .collect();
    assert_eq!(changed, vec![("b", "h1", 0), ("a", "h1", 0)]);
    assert!(read.rows[0].0 > last && read.rows[1].0 > read.rows[0].0);
    let names: Vec<&str> = read.beats.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);

    // Paged: `limit` rows at most, in number order; the rest after the last one read.
    let page = store.presence_changes(0, 2).await.unwrap();
    assert_eq!(page.rows.len(), 2);
    let rest = store.presence_changes(page.rows[1].0, 100).await.unwrap();
    assert_eq!(rest.rows.len(), 1, "three rows in all: a/h1, a/h2, b/h1");
    assert_eq!(
        store
            .presence_changes(rest.rows[0].0, 100)
            .await
            .unwrap()
            .rows,
        vec![]
    );
    assert!(
        store.put_presence("", vec![], REMEMBER).await.is_err(),
        "a replica has a name"
    );
}

pub async fn a_replica_silent_too_long_is_forgotten_with_its_presence(store: &dyn Store) {
    store
        .put_presence("dead", vec![seen("h1", "s1", 1, 0)], REMEMBER)
        .await
        .unwrap();
    store
        .put_presence("alive", vec![seen("h2", "s2", 1, 0)], REMEMBER)
        .await
        .unwrap();
    // Remembered while within `forget_after` of its last beat.
    store.put_presence("alive", vec![], REMEMBER).await.unwrap();
    let read = store.presence_changes(0, 100).await.unwrap();
    assert_eq!(read.beats.len(), 2);
    // Forgotten, rows and all, by the first write after its beat is older than the bound
    // (the store's clock moves on: no sleep of a fixed length, a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        store
            .put_presence("alive", vec![], Duration::from_millis(1))
            .await
            .unwrap();
        let read = store.presence_changes(0, 100).await.unwrap();
        if read.beats.len() == 1 {
            assert_eq!(read.beats[0].0, "alive");
            let hosts: Vec<&str> = read.rows.iter().map(|(_, r)| r.host.as_str()).collect();
            assert_eq!(
                hosts,
                vec!["h2"],
                "the forgotten replica's records go with it"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the silent replica is never forgotten: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
