//! A secret's view: its keys and versions, never a value, and for each site whose placed
//! applications use it, the version the site's manifest asks for and the version each of its
//! hosts reported delivering.

use atoll_api::secret::{SecretSiteView, SecretView};
use atoll_store::SecretRow;

use super::Observed;
use crate::core::secrets;
use crate::core::state::{State, Versions};

/// The view of the stored secret `row`: the sites are those `State::placements` puts an
/// application reading it at, each with the version `secrets::resolve` gives it there.
pub fn secret(
    row: &SecretRow,
    state: &State,
    versions: &Versions,
    observed: &Observed<'_>,
) -> SecretView {
    let meta = state.secrets.get(&row.name).cloned().unwrap_or_default();
    let sites = state
        .sites
        .values()
        .filter_map(|entry| {
            let site = &entry.value;
            let version = state
                .placements(site, versions)
                .iter()
                .flat_map(|p| p.application.services.iter())
                .flat_map(|s| s.secrets.iter())
                .filter(|r| r.name == row.name)
                .filter_map(|r| secrets::resolve(&state.secrets, r, &site.name).ok())
                .map(|m| m.version)
                .max()?;
            let hosts = observed
                .hosts(&site.name)
                .iter()
                .filter_map(|h| {
                    Some((
                        h.id.clone(),
                        *observed.status(&h.id)?.secrets.get(&row.name)?,
                    ))
                })
                .collect();
            Some(SecretSiteView {
                site: site.name.clone(),
                version,
                hosts,
            })
        })
        .collect();
    SecretView {
        name: row.name.clone(),
        version: meta.version,
        updated_at: row.updated_at.clone(),
        keys: meta.key_views(),
        sites,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use atoll_store::SecretRow;

    use super::*;
    use crate::core::secrets::{KeyMeta, SecretMeta};
    use crate::core::views::fixtures::{host, state, statuses};

    const FLEET: &str = "kind: Application\nname: pos\nversion: '1'\nservices:\n  - name: till\n    image: till:1\n    secrets: [{ name: db, key: password, path: /run/secrets/db }]\n---\nkind: Deployment\nname: pos\napplication: pos\nplacement: { sites: 'shop == yes' }\n---\nkind: Site\nname: paris\nlabels: { shop: 'yes' }\n---\nkind: Site\nname: lyon\nlabels: { shop: 'yes' }\n---\nkind: Site\nname: depot\nlabels: { shop: 'no' }\n";

    #[test]
    fn a_secret_shows_the_sites_that_read_it_and_what_each_host_delivered() {
        let mut state = state(FLEET);
        state.secrets.insert(
            "db".into(),
            SecretMeta {
                version: 3,
                keys: [(
                    "password".to_owned(),
                    KeyMeta {
                        shared: Some(2),
                        sites: [("lyon".to_owned(), 3)].into(),
                        ..KeyMeta::default()
                    },
                )]
                .into(),
            },
        );
        let hosts = [
            host("p1", "paris"),
            host("p2", "paris"),
            host("d1", "depot"),
        ];
        let mut reports = statuses(&[("p1", 1, vec![]), ("p2", 1, vec![]), ("d1", 1, vec![])]);
        for (h, version) in [("p1", 2), ("d1", 2)] {
            reports.get_mut(h).unwrap().secrets = BTreeMap::from([("db".to_owned(), version)]);
        }
        let row = SecretRow {
            name: "db".into(),
            meta: String::new(),
            key_id: String::new(),
            wrapped_key: Vec::new(),
            ciphertext: Vec::new(),
            updated_at: "2026-01-03T00:00:00Z".into(),
        };
        let view = secret(
            &row,
            &state,
            &Versions::new(),
            &Observed::new(&hosts, &reports),
        );
        assert_eq!(view.version, 3);
        let sites: Vec<(&str, u64)> = view.sites.iter().map(|s| (&*s.site, s.version)).collect();
        assert_eq!(
            sites,
            [("lyon", 3), ("paris", 2)],
            "depot runs nothing that reads it"
        );
        assert_eq!(view.sites[1].hosts, BTreeMap::from([("p1".to_owned(), 2)]));
        assert!(view.sites[0].hosts.is_empty());
    }
}
