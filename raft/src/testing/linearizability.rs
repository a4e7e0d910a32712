//! A linearizability checker for histories over the [`kv`](super::kv) model:
//! per key, an append-only list; operations append a value or read the whole
//! list.
//!
//! The search is Wing & Gong's, with Lowe's memoization as in Porcupine:
//! walk the history's call/return events in time order, tentatively
//! linearize any operation whose call has been reached, and backtrack when a
//! return is reached whose operation is still pending. A `(set of linearized
//! operations, model state)` pair already explored is never explored again.
//! Keys are independent (P-compositionality), so each key is checked alone.
//!
//! Operations whose outcome is unknown (timeouts) are kept as appends that
//! may take effect at any time after their call — or never, which is the same
//! as taking effect after the last observation (so one no read saw is
//! dropped). Unknown reads are dropped.
//!
//! Worked example (times in ms):
//!
//! ```text
//! A: append(1)  [0 ──── 10]
//! B: read → []      [2 ─ 3]        ok: B may take effect before A
//! C: read → [1]         [5 ─ 6]    ok: A linearized in [0, 5]
//! D: read → []              [7 ─ 8]  violation: A was seen by C, which
//!                                     returned before D was called
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Append(u64),
    Read,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The append was acknowledged.
    Appended,
    /// The read returned this list.
    Read(Vec<u64>),
    /// No answer, or an answer that does not say whether it took effect.
    Unknown,
}

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: u64,
    pub kind: OpKind,
    pub result: OpResult,
    /// Nanoseconds since the history started, when the call was made.
    pub call: u64,
    /// When the answer arrived (ignored for unknown outcomes).
    pub ret: u64,
}

/// A concurrent recorder of operations.
#[derive(Debug, Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// The current time on the history's clock.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, op: Operation) {
        self.ops.lock().push(op);
    }

    pub fn ops(&self) -> Vec<Operation> {
        self.ops.lock().clone()
    }
}

/// Why a history is not linearizable (or could not be checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: u64,
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {}: {}", self.key, self.reason)
    }
}

/// Model state: length and rolling hash of the list.
type State = (usize, u64);

fn extend(h: u64, v: u64) -> u64 {
    (h ^ v.wrapping_add(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0x0000_0100_0000_01b3)
}

fn state_of(list: &[u64]) -> State {
    (
        list.len(),
        list.iter()
            .fold(0xcbf2_9ce4_8422_2325, |h, &v| extend(h, v)),
    )
}

const INITIAL: State = (0, 0xcbf2_9ce4_8422_2325);

/// Search steps per key before giving up as inconclusive.
const MAX_STEPS: u64 = 20_000_000;

/// Checks a whole history; keys are checked independently.
pub fn check(ops: &[Operation]) -> Result<(), Violation> {
    let mut keys: Vec<u64> = ops.iter().map(|o| o.key).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let of_key: Vec<&Operation> = ops.iter().filter(|o| o.key == key).collect();
        check_key(key, &of_key)?;
    }
    Ok(())
}

enum Step {
    Append(u64),
    Read(State),
}

struct Op {
    step: Step,
    call: u64,
    ret: u64,
}

