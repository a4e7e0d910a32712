//! A linearizability checker for histories of one register per key with
//! read, write and compare-and-set.
//!
//! The search is Wing & Gong's with Lowe's memoization (the approach of
//! Porcupine): the history's call and return events, in time order, form a
//! doubly linked list; the search walks it, tentatively linearizes an
//! operation whose call it reaches (if the model allows the operation's
//! observed result in the current state), unlinks that operation's events
//! and starts again from the head. Reaching the return of an operation that
//! is not linearized yet means the current choice is wrong: undo the last
//! linearized operation and try the next candidate. A (set of linearized
//! operations, register state) pair explored once is never explored again.
//! Keys are independent, so each key is checked alone.
//!
//! Operations with an unknown outcome (timeouts, transport errors) have no
//! return event: they may take effect at any point after their call, or
//! never. Unknown reads say nothing and are dropped; an unknown write whose
//! value nobody observed is dropped too when no failed compare-and-set after
//! its call could need it as an explanation.
//!
//! Worked example (times in ms, register initially absent):
//!
//! ```text
//! A: write(1)          [0 ─────── 10]
//! B: read → absent        [2 ─ 3]        ok: B before A
//! C: read → 1                [5 ─ 6]     ok: A linearized in [0, 5]
//! D: read → absent                [7 ─ 8]  violation: C saw A and
//!                                          returned before D was called
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;

/// A register value: `0` is "absent", any other number is a unique value
/// one write introduced.
pub type Value = u64;

/// What an operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A linearizable read.
    Read,
    /// An unconditional write of a unique value.
    Write(Value),
    /// Write `new` if the register holds `expect` (an etcd Txn comparing
    /// the key's value).
    Cas { expect: Value, new: Value },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The read returned this value (`0`: the key did not exist).
    Read(Value),
    /// The write was acknowledged.
    Written,
    /// The compare-and-set succeeded (`true`) or its compare failed (`false`).
    Cas(bool),
    /// No answer, or one that does not say whether it took effect.
    Unknown,
}

/// One client operation on one key, with its invocation and completion
/// times (nanoseconds from any common origin; `ret` is ignored for
/// [`Outcome::Unknown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    pub invoke: u64,
    pub complete: u64,
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations explains every observed result.
    Linearizable,
    /// No order does; the message names the operation the search could not
    /// get past with the longest linearized prefix.
    Violation(String),
    /// The search gave up after its step budget (neither proven nor refuted).
    Inconclusive,
}

/// The verdict per key, and how many operations were checked.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub per_key: Vec<(String, Verdict)>,
    /// Operations that entered the search (after dropping unknown reads
    /// and unobservable unknown writes).
    pub ops_checked: usize,
    pub ops_dropped: usize,
}

impl CheckReport {
    /// The violations, one message per key.
    pub fn violations(&self) -> Vec<String> {
        self.per_key
            .iter()
            .filter_map(|(k, v)| match v {
                Verdict::Violation(m) => Some(format!("key {k}: {m}")),
                _ => None,
            })
            .collect()
    }

    /// Keys whose search ran out of budget.
    pub fn inconclusive(&self) -> Vec<String> {
        self.per_key
            .iter()
            .filter(|(_, v)| *v == Verdict::Inconclusive)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match self.call {
            Call::Read => "read".to_string(),
            Call::Write(v) => format!("write({v})"),
            Call::Cas { expect, new } => format!("cas({expect}->{new})"),
        };
        let out = match self.outcome {
            Outcome::Read(v) => format!("-> {v}"),
            Outcome::Written => "-> ok".into(),
            Outcome::Cas(ok) => format!("-> {ok}"),
            Outcome::Unknown => "-> ?".into(),
        };
        write!(
            f,
            "client {} {call} {out} [{:.3}s..{}]",
            self.client,
            self.invoke as f64 / 1e9,
            if self.outcome == Outcome::Unknown {
                "?".to_string()
            } else {
                format!("{:.3}s", self.complete as f64 / 1e9)
            }
        )
    }
}

/// Search steps allowed per key before the verdict is
/// [`Verdict::Inconclusive`].
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

