//! How one host's site log reaches another's: a [`Transport`] carries an opaque [`Message`] to
//! a peer and brings back its [`Reply`]; the peer hands the message to its own
//! `SiteLog::receive`. The transport knows nothing of Raft (a message is a serde value it may
//! send as JSON over the site's mutual TLS), and the rest of the agent never names openraft.
//!
//! Every failure to get a reply (no route, a refused or lost connection, the peer stopped, the
//! RPC's deadline passed) is the same to Raft: the peer is unreachable for now, and Raft backs
//! off and tries again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{BasicNode, Snapshot};
use serde::{Deserialize, Serialize};

use super::types::SiteRaft;

/// A Raft request from one host's site log to another's.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message(pub(super) Request);

/// The answer to a [`Message`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply(pub(super) Response);

impl Reply {
    /// The answer of a host that could not hand the message to its site log (it has none
    /// open); the sender takes the host for unreachable.
    pub fn failed(reason: impl Into<String>) -> Reply {
        Reply(Response::Failed(reason.into()))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Request {
    Append(AppendEntriesRequest<SiteRaft>),
    Vote(VoteRequest<SiteRaft>),
    PreVote(VoteRequest<SiteRaft>),
    Snapshot {
        vote: VoteOf<SiteRaft>,
        meta: SnapshotMetaOf<SiteRaft>,
        #[serde(with = "super::state::base64_bytes")]
        data: Vec<u8>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Response {
    Append(AppendEntriesResponse<SiteRaft>),
    Vote(VoteResponse<SiteRaft>),
    Snapshot(SnapshotResponse<SiteRaft>),
    /// The peer's site log could not take the message (it is stopping).
    Failed(String),
}

/// Why a message got no reply.
#[derive(Debug, thiserror::Error)]
#[error("host {to} ({addr}) unreachable: {reason}")]
pub struct LinkDown {
    pub to: String,
    pub addr: String,
    pub reason: String,
}

/// Carries site-log messages to the other hosts of the site.
pub trait Transport: Send + Sync + 'static {
    /// Sends `message` to the host `to`, at its site address `addr`, and waits for its reply.
    fn send(
        &self,
        to: &str,
        addr: &str,
        message: Message,
    ) -> impl Future<Output = Result<Reply, LinkDown>> + Send;
}

/// Openraft's network factory over a [`Transport`].
pub(super) struct Network<T> {
    pub transport: Arc<T>,
}

impl<T: Transport> RaftNetworkFactory<SiteRaft> for Network<T> {
    type Network = Peer<T>;

    async fn new_client(&mut self, target: String, node: &BasicNode) -> Peer<T> {
        Peer {
            transport: self.transport.clone(),
            to: target,
            addr: node.addr.clone(),
        }
    }
}

pub(super) struct Peer<T> {
    transport: Arc<T>,
    to: String,
    addr: String,
}

impl<T: Transport> Peer<T> {
    async fn call(&self, request: Request, ttl: Duration) -> Result<Response, LinkDown> {
        let down = |reason: String| LinkDown {
            to: self.to.clone(),
            addr: self.addr.clone(),
            reason,
        };
        let sent = self.transport.send(&self.to, &self.addr, Message(request));
        match tokio::time::timeout(ttl, sent).await {
            Ok(Ok(Reply(Response::Failed(reason)))) => Err(down(reason)),
            Ok(Ok(Reply(response))) => Ok(response),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(down(format!("no reply within {ttl:?}"))),
        }
    }
}

fn unreachable(e: &LinkDown) -> Unreachable<SiteRaft> {
    Unreachable::new(e)
}

fn mismatched(to: &str) -> LinkDown {
    LinkDown {
        to: to.to_owned(),
        addr: String::new(),
        reason: "the reply does not answer the request".to_owned(),
    }
}

impl<T: Transport> RaftNetworkV2<SiteRaft> for Peer<T> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SiteRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<SiteRaft>, RPCError<SiteRaft>> {
        match self.call(Request::Append(rpc), option.soft_ttl()).await {
            Ok(Response::Append(r)) => Ok(r),
            Ok(_) => Err(RPCError::Unreachable(unreachable(&mismatched(&self.to)))),
            Err(e) => Err(RPCError::Unreachable(unreachable(&e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SiteRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<SiteRaft>, RPCError<SiteRaft>> {
        match self.call(Request::Vote(rpc), option.soft_ttl()).await {
            Ok(Response::Vote(r)) => Ok(r),
            Ok(_) => Err(RPCError::Unreachable(unreachable(&mismatched(&self.to)))),
            Err(e) => Err(RPCError::Unreachable(unreachable(&e))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<SiteRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<SiteRaft>, RPCError<SiteRaft>> {
        match self.call(Request::PreVote(rpc), option.soft_ttl()).await {
            Ok(Response::Vote(r)) => Ok(r),
            Ok(_) => Err(RPCError::Unreachable(unreachable(&mismatched(&self.to)))),
            Err(e) => Err(RPCError::Unreachable(unreachable(&e))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<SiteRaft>,
        snapshot: SnapshotOf<SiteRaft, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<SiteRaft>, StreamingError<SiteRaft>> {
        let Snapshot { meta, snapshot } = snapshot;
        let request = Request::Snapshot {
            vote,
            meta,
            data: snapshot,
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = self.call(request, option.hard_ttl()) => match answer {
                Ok(Response::Snapshot(r)) => Ok(r),
                Ok(_) => Err(StreamingError::Unreachable(unreachable(&mismatched(&self.to)))),
                Err(e) => Err(StreamingError::Unreachable(unreachable(&e))),
            },
        }
    }
}
