//! The etcd Cluster service: membership through raft conf changes. Changes
//! must be made by the leader; a follower passes them on to it. With auth
//! enabled, changes need root (listing is open, as in etcd); a follower
//! checks the caller and passes its token on with the request, which the
//! leader knows too (Authenticate is replicated).

use std::future::Future;
use std::sync::Arc;

use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{self, Credentials};
use crate::command::MemberAttributes;
use crate::config::{member_id, parse_url};
use crate::error::ServerError;
use crate::node::Node;
use crate::pb::etcdserverpb::{self as pb, cluster_client::ClusterClient, cluster_server::Cluster};

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

    /// A membership change: refuses callers without the root role, then
    /// passes the request on to the leader's Cluster service with the
    /// caller's token. `Leader(answer)` is the leader's answer; `Here(req)`
    /// is the request for this member, which leads, to carry out.
    async fn admin_change<Req: Clone, Resp, F>(
        &self,
        req: Request<Req>,
        call: impl Fn(ClusterClient<Channel>, Request<Req>) -> F,
    ) -> Result<Change<Req, Resp>, Status>
    where
        F: Future<Output = Result<Response<Resp>, Status>>,
    {
        let creds = Credentials::of(&req);
        let caller = auth::caller(&self.node, &creds).await?;
        auth::check_admin(&self.node, &caller)?;
        let req = req.into_inner();
        let remote = self
            .node
            .on_leader(|ch| call(ClusterClient::new(ch), forward(&creds, req.clone())))
            .await?;
        Ok(match remote {
            Some(answer) => Change::Leader(answer),
            None => Change::Here(req),
        })
    }

    fn member(&self, id: u64) -> Option<pb::Member> {
        self.node.members_pb().into_iter().find(|m| m.id == id)
    }
}

/// Where a membership change is answered.
enum Change<Req, Resp> {
    Leader(Response<Resp>),
    Here(Req),
}

/// A request to pass on to the leader, with the caller's token.
fn forward<T>(creds: &Credentials, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(v) = creds.token().and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert(auth::TOKEN_METADATA, v);
    }
    req
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = match self
            .admin_change(req, |mut c, r| async move { c.member_add(r).await })
            .await?
        {
            Change::Here(req) => req,
            Change::Leader(answer) => return Ok(answer),
        };
        if req.peer_ur_ls.is_empty() || req.peer_ur_ls.iter().any(|u| parse_url(u).is_err()) {
            return Err(ServerError::MemberBadUrls.into());
        }
        let members = self.node.members_pb();
        if members
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| req.peer_ur_ls.contains(u)))
        {
            return Err(ServerError::PeerUrlExists.into());
        }
        let id = member_id(&req.peer_ur_ls, &self.node.config.initial_cluster_token);
        if members.iter().any(|m| m.id == id) {
            return Err(ServerError::MemberExists.into());
        }
        // etcd's strict reconfiguration check: a started member is one that
        // has published its name; every voter must be up, and a new voter
        // must leave enough started voters for a quorum.
        let voters: Vec<&pb::Member> = members.iter().filter(|m| !m.is_learner).collect();
        let started = voters.iter().filter(|m| !m.name.is_empty()).count();
        if !req.is_learner && started < (voters.len() + 2).div_ceil(2) {
            return Err(ServerError::NotEnoughStarted.into());
        }
        if started < voters.len() {
            return Err(ServerError::Unhealthy.into());
        }
        let context = MemberAttributes {
            id,
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: vec![],
        }
        .encode_to_vec();
        let raft = &self.node.raft;
        if req.is_learner {
            raft.add_learner(id, context).await
        } else {
            raft.add_member(id, context).await
        }
        .map_err(ServerError::from)?;
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.node.current_header()),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: vec![],
                is_learner: req.is_learner,
            }),
            members: self.node.members_pb(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let req = match self
            .admin_change(req, |mut c, r| async move { c.member_remove(r).await })
            .await?
        {
            Change::Here(req) => req,
            Change::Leader(answer) => return Ok(answer),
        };
        let id = req.id;
        if self.member(id).is_none() {
            return Err(ServerError::MemberNotFound.into());
        }
        self.node
            .raft
            .remove_member(id)
            .await
            .map_err(ServerError::from)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.node.current_header()),
            members: self.node.members_pb(),
        }))
    }

    /// Changes a member's peer URLs: replicated as a new publication of
    /// its attributes, which every member's transport follows.
    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let req = match self
            .admin_change(req, |mut c, r| async move { c.member_update(r).await })
            .await?
        {
            Change::Here(req) => req,
            Change::Leader(answer) => return Ok(answer),
        };
        if req.peer_ur_ls.is_empty() || req.peer_ur_ls.iter().any(|u| parse_url(u).is_err()) {
            return Err(ServerError::MemberBadUrls.into());
        }
        let Some(member) = self.member(req.id) else {
            return Err(ServerError::MemberNotFound.into());
        };
        let taken = self
            .node
            .members_pb()
            .iter()
            .filter(|m| m.id != req.id)
            .any(|m| m.peer_ur_ls.iter().any(|u| req.peer_ur_ls.contains(u)));
        if taken {
            return Err(ServerError::PeerUrlExists.into());
        }
        let attrs = MemberAttributes {
            id: req.id,
            name: member.name,
            peer_urls: req.peer_ur_ls,
            client_urls: member.client_ur_ls,
        };
        self.node.write(crate::command::Op::Publish(attrs)).await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.node.current_header()),
            members: self.node.members_pb(),
        }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.node.linearizable().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.node.current_header()),
            members: self.node.members_pb(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let req = match self
            .admin_change(req, |mut c, r| async move { c.member_promote(r).await })
            .await?
        {
            Change::Here(req) => req,
            Change::Leader(answer) => return Ok(answer),
        };
        let id = req.id;
        match self.member(id) {
            None => return Err(ServerError::MemberNotFound.into()),
            Some(m) if !m.is_learner => return Err(ServerError::MemberNotLearner.into()),
            // A learner that has published its name has applied the log up
            // to that entry: etcd's "in sync with the leader", approximated.
            Some(m) if m.name.is_empty() => return Err(ServerError::LearnerNotReady.into()),
            Some(_) => {}
        }
        self.node
            .raft
            .promote_learner(id)
            .await
            .map_err(ServerError::from)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.node.current_header()),
            members: self.node.members_pb(),
        }))
    }
}
