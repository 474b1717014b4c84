//! The column lists both backends select, in the order their row readers take the values: one
//! list, so that a column added to a table is added for every backend at once.

/// A host's columns, as `HostRow` reads them.
pub(crate) const HOST_COLUMNS: &str = "id, site, hostname, inventory, cert_serial, cert_expiry, enrolled_at, last_seen, recipient, previous_serial, previous_until, pending_recipient, state, detached_at, changed, labels";

/// A secret's columns, as `SecretRow` reads them.
pub(crate) const SECRET_COLUMNS: &str = "name, meta, key_id, wrapped_key, ciphertext, updated_at";
