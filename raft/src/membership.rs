//! Cluster members and membership changes.
//!
//! raft-rs's `ConfState` knows member ids and roles only; Ballast also keeps
//! each member's *context* — opaque bytes the application attaches when it
//! adds a member (the server stores peer URLs and the member name there). The
//! contexts are persisted beside the conf state and travel in snapshots, so
//! every node can answer [`RaftNode::members`](crate::RaftNode::members).

use std::collections::BTreeMap;

use raft::prelude::{ConfChange, ConfChangeType, ConfState};

use crate::proto;

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The raft id.
    pub id: u64,
    /// A learner receives the log but does not vote or count for quorum.
    pub is_learner: bool,
    /// The application's metadata for this member (e.g. peer URLs).
    pub context: Vec<u8>,
}

impl Member {
    /// A voting member.
    pub fn voter(id: u64, context: impl Into<Vec<u8>>) -> Self {
        Member {
            id,
            is_learner: false,
            context: context.into(),
        }
    }

    /// A learner.
    pub fn learner(id: u64, context: impl Into<Vec<u8>>) -> Self {
        Member {
            id,
            is_learner: true,
            context: context.into(),
        }
    }
}

/// A membership change, as proposed and as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voting member.
    AddMember { id: u64, context: Vec<u8> },
    /// Add a learner.
    AddLearner { id: u64, context: Vec<u8> },
    /// Make a learner a voter.
    PromoteLearner { id: u64 },
    /// Remove a member (voter or learner).
    Remove { id: u64 },
}

impl MemberChange {
    /// The member this change is about.
    pub fn id(&self) -> u64 {
        match self {
            MemberChange::AddMember { id, .. }
            | MemberChange::AddLearner { id, .. }
            | MemberChange::PromoteLearner { id }
            | MemberChange::Remove { id } => *id,
        }
    }

    /// Checks the change against the current configuration, so obviously
    /// invalid changes are refused before they enter the log.
    pub(crate) fn validate(&self, members: &Members) -> Result<(), String> {
        let id = self.id();
        if id == 0 {
            return Err("member id 0 is invalid".into());
        }
        let role = members.role(id);
        match self {
            MemberChange::AddMember { .. } | MemberChange::AddLearner { .. } => {
                if role.is_some() {
                    return Err(format!("member {id:x} already exists"));
                }
            }
            MemberChange::PromoteLearner { .. } => {
                if role != Some(true) {
                    return Err(format!("member {id:x} is not a learner"));
                }
            }
            MemberChange::Remove { .. } => {
                if role.is_none() {
                    return Err(format!("member {id:x} not found"));
                }
                if role == Some(false) && members.voters().count() == 1 {
                    return Err("cannot remove the last voter".into());
                }
            }
        }
        Ok(())
    }

    pub(crate) fn to_conf_change(&self) -> ConfChange {
        let mut cc = ConfChange {
            node_id: self.id(),
            ..Default::default()
        };
        match self {
            MemberChange::AddMember { context, .. } => {
                cc.set_change_type(ConfChangeType::AddNode);
                cc.context = context.clone().into();
            }
            MemberChange::AddLearner { context, .. } => {
                cc.set_change_type(ConfChangeType::AddLearnerNode);
                cc.context = context.clone().into();
            }
            MemberChange::PromoteLearner { .. } => {
                cc.set_change_type(ConfChangeType::AddNode);
            }
            MemberChange::Remove { .. } => {
                cc.set_change_type(ConfChangeType::RemoveNode);
            }
        }
        cc
    }

    /// Reads a committed single-step change back. `AddNode` of an existing
    /// learner is a promotion.
    pub(crate) fn from_single(
        ty: ConfChangeType,
        id: u64,
        context: &[u8],
        before: &Members,
    ) -> Self {
        match ty {
            ConfChangeType::AddNode if before.role(id) == Some(true) && context.is_empty() => {
                MemberChange::PromoteLearner { id }
            }
            ConfChangeType::AddNode => MemberChange::AddMember {
                id,
                context: context.to_vec(),
            },
            ConfChangeType::AddLearnerNode => MemberChange::AddLearner {
                id,
                context: context.to_vec(),
            },
            ConfChangeType::RemoveNode => MemberChange::Remove { id },
        }
    }
}