/// Checks every key of `history` (any order) with the default budget.
pub fn check(history: &[Operation]) -> CheckReport {
    check_with_budget(history, DEFAULT_STEP_BUDGET)
}

/// Checks every key of `history` with `budget` search steps per key.
pub fn check_with_budget(history: &[Operation], budget: u64) -> CheckReport {
    let mut by_key: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut report = CheckReport::default();
    for key in keys {
        let all = &by_key[key];
        // First with every unobserved unknown write dropped (a linearization
        // of the rest is one of the whole history: those writes simply never
        // took effect); only if that fails, again keeping the ones a failed
        // compare-and-set might need.
        let mut ops = prune(all, false);
        let mut verdict = check_key(&ops, budget);
        if verdict != Verdict::Linearizable {
            let kept = prune(all, true);
            if kept.len() != ops.len() {
                ops = kept;
                verdict = check_key(&ops, budget);
            }
        }
        report.ops_dropped += all.len() - ops.len();
        report.ops_checked += ops.len();
        report.per_key.push((key.to_string(), verdict));
    }
    report
}

/// Drops unknown reads (they say nothing) and unknown writes whose value no
/// read or successful compare-and-set observed — except, with
/// `keep_for_failed_cas`, those a failed compare-and-set called after them
/// could need as its explanation.
fn prune<'a>(ops: &[&'a Operation], keep_for_failed_cas: bool) -> Vec<&'a Operation> {
    let mut observed: HashSet<Value> = HashSet::new();
    let mut last_failed_cas: Option<u64> = None;
    for op in ops {
        match (op.call, op.outcome) {
            (_, Outcome::Read(v)) => {
                observed.insert(v);
            }
            (Call::Cas { expect, .. }, Outcome::Cas(true)) => {
                observed.insert(expect);
            }
            (Call::Cas { .. }, Outcome::Cas(false)) => {
                last_failed_cas = Some(last_failed_cas.unwrap_or(0).max(op.invoke));
            }
            _ => {}
        }
    }
    ops.iter()
        .copied()
        .filter(|op| match (op.call, op.outcome) {
            (Call::Read, Outcome::Unknown) => false,
            (Call::Write(v) | Call::Cas { new: v, .. }, Outcome::Unknown) => {
                observed.contains(&v)
                    || (keep_for_failed_cas && last_failed_cas.is_some_and(|t| t >= op.invoke))
            }
            _ => true,
        })
        .collect()
}

