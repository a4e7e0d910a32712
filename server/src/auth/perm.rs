//! Key permissions as intervals, and etcd's coverage rule
//! (`server/auth/range_perm_cache.go`).
//!
//! A permission is a key (`range_end` empty: that one key), a range
//! `[key, range_end)`, or `[key, ∞)` when `range_end` is `"\0"`. A request
//! for one key is allowed when some permission contains it; a request for a
//! range is allowed when the union of the permissions covers all of it, e.g.
//! with `[/a, /b)` and `[/b, /c)` a read of `[/a/x, /c)` is allowed, but not
//! with `[/a, /b)` and `[/b0, /c)` (the gap `[/b, /b0)` is not covered).
//! A single-key permission `k` is the interval `[k, k\0)`.

use crate::pb::authpb::Permission;

/// A half-open key interval; `end == None` is open-ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interval {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl Interval {
    /// The keys a permission grants.
    pub fn of_permission(p: &Permission) -> Interval {
        interval(&p.key, &p.range_end)
    }
}

fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    let end = if range_end.is_empty() {
        let mut next = key.to_vec();
        next.push(0);
        Some(next)
    } else if range_end == [0] {
        None
    } else {
        Some(range_end.to_vec())
    };
    Interval {
        start: key.to_vec(),
        end,
    }
}

fn contains_point(iv: &Interval, key: &[u8]) -> bool {
    iv.start.as_slice() <= key && iv.end.as_deref().is_none_or(|e| key < e)
}

/// Whether `perms` allow a request on `key` (`range_end` empty) or on the
/// range `[key, range_end)` (`"\0"`: to the end of the key space).
pub(crate) fn covered(perms: &[Interval], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return perms.iter().any(|p| contains_point(p, key));
    }
    let want_end = if range_end == [0] {
        None
    } else {
        Some(range_end)
    };
    // An empty or inverted range touches no key; etcd then looks at `key`.
    if want_end.is_some_and(|e| e <= key) {
        return perms.iter().any(|p| contains_point(p, key));
    }
    let mut sorted: Vec<&Interval> = perms.iter().collect();
    sorted.sort_by(|a, b| a.start.cmp(&b.start));
    // Sweep: `reached` is how far from `key` the union covers so far.
    let mut reached: Vec<u8> = key.to_vec();
    for p in sorted {
        if p.start > reached {
            break;
        }
        match &p.end {
            None => return true,
            Some(end) if *end > reached => {
                reached = end.clone();
                if want_end.is_some_and(|w| reached.as_slice() >= w) {
                    return true;
                }
            }
            Some(_) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::authpb::permission::Type;

    fn perm(key: &str, end: &str) -> Interval {
        Interval::of_permission(&Permission {
            perm_type: Type::Read as i32,
            key: key.into(),
            range_end: end.into(),
        })
    }

    #[test]
    fn points_prefixes_and_open_ends() {
        let p = vec![perm("/a", "/b"), perm("/k", ""), perm("/z", "\0")];
        assert!(covered(&p, b"/a", b""));
        assert!(covered(&p, b"/a/x", b""));
        assert!(!covered(&p, b"/b", b""));
        assert!(covered(&p, b"/a/x", b"/a/y"));
        assert!(covered(&p, b"/a", b"/b"));
        assert!(!covered(&p, b"/a", b"/b0"));
        assert!(covered(&p, b"/k", b""));
        assert!(!covered(&p, b"/k0", b""));
        assert!(!covered(&p, b"/k", b"/l"));
        assert!(covered(&p, b"/z", b"\0"));
        assert!(covered(&p, b"/zz", b""));
        assert!(!covered(&p, b"/y", b"\0"));
        assert!(!covered(&[], b"/a", b""));
    }

    #[test]
    fn unions_cover_ranges_without_gaps() {
        let p = vec![perm("/b", "/c"), perm("/a", "/b")];
        assert!(covered(&p, b"/a/x", b"/c"));
        assert!(!covered(&p, b"/a/x", b"/c0"));
        let gap = vec![perm("/a", "/b"), perm("/b0", "/c")];
        assert!(!covered(&gap, b"/a", b"/c"));
        let all = vec![perm("\0", "\0")];
        assert!(covered(&all, b"\0", b"\0"));
        assert!(covered(&all, b"anything", b""));
    }
}