/// The configuration as of some log index: raft's conf state plus contexts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Members {
    pub conf_state: ConfState,
    pub contexts: BTreeMap<u64, Vec<u8>>,
}

impl Members {
    pub fn from_initial(peers: &[Member]) -> Self {
        let mut cs = ConfState::default();
        let mut contexts = BTreeMap::new();
        for m in peers {
            if m.is_learner {
                cs.learners.push(m.id);
            } else {
                cs.voters.push(m.id);
            }
            contexts.insert(m.id, m.context.clone());
        }
        Members {
            conf_state: cs,
            contexts,
        }
    }

    /// `Some(true)` for a learner, `Some(false)` for a voter.
    pub fn role(&self, id: u64) -> Option<bool> {
        if self.conf_state.voters.contains(&id) {
            Some(false)
        } else if self.conf_state.learners.contains(&id) {
            Some(true)
        } else {
            None
        }
    }

    pub fn voters(&self) -> impl Iterator<Item = u64> + '_ {
        self.conf_state.voters.iter().copied()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.role(id).is_some()
    }

    /// Records the contexts of an applied change; `conf_state` is raft's
    /// configuration after it.
    pub fn apply(&mut self, change: &MemberChange, conf_state: ConfState) {
        match change {
            MemberChange::AddMember { id, context } | MemberChange::AddLearner { id, context } => {
                if !context.is_empty() || !self.contexts.contains_key(id) {
                    self.contexts.insert(*id, context.clone());
                }
            }
            MemberChange::PromoteLearner { .. } => {}
            MemberChange::Remove { id } => {
                self.contexts.remove(id);
            }
        }
        self.conf_state = conf_state;
        // Forget contexts of ids raft no longer knows (defensive: keeps the
        // two views from drifting apart).
        let cs = &self.conf_state;
        self.contexts
            .retain(|id, _| cs.voters.contains(id) || cs.learners.contains(id));
    }

    pub fn list(&self) -> Vec<Member> {
        let cs = &self.conf_state;
        let mut out: Vec<Member> = cs
            .voters
            .iter()
            .map(|&id| (id, false))
            .chain(cs.learners.iter().map(|&id| (id, true)))
            .map(|(id, is_learner)| Member {
                id,
                is_learner,
                context: self.contexts.get(&id).cloned().unwrap_or_default(),
            })
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }

    pub fn to_proto(&self) -> Vec<proto::MemberContext> {
        self.contexts
            .iter()
            .map(|(&id, ctx)| proto::MemberContext {
                id,
                context: ctx.clone().into(),
            })
            .collect()
    }

    pub fn from_proto(conf_state: ConfState, members: &[proto::MemberContext]) -> Self {
        Members {
            conf_state,
            contexts: members.iter().map(|m| (m.id, m.context.to_vec())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_obvious_mistakes() {
        let m = Members::from_initial(&[Member::voter(1, "a"), Member::learner(2, "b")]);
        assert!(MemberChange::AddMember {
            id: 1,
            context: vec![]
        }
        .validate(&m)
        .is_err());
        assert!(MemberChange::PromoteLearner { id: 1 }.validate(&m).is_err());
        assert!(MemberChange::PromoteLearner { id: 2 }.validate(&m).is_ok());
        assert!(MemberChange::Remove { id: 3 }.validate(&m).is_err());
        assert!(
            MemberChange::Remove { id: 1 }.validate(&m).is_err(),
            "last voter"
        );
        assert!(MemberChange::Remove { id: 2 }.validate(&m).is_ok());
    }

    #[test]
    fn promote_keeps_context_and_remove_forgets_it() {
        let mut m = Members::from_initial(&[Member::voter(1, "a"), Member::learner(2, "b")]);
        let promote = MemberChange::from_single(ConfChangeType::AddNode, 2, &[], &m);
        assert_eq!(promote, MemberChange::PromoteLearner { id: 2 });
        let mut cs = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        m.apply(&promote, cs.clone());
        assert_eq!(m.list()[1], Member::voter(2, "b"));
        cs.voters = vec![1];
        m.apply(&MemberChange::Remove { id: 2 }, cs);
        assert_eq!(m.list(), vec![Member::voter(1, "a")]);
    }
}
