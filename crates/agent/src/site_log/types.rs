//! The one place that says which types openraft runs the site log with.
//!
//! A node id is the host's name (unique within a site, and readable in logs and metrics; no
//! hash to collide), a node is the host's site address, an entry's data is a [`Command`] and
//! its response an [`Outcome`].

use super::state::{Command, Outcome};

openraft::declare_raft_types!(
    /// The site log's Raft types.
    pub SiteRaft:
        D = Command,
        R = Outcome,
        NodeId = String,
        Node = openraft::BasicNode,
);

pub type Entry = openraft::type_config::alias::DefaultEntryOf<SiteRaft>;
