//! The cache's client watchers: each one's bounded outbox of encoded lines
//! (the HTTP side drains everything queued into one write), and the set of
//! watchers indexed by the namespace or `spec.nodeName` their filter pins,
//! so an event only visits the watchers it can concern.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::object::Object;
use crate::selector::{Field, Filter};

/// One watcher's queue of lines, shared by the cache (producer) and the
/// client's stream (consumer).
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    limit: usize,
}

struct Queue {
    lines: VecDeque<Bytes>,
    closed: bool,
    waker: Option<Waker>,
}

impl Outbox {
    pub(super) fn new(limit: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                closed: false,
                waker: None,
            }),
            limit: limit.max(1),
        }
    }

    /// Queues `line`; the consumer's waker to wake (once the caller has
    /// released its own locks) if it was waiting. `Err` when the outbox
    /// is full or closed: it is closed now, and its consumer must be woken.
    pub(super) fn push(&self, line: Bytes) -> Result<Option<Waker>, Option<Waker>> {
        let mut q = self.queue.lock();
        if q.closed || q.lines.len() >= self.limit {
            q.closed = true;
            return Err(q.waker.take());
        }
        q.lines.push_back(line);
        Ok(q.waker.take())
    }

    /// Closes the outbox: the consumer gets what is queued, then the end.
    pub(super) fn close(&self) {
        let waker = {
            let mut q = self.queue.lock();
            q.closed = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next queued line; `None` once closed and empty.
    pub(super) fn poll_one(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut q = self.queue.lock();
        if let Some(line) = q.lines.pop_front() {
            return Poll::Ready(Some(line));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Everything queued, as one buffer; `None` once closed and empty.
    pub(super) fn poll_all(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut q = self.queue.lock();
        match q.lines.len() {
            0 if q.closed => Poll::Ready(None),
            0 => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            1 => Poll::Ready(q.lines.pop_front()),
            _ => {
                // Joined under the lock so the queue keeps its capacity.
                let all = concat(q.lines.iter());
                q.lines.clear();
                Poll::Ready(Some(all))
            }
        }
    }
}

/// The lines one after another in one buffer.
pub(super) fn concat<'a>(lines: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let len = lines.clone().map(|l| l.len()).sum();
    let mut out = BytesMut::with_capacity(len);
    for l in lines {
        out.extend_from_slice(l);
    }
    out.freeze()
}

/// The cache's side of a watcher; dropping it (the watcher is removed)
/// closes the outbox, so the client's stream ends.
pub(super) struct Watcher {
    pub filter: Filter,
    /// Events at or below this revision were replayed (or are part of the
    /// initial state) and are skipped live.
    pub after: i64,
    pub bookmarks: bool,
    pub outbox: Arc<Outbox>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.outbox.close();
    }
}

/// Which index a watcher sits in: the narrowest its filter pins.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bucket {
    All,
    Namespace(String),
    Node(String),
}

impl Bucket {
    fn of(filter: &Filter) -> Bucket {
        if let Some(node) = filter.fields.required(Field::NodeName) {
            return Bucket::Node(node.to_string());
        }
        match (&filter.namespace, filter.fields.required(Field::Namespace)) {
            (Some(ns), _) => Bucket::Namespace(ns.clone()),
            (None, Some(ns)) => Bucket::Namespace(ns.to_string()),
            (None, None) => Bucket::All,
        }
    }
}

type Group = HashMap<u64, Watcher>;

/// Every registered watcher, each in exactly one bucket.
#[derive(Default)]
pub(super) struct Watchers {
    all: Group,
    by_namespace: HashMap<String, Group>,
    by_node: HashMap<String, Group>,
    bucket_of: HashMap<u64, Bucket>,
    next: u64,
}

impl Watchers {
    pub(super) fn len(&self) -> usize {
        self.bucket_of.len()
    }

    pub(super) fn insert(&mut self, w: Watcher) -> u64 {
        let id = self.next;
        self.next += 1;
        let bucket = Bucket::of(&w.filter);
        match &bucket {
            Bucket::All => self.all.insert(id, w),
            Bucket::Namespace(ns) => self
                .by_namespace
                .entry(ns.clone())
                .or_default()
                .insert(id, w),
            Bucket::Node(n) => self.by_node.entry(n.clone()).or_default().insert(id, w),
        };
        self.bucket_of.insert(id, bucket);
        id
    }

    /// Removes (and so closes) watcher `id`.
    pub(super) fn remove(&mut self, id: u64) -> Option<Watcher> {
        let bucket = self.bucket_of.remove(&id)?;
        fn take(index: &mut HashMap<String, Group>, key: &str, id: u64) -> Option<Watcher> {
            let group = index.get_mut(key)?;
            let w = group.remove(&id);
            if group.is_empty() {
                index.remove(key);
            }
            w
        }
        match bucket {
            Bucket::All => self.all.remove(&id),
            Bucket::Namespace(ns) => take(&mut self.by_namespace, &ns, id),
            Bucket::Node(n) => take(&mut self.by_node, &n, id),
        }
    }

