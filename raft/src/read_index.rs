//! Batching of linearizable reads (ReadIndex).
//!
//! Readers queue here; the driver starts one raft ReadIndex round for
//! everyone who queued since the last round, and at most one round is in
//! flight. When raft answers a round with the leader's commit index, every
//! reader of that round — and of any older round still waiting — gets that
//! index: it was read after they all asked, so it is at least the commit
//! index at each of their requests. A round unanswered for `retry_ticks`
//! (lost message, leader change) is folded into the next one.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use crate::error::Error;

type Reply = oneshot::Sender<Result<u64, Error>>;

struct Round {
    readers: Vec<Reply>,
    started_tick: u64,
}

pub(crate) struct ReadQueue {
    node_id: u64,
    next_seq: u64,
    waiting: Vec<Reply>,
    /// Rounds in flight by sequence number (also their raft context).
    inflight: BTreeMap<u64, Round>,
    retry_ticks: u64,
}

impl ReadQueue {
    pub fn new(node_id: u64, retry_ticks: u64) -> Self {
        ReadQueue {
            node_id,
            next_seq: 1,
            waiting: Vec::new(),
            inflight: BTreeMap::new(),
            retry_ticks: retry_ticks.max(1),
        }
    }

    pub fn push(&mut self, reply: Reply) {
        self.waiting.push(reply);
    }

    fn encode(&self, seq: u64) -> Vec<u8> {
        let mut ctx = self.node_id.to_be_bytes().to_vec();
        ctx.extend_from_slice(&seq.to_be_bytes());
        ctx
    }

    fn decode(&self, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != 16 || ctx[..8] != self.node_id.to_be_bytes() {
            return None;
        }
        Some(u64::from_be_bytes(ctx[8..].try_into().ok()?))
    }

    /// The context of a new round to start, if readers are waiting and no
    /// round is in flight.
    pub fn next_round(&mut self, now_tick: u64) -> Option<Vec<u8>> {
        self.waiting.retain(|r| !r.is_closed());
        if self.waiting.is_empty() || !self.inflight.is_empty() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight.insert(
            seq,
            Round {
                readers: std::mem::take(&mut self.waiting),
                started_tick: now_tick,
            },
        );
        Some(self.encode(seq))
    }

    /// raft answered the round `ctx` with `index`.
    pub fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        let Some(seq) = self.decode(ctx) else { return };
        let answered: Vec<u64> = self.inflight.range(..=seq).map(|(s, _)| *s).collect();
        for s in answered {
            if let Some(round) = self.inflight.remove(&s) {
                for r in round.readers {
                    let _ = r.send(Ok(index));
                }
            }
        }
    }

    /// Folds rounds older than `retry_ticks` back into the queue, so the next
    /// round carries them.
    pub fn on_tick(&mut self, now_tick: u64) {
        let stale: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, r)| now_tick.saturating_sub(r.started_tick) >= self.retry_ticks)
            .map(|(s, _)| *s)
            .collect();
        for s in stale {
            if let Some(round) = self.inflight.remove(&s) {
                self.waiting
                    .extend(round.readers.into_iter().filter(|r| !r.is_closed()));
            }
        }
    }

    /// Answers everyone with `err` (the node is stopping).
    pub fn fail_all(&mut self, err: Error) {
        for r in self.waiting.drain(..) {
            let _ = r.send(Err(err.clone()));
        }
        for (_, round) in std::mem::take(&mut self.inflight) {
            for r in round.readers {
                let _ = r.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_round_serves_everyone_who_waited() {
        let mut q = ReadQueue::new(7, 3);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        q.push(tx1);
        q.push(tx2);
        let ctx = q.next_round(0).unwrap();
        let (tx3, mut rx3) = oneshot::channel();
        q.push(tx3);
        assert!(q.next_round(0).is_none(), "one round in flight at a time");
        q.on_read_state(&ctx, 42);
        assert_eq!(rx1.try_recv().unwrap(), Ok(42));
        assert_eq!(rx2.try_recv().unwrap(), Ok(42));
        assert!(
            rx3.try_recv().is_err(),
            "a later reader needs a later round"
        );
        let ctx2 = q.next_round(1).unwrap();
        q.on_read_state(&ctx2, 50);
        assert_eq!(rx3.try_recv().unwrap(), Ok(50));
    }

    #[test]
    fn unanswered_rounds_are_retried_and_foreign_contexts_ignored() {
        let mut q = ReadQueue::new(7, 3);
        let (tx1, mut rx1) = oneshot::channel();
        q.push(tx1);
        let lost = q.next_round(10).unwrap();
        q.on_tick(12);
        assert!(q.next_round(12).is_none());
        q.on_tick(13);
        let retry = q.next_round(13).unwrap();
        assert_ne!(lost, retry);
        q.on_read_state(&ReadQueue::new(8, 3).encode(2), 99);
        assert!(rx1.try_recv().is_err());
        q.on_read_state(&retry, 60);
        assert_eq!(rx1.try_recv().unwrap(), Ok(60));
        // A late answer to the lost round finds nobody.
        q.on_read_state(&lost, 61);
    }
}