/// The register model: the state after `op` in `state`, if `op`'s observed
/// outcome is possible there. An unknown write or compare-and-set is tried
/// as having taken effect (not taking effect is the search skipping it).
fn step(state: Value, op: &Operation) -> Option<Value> {
    match (op.call, op.outcome) {
        (Call::Read, Outcome::Read(v)) => (v == state).then_some(state),
        (Call::Write(v), Outcome::Written | Outcome::Unknown) => Some(v),
        (Call::Cas { expect, new }, Outcome::Cas(true) | Outcome::Unknown) => {
            (expect == state).then_some(new)
        }
        (Call::Cas { expect, .. }, Outcome::Cas(false)) => (expect != state).then_some(state),
        // A result that does not fit the call (never recorded so).
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Event {
    Call(usize),
    Return(usize),
}

/// A 128-bit Zobrist hash of a set of operations: the XOR of one random
/// 128-bit word per member, so adding or removing one operation is O(1) and
/// the cache stores 24 bytes per explored configuration instead of a bit
/// set of the whole history (a collision, at 2^-128 per pair, is ignored).
fn zobrist(i: usize) -> u128 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix((i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(1));
    let b = mix(a ^ 0x5851_f42d_4c95_7f2d);
    (u128::from(a) << 64) | u128::from(b)
}

fn check_key(ops: &[&Operation], budget: u64) -> Verdict {
    let n = ops.len();
    // Events in time order; a call sorts before a return at the same time
    // (the two operations then count as concurrent).
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, 0, Event::Call(i)));
        if op.outcome != Outcome::Unknown {
            events.push((op.complete.max(op.invoke), 1, Event::Return(i)));
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    let m = events.len();
    // Doubly linked list over event indices; `m` is the head sentinel and
    // `m + 1` the tail sentinel.
    let head = m;
    let tail = m + 1;
    let mut next: Vec<usize> = (0..m + 2)
        .map(|i| if i + 1 < m { i + 1 } else { tail })
        .collect();
    let mut prev: Vec<usize> = (0..m + 2)
        .map(|i| if i > 0 && i < m { i - 1 } else { head })
        .collect();
    next[head] = if m == 0 { tail } else { 0 };
    prev[tail] = if m == 0 { head } else { m - 1 };
    let mut call_at = vec![0usize; n];
    let mut ret_at: Vec<Option<usize>> = vec![None; n];
    for (idx, e) in events.iter().enumerate() {
        match e.2 {
            Event::Call(i) => call_at[i] = idx,
            Event::Return(i) => ret_at[i] = Some(idx),
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        prev[nx] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        prev[nx] = x;
    };

    let keys: Vec<u128> = (0..n).map(zobrist).collect();
    let mut linearized: u128 = 0;
    let mut cache: HashSet<(u128, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state: Value = 0;
    let mut cursor = next[head];
    let mut steps = 0u64;
    // The return the search got stuck at with the deepest linearization.
    let mut stuck: Option<(usize, usize)> = None;
    while cursor != tail {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive;
        }
        match events[cursor].2 {
            Event::Call(i) => {
                if let Some(after) = step(state, ops[i]) {
                    linearized ^= keys[i];
                    if cache.insert((linearized, after)) {
                        stack.push((i, state));
                        state = after;
                        unlink(&mut next, &mut prev, call_at[i]);
                        if let Some(r) = ret_at[i] {
                            unlink(&mut next, &mut prev, r);
                        }
                        cursor = next[head];
                        continue;
                    }
                    linearized ^= keys[i];
                }
                cursor = next[cursor];
            }
            Event::Return(i) => {
                if stuck.is_none_or(|(_, depth)| stack.len() > depth) {
                    stuck = Some((i, stack.len()));
                }
                let Some((top, before)) = stack.pop() else {
                    let (op, depth) = stuck.unwrap_or((i, 0));
                    return Verdict::Violation(describe(ops, op, depth));
                };
                linearized ^= keys[top];
                state = before;
                if let Some(r) = ret_at[top] {
                    relink(&mut next, &mut prev, r);
                }
                relink(&mut next, &mut prev, call_at[top]);
                cursor = next[call_at[top]];
            }
        }
    }
    Verdict::Linearizable
}

fn describe(ops: &[&Operation], stuck: usize, depth: usize) -> String {
    let op = ops[stuck];
    let concurrent: Vec<String> = ops
        .iter()
        .filter(|o| {
            let end = if o.outcome == Outcome::Unknown {
                u64::MAX
            } else {
                o.complete
            };
            o.invoke <= op.complete && end >= op.invoke.saturating_sub(2_000_000_000)
        })
        .take(12)
        .map(|o| format!("    {o}"))
        .collect();
    format!(
        "not linearizable: no order explains `{op}` (deepest search linearized {depth} of {} ops); \
         operations around it:\n{}",
        ops.len(),
        concurrent.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: Call, outcome: Outcome, invoke: u64, complete: u64) -> Operation {
        Operation {
            client,
            key: "k".into(),
            call,
            outcome,
            invoke,
            complete,
        }
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check(history).per_key.pop().expect("one key").1
    }

    #[test]
    fn worked_example() {
        let ok = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 10),
            op(1, Call::Read, Outcome::Read(0), 2, 3),
            op(2, Call::Read, Outcome::Read(1), 5, 6),
        ];
        assert_eq!(verdict(&ok), Verdict::Linearizable);
        let mut bad = ok.clone();
        bad.push(op(3, Call::Read, Outcome::Read(0), 7, 8));
        assert!(matches!(verdict(&bad), Verdict::Violation(_)));
    }

    #[test]
    fn stale_read_after_acknowledged_write() {
        let h = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(0, Call::Write(2), Outcome::Written, 2, 3),
            op(1, Call::Read, Outcome::Read(1), 4, 5),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation(_)));
    }

    #[test]
    fn cas_semantics() {
        let ok = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(1, Call::Cas { expect: 1, new: 2 }, Outcome::Cas(true), 2, 3),
            op(
                2,
                Call::Cas { expect: 1, new: 3 },
                Outcome::Cas(false),
                4,
                5,
            ),
            op(0, Call::Read, Outcome::Read(2), 6, 7),
        ];
        assert_eq!(verdict(&ok), Verdict::Linearizable);
        // Two compare-and-sets on the same expected value cannot both win.
        let both = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(1, Call::Cas { expect: 1, new: 2 }, Outcome::Cas(true), 2, 5),
            op(2, Call::Cas { expect: 1, new: 3 }, Outcome::Cas(true), 2, 5),
        ];
        assert!(matches!(verdict(&both), Verdict::Violation(_)));
        // A failed compare on the value the register surely holds.
        let failed = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(
                1,
                Call::Cas { expect: 1, new: 2 },
                Outcome::Cas(false),
                2,
                3,
            ),
        ];
        assert!(matches!(verdict(&failed), Verdict::Violation(_)));
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        // Seen: the unknown write took effect (even long after its call).
        let seen = vec![
            op(0, Call::Write(1), Outcome::Unknown, 0, 0),
            op(1, Call::Read, Outcome::Read(0), 10, 11),
            op(1, Call::Read, Outcome::Read(1), 20, 21),
        ];
        assert_eq!(verdict(&seen), Verdict::Linearizable);
        // It explains a failed compare-and-set, so it is not pruned.
        let explains = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(2, Call::Write(9), Outcome::Unknown, 2, 0),
            op(
                1,
                Call::Cas { expect: 1, new: 2 },
                Outcome::Cas(false),
                3,
                4,
            ),
        ];
        let report = check(&explains);
        assert_eq!(report.ops_dropped, 0);
        assert_eq!(report.per_key[0].1, Verdict::Linearizable);
        // Never seen: as if it never happened.
        let unseen = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(2, Call::Write(9), Outcome::Unknown, 2, 0),
            op(1, Call::Read, Outcome::Read(1), 3, 4),
        ];
        let report = check(&unseen);
        assert_eq!(report.ops_dropped, 1);
        assert_eq!(report.per_key[0].1, Verdict::Linearizable);
        // But it cannot un-happen once seen.
        let flip = vec![
            op(0, Call::Write(1), Outcome::Written, 0, 1),
            op(2, Call::Write(9), Outcome::Unknown, 2, 0),
            op(1, Call::Read, Outcome::Read(9), 3, 4),
            op(1, Call::Read, Outcome::Read(1), 5, 6),
        ];
        assert!(matches!(verdict(&flip), Verdict::Violation(_)));
    }

    #[test]
    fn keys_are_independent_and_budget_is_reported() {
        let mut h = vec![op(0, Call::Write(1), Outcome::Written, 0, 1)];
        let mut other = op(1, Call::Read, Outcome::Read(5), 2, 3);
        other.key = "j".into();
        h.push(other);
        let r = check(&h);
        assert_eq!(r.violations().len(), 1, "{:?}", r.per_key);
        assert!(r.violations()[0].starts_with("key j:"));
        let many: Vec<Operation> = (0..40)
            .map(|i| op(i, Call::Write(i as u64 + 1), Outcome::Written, 0, 100))
            .chain([op(99, Call::Read, Outcome::Read(1000), 200, 201)])
            .collect();
        assert_eq!(
            check_with_budget(&many, 1000).per_key[0].1,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn long_sequential_history_is_fast() {
        let mut h = Vec::new();
        for i in 0..20_000u64 {
            h.push(op(
                0,
                Call::Write(i + 1),
                Outcome::Written,
                4 * i,
                4 * i + 1,
            ));
            h.push(op(
                1,
                Call::Read,
                Outcome::Read(i + 1),
                4 * i + 2,
                4 * i + 3,
            ));
            // Overlapping compare-and-sets that fail, and unknown writes.
            h.push(op(
                2,
                Call::Cas {
                    expect: 0,
                    new: 1 << 40,
                },
                Outcome::Cas(false),
                4 * i,
                4 * i + 3,
            ));
            if i % 50 == 0 {
                h.push(op(
                    3,
                    Call::Write((1 << 41) + i),
                    Outcome::Unknown,
                    4 * i,
                    0,
                ));
            }
        }
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }
}