    /// Removes (and so closes) every watcher.
    pub(super) fn clear(&mut self) {
        self.all.clear();
        self.by_namespace.clear();
        self.by_node.clear();
        self.bucket_of.clear();
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Watcher)> {
        self.all
            .iter()
            .chain(self.by_namespace.values().flatten())
            .chain(self.by_node.values().flatten())
    }

    /// The watchers an event about `object` (formerly `prev`) can concern:
    /// each at most once.
    pub(super) fn candidates<'a>(
        &'a self,
        object: &'a Object,
        prev: Option<&'a Object>,
    ) -> impl Iterator<Item = (&'a u64, &'a Watcher)> {
        let moved = |a: &str, b: Option<&'a str>| b.filter(|b| *b != a);
        let prev_ns = moved(&object.namespace, prev.map(|p| p.namespace.as_str()));
        let prev_node = moved(&object.node_name, prev.map(|p| p.node_name.as_str()));
        let group = |index: &'a HashMap<String, Group>, key: Option<&str>| {
            key.and_then(|k| index.get(k)).into_iter().flatten()
        };
        self.all
            .iter()
            .chain(group(&self.by_namespace, Some(&object.namespace)))
            .chain(group(&self.by_namespace, prev_ns))
            .chain(group(&self.by_node, Some(&object.node_name)))
            .chain(group(&self.by_node, prev_node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::FieldSelector;
    use std::task::Waker;

    fn pod(ns: &str, node: &str) -> Object {
        let raw = format!(
            r#"{{"metadata":{{"name":"p","namespace":"{ns}"}},"spec":{{"nodeName":"{node}"}}}}"#
        );
        Object::decode(
            format!("/registry/pods/{ns}/p").as_bytes(),
            raw.as_bytes(),
            1,
        )
        .unwrap()
    }

    fn watcher(namespace: Option<&str>, fields: &str) -> Watcher {
        Watcher {
            filter: Filter {
                namespace: namespace.map(str::to_string),
                fields: FieldSelector::parse(fields, "pods").unwrap(),
                ..Default::default()
            },
            after: 0,
            bookmarks: false,
            outbox: Arc::new(Outbox::new(2)),
        }
    }

    #[test]
    fn candidates_come_from_the_object_and_its_previous_buckets() {
        let mut ws = Watchers::default();
        let all = ws.insert(watcher(None, ""));
        let ns_a = ws.insert(watcher(Some("a"), ""));
        let ns_b = ws.insert(watcher(None, "metadata.namespace=b"));
        let n1 = ws.insert(watcher(None, "spec.nodeName=n1"));
        let n2 = ws.insert(watcher(Some("a"), "spec.nodeName=n2"));
        fn ids(ws: &Watchers, o: &Object, p: Option<&Object>) -> Vec<u64> {
            let mut v: Vec<u64> = ws.candidates(o, p).map(|(id, _)| *id).collect();
            v.sort();
            v
        }
        assert_eq!(ids(&ws, &pod("a", "n1"), None), [all, ns_a, n1]);
        let (now, before) = (pod("a", "n2"), pod("a", "n1"));
        assert_eq!(ids(&ws, &now, Some(&before)), [all, ns_a, n1, n2]);
        assert_eq!(ids(&ws, &pod("b", "n9"), None), [all, ns_b]);
        assert_eq!(ws.len(), 5);
        let removed = ws.remove(n1).unwrap();
        assert!(ws.remove(n1).is_none());
        drop(removed);
        assert_eq!(ids(&ws, &pod("a", "n1"), None), [all, ns_a]);
        assert_eq!(ws.iter().count(), 4);
    }

    #[test]
    fn outbox_overflows_closes_and_drains_in_one_buffer() {
        let outbox = Outbox::new(2);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(outbox.poll_all(&mut cx).is_pending());
        assert!(outbox.push(Bytes::from_static(b"a\n")).is_ok());
        assert!(outbox.push(Bytes::from_static(b"b\n")).is_ok());
        assert!(outbox.push(Bytes::from_static(b"c\n")).is_err(), "full");
        assert_eq!(
            outbox.poll_all(&mut cx),
            Poll::Ready(Some(Bytes::from_static(b"a\nb\n")))
        );
        assert_eq!(outbox.poll_all(&mut cx), Poll::Ready(None), "closed");
        assert!(outbox.push(Bytes::from_static(b"d\n")).is_err());
        let one = Outbox::new(4);
        one.push(Bytes::from_static(b"x\n")).unwrap();
        one.close();
        assert_eq!(
            one.poll_one(&mut cx),
            Poll::Ready(Some(Bytes::from_static(b"x\n")))
        );
        assert_eq!(one.poll_one(&mut cx), Poll::Ready(None));
    }
}