fn check_key(key: u64, ops: &[&Operation]) -> Result<(), Violation> {
    let fail = |reason: String| Violation { key, reason };
    // Build the operations; unknown reads say nothing and are dropped.
    let mut appended = HashSet::new();
    for o in ops {
        if let OpKind::Append(v) = o.kind {
            if !appended.insert(v) {
                return Err(fail(format!("value {v} appended twice (test bug)")));
            }
        }
    }
    // An unknown append no read ever saw can be taken to have happened after
    // everything (or never): dropping it keeps the search small.
    let observed: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match &o.result {
            OpResult::Read(vs) => Some(vs.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut list: Vec<Op> = Vec::new();
    for o in ops {
        let (step, ret) = match (&o.kind, &o.result) {
            (OpKind::Append(v), OpResult::Unknown) if !observed.contains(v) => continue,
            (OpKind::Append(v), OpResult::Unknown) => (Step::Append(*v), u64::MAX),
            (OpKind::Append(v), _) => (Step::Append(*v), o.ret),
            (OpKind::Read, OpResult::Read(vs)) => {
                let distinct: HashSet<_> = vs.iter().collect();
                if distinct.len() != vs.len() {
                    return Err(fail(format!("read returned a duplicate: {vs:?}")));
                }
                if let Some(v) = vs.iter().find(|v| !appended.contains(*v)) {
                    return Err(fail(format!("read returned {v}, never appended")));
                }
                (Step::Read(state_of(vs)), o.ret)
            }
            (OpKind::Read, _) => continue,
        };
        if ret < o.call {
            return Err(fail("an operation returned before its call".into()));
        }
        list.push(Op {
            step,
            call: o.call,
            ret,
        });
    }
    let n = list.len();
    if n == 0 {
        return Ok(());
    }

    // Events in time order; at equal times calls come first (concurrent).
    // Event e: op e/2, call if e is even.
    let mut events: Vec<usize> = (0..2 * n).collect();
    events.sort_by_key(|&e| {
        let op = &list[e / 2];
        if e & 1 == 0 {
            (op.call, 0)
        } else {
            (op.ret, 1)
        }
    });
    // Doubly linked list over events; node 2n is the head sentinel.
    const NIL: usize = usize::MAX;
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &e in &events {
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NIL {
            prev[nx] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = INITIAL;
    let mut entry = next[head];
    let mut steps = 0u64;
    let mut deepest = 0usize;
    while next[head] != NIL {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(fail(format!(
                "inconclusive after {MAX_STEPS} steps ({n} ops)"
            )));
        }
        if entry == NIL {
            return Err(fail("search fell off the history (checker bug)".into()));
        }
        let op_id = entry / 2;
        if entry & 1 == 0 {
            let new_state = match list[op_id].step {
                Step::Append(v) => Some((state.0 + 1, extend(state.1, v))),
                Step::Read(s) => (s == state).then_some(state),
            };
            if let Some(new_state) = new_state {
                let mut bits = linearized.clone();
                bits[op_id / 64] |= 1 << (op_id % 64);
                if cache.insert((bits.clone(), new_state)) {
                    stack.push((op_id, state));
                    deepest = deepest.max(stack.len());
                    state = new_state;
                    linearized = bits;
                    unlink(&mut next, &mut prev, 2 * op_id);
                    unlink(&mut next, &mut prev, 2 * op_id + 1);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return whose operation could not be linearized: backtrack.
            let Some((undo, prev_state)) = stack.pop() else {
                let o = &list[op_id];
                let what = match &o.step {
                    Step::Append(v) => format!("append({v})"),
                    Step::Read(s) => format!("read of {} values", s.0),
                };
                return Err(fail(format!(
                    "not linearizable: no order explains {what} [{}..{}] ({n} ops, deepest prefix {deepest})",
                    o.call, o.ret
                )));
            };
            linearized[undo / 64] &= !(1 << (undo % 64));
            state = prev_state;
            relink(&mut next, &mut prev, 2 * undo + 1);
            relink(&mut next, &mut prev, 2 * undo);
            entry = next[2 * undo];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(client: u64, v: u64, call: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: 1,
            kind: OpKind::Append(v),
            result: OpResult::Appended,
            call,
            ret,
        }
    }

    fn unknown_append(client: u64, v: u64, call: u64) -> Operation {
        Operation {
            result: OpResult::Unknown,
            ret: 0,
            ..append(client, v, call, call)
        }
    }

    fn read(client: u64, vs: &[u64], call: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: 1,
            kind: OpKind::Read,
            result: OpResult::Read(vs.to_vec()),
            call,
            ret,
        }
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            append(1, 1, 0, 1),
            read(2, &[1], 2, 3),
            append(1, 2, 4, 5),
            read(2, &[1, 2], 6, 7),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn stale_read_fails() {
        let h = vec![append(1, 1, 0, 1), read(2, &[], 2, 3)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn concurrent_read_may_or_may_not_see_a_write() {
        assert_eq!(check(&[append(1, 1, 0, 10), read(2, &[], 1, 2)]), Ok(()));
        assert_eq!(check(&[append(1, 1, 0, 10), read(2, &[1], 1, 2)]), Ok(()));
    }

    #[test]
    fn a_write_seen_once_must_stay_seen() {
        let h = vec![append(1, 1, 0, 10), read(2, &[1], 5, 6), read(3, &[], 7, 8)];
        assert!(check(&h).is_err(), "the doc's worked example");
    }

    #[test]
    fn order_of_writes_must_respect_real_time() {
        let h = vec![
            append(1, 1, 0, 1),
            append(2, 2, 2, 3),
            read(3, &[2, 1], 4, 5),
        ];
        assert!(check(&h).is_err());
        let concurrent = vec![
            append(1, 1, 0, 3),
            append(2, 2, 1, 2),
            read(3, &[2, 1], 4, 5),
        ];
        assert_eq!(check(&concurrent), Ok(()));
    }

    #[test]
    fn unknown_appends_may_apply_late_or_never() {
        assert_eq!(
            check(&[unknown_append(1, 1, 0), read(2, &[], 5, 6)]),
            Ok(())
        );
        assert_eq!(
            check(&[
                unknown_append(1, 1, 0),
                read(2, &[], 5, 6),
                read(2, &[1], 7, 8)
            ]),
            Ok(())
        );
        assert!(check(&[
            unknown_append(1, 1, 0),
            read(2, &[1], 5, 6),
            read(2, &[], 7, 8)
        ])
        .is_err());
    }

    #[test]
    fn lost_acknowledged_write_fails() {
        let h = vec![append(1, 1, 0, 1), append(1, 2, 2, 3), read(2, &[2], 4, 5)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn many_concurrent_operations_check_quickly() {
        // 8 clients, 400 ops, heavy overlap: must finish well within the budget.
        let mut h = Vec::new();
        for i in 0..200u64 {
            h.push(append(i % 8, i, 10 * i, 10 * i + 50));
            // Appends 0..=i-5 have returned, 0..=i+1 have been called.
            let seen: Vec<u64> = if i >= 2 {
                (0..=i - 2).collect()
            } else {
                vec![]
            };
            h.push(read(i % 8 + 8, &seen, 10 * i + 5, 10 * i + 15));
        }
        assert_eq!(check(&h), Ok(()));
    }
}
