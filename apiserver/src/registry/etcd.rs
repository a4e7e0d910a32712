//! A small etcd v3 client: exactly the calls the registry, the watch cache
//! and the compactor make, over the generated tonic clients of
//! `ballast-proto`; plain or over TLS (`https://` servers, [`EtcdTls`]:
//! kube-apiserver's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).

use std::time::Duration;

use ballast_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    lease_client::LeaseClient,
    request_op::Request,
    response_op::Response,
    watch_client::WatchClient,
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use ballast_proto::mvccpb::KeyValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};
use crate::EtcdTls;

/// How long one etcd call may take before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection (load-balanced over `--etcd-servers`) to the etcd v3 API.
#[derive(Clone)]
pub struct Etcd {
    channel: Channel,
    /// How long calls take (`etcd_request_duration_seconds`).
    requests: crate::metrics::EtcdRequests,
}

/// One page of a range read.
#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    /// More keys remain past the last one returned.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: i64,
}

/// What [`Etcd::put_if_version`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum VersionCas {
    /// The key was at the expected version and now holds the new value,
    /// written at `revision`.
    Put { revision: i64 },
    /// The key had moved on: its current version and value (0 and empty
    /// when it is gone), read at the store's `revision`.
    Changed {
        version: i64,
        value: Vec<u8>,
        revision: i64,
    },
}

/// tonic's client TLS settings from an [`EtcdTls`].
fn client_config(tls: &EtcdTls) -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new();
    if let Some(ca) = &tls.ca_pem {
        c = c.ca_certificate(Certificate::from_pem(ca));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_pem, &tls.key_pem) {
        c = c.identity(Identity::from_pem(cert, key));
    }
    c
}

/// An error and its sources, joined (tonic's transport errors say little
/// on their own: the TLS or connection cause is further down).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl Etcd {
    /// Connects lazily to `endpoints` (`http://host:port` or `host:port`).
    pub fn connect(endpoints: &[String]) -> Result<Etcd> {
        Etcd::connect_with_tls(endpoints, None)
    }

    /// Connects lazily to `endpoints`; with `tls`, bare `host:port`
    /// endpoints mean `https://`, and `https://` ones use it.
    pub fn connect_with_tls(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Etcd> {
        if endpoints.is_empty() {
            return Err(Error::BadRequest("no etcd servers given".into()));
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let url = if e.contains("://") {
                e.clone()
            } else if tls.is_some() {
                format!("https://{e}")
            } else {
                format!("http://{e}")
            };
            let https = url.starts_with("https://");
            let mut ep = Endpoint::from_shared(url)
                .map_err(|err| Error::BadRequest(format!("bad etcd server {e:?}: {err}")))?
                .connect_timeout(Duration::from_secs(3))
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            if https {
                let config = client_config(&tls.cloned().unwrap_or_default());
                ep = ep.tls_config(config).map_err(|err| {
                    Error::BadRequest(format!("etcd server {e:?}: TLS: {}", error_chain(&err)))
                })?;
            }
            list.push(ep);
        }
        let channel = if list.len() == 1 {
            list.remove(0).connect_lazy()
        } else {
            Channel::balance_list(list.into_iter())
        };
        Ok(Etcd {
            channel,
            requests: Default::default(),
        })
    }

    /// One read, to check that etcd answers (and the TLS setup works): the
    /// current revision, or an error naming the cause.
    pub async fn check(&self) -> Result<i64> {
        match tokio::time::timeout(CALL_TIMEOUT, self.current_revision()).await {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(Error::Etcd(status))) => {
                let mut text = status.message().to_string();
                if let Some(source) = std::error::Error::source(&status) {
                    text = format!("{text}: {}", error_chain(source));
                }
                Err(Error::Internal(format!("etcd: {text}")))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout(format!(
                "etcd did not answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }

    /// The durations of this connection's calls, for `/metrics`.
    pub(crate) fn request_metrics(&self) -> &crate::metrics::EtcdRequests {
        &self.requests
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// A client for the Watch service, on the same connections.
    pub fn watch_client(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// The newest version of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let _timed = self.requests.time("get", key);
        let resp = self
            .kv()
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(resp.kvs.into_iter().next())
    }

    /// Keys in `[start, end)`, at most `limit` (0 = all), at `revision`
    /// (0 = newest). A compacted revision fails with `Error::Expired`.
    pub async fn range(&self, start: &str, end: &[u8], revision: i64, limit: i64) -> Result<Page> {
        let _timed = self.requests.time("list", start);
        let resp = self
            .kv()
            .range(RangeRequest {
                key: start.as_bytes().to_vec(),
                range_end: end.to_vec(),
                revision,
                limit,
                ..Default::default()
            })
            .await
            .map_err(|s| {
                if s.message().contains("compacted") {
                    Error::Expired(format!("too old resource version: {revision}"))
                } else {
                    Error::Etcd(s)
                }
            })?
            .into_inner();
        Ok(Page {
            kvs: resp.kvs,
            more: resp.more,
            revision: header_revision(resp.header.as_ref()),
        })
    }

    /// The store's current revision: a count-only range of one key, the
    /// cheapest linearizable read there is.
    pub async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .kv()
            .range(RangeRequest {
                key: b"/registry/".to_vec(),
                count_only: true,
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(header_revision(resp.header.as_ref()))
    }

    /// At `revision`: how many keys lie under `prefix`, and whether any of
    /// them was written at or after `since`. One keys-only Range: etcd
    /// counts before it filters by `min_mod_revision`.
    pub async fn changes(&self, prefix: &str, revision: i64, since: i64) -> Result<(i64, bool)> {
        let resp = self
            .kv()
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                revision,
                min_mod_revision: since,
                keys_only: true,
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok((resp.count, !resp.kvs.is_empty()))
    }

    /// `Txn(If CreateRevision(key) == 0 Then Put)`, attached to `lease`
    /// (0: none): the revision written, or `None` when the key exists.
    pub async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<Option<i64>> {
        let _timed = self.requests.time("create", key);
        self.put_if(key, value, lease, TargetUnion::CreateRevision(0))
            .await
    }

    /// `Txn(If ModRevision(key) == rv Then Put)`, attached to `lease` (0:
    /// none): the revision written, or `None` when the key changed (or
    /// vanished) since `rv`.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        rv: i64,
        lease: i64,
    ) -> Result<Option<i64>> {
        let _timed = self.requests.time("update", key);
        self.put_if(key, value, lease, TargetUnion::ModRevision(rv))
            .await
    }

    /// Grants a lease of `ttl` seconds (the storage may raise it to its
    /// minimum); its id.
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64> {
        let resp = LeaseClient::new(self.channel.clone())
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner();
        if !resp.error.is_empty() {
            return Err(Error::Internal(format!("etcd lease grant: {}", resp.error)));
        }
        Ok(resp.id)
    }

    /// `Txn(If ModRevision(key) == rv Then Delete)`: the deletion's revision,
    /// or `None` when the key changed since `rv`.
    pub async fn delete(&self, key: &str, rv: i64) -> Result<Option<i64>> {
        let _timed = self.requests.time("delete", key);
        let op = Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        self.txn(key, TargetUnion::ModRevision(rv), op).await
    }

    /// Deletes every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64> {
        let resp = self
            .kv()
            .delete_range(DeleteRangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(resp.deleted)
    }

    /// `Txn(If Version(key) == version Then Put(key, value) Else Get(key))`:
    /// a compare-and-swap on the key's version (0: the key does not exist),
    /// in one round trip.
    pub async fn put_if_version(
        &self,
        key: &str,
        version: i64,
        value: Vec<u8>,
    ) -> Result<VersionCas> {
        let put = Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        });
        let get = Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        let resp = self
            .kv()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: key.as_bytes().to_vec(),
                    range_end: vec![],
                    target_union: Some(TargetUnion::Version(version)),
                }],
                success: vec![RequestOp { request: Some(put) }],
                failure: vec![RequestOp { request: Some(get) }],
            })
            .await?
            .into_inner();
        let revision = header_revision(resp.header.as_ref());
        if resp.succeeded {
            return Ok(VersionCas::Put { revision });
        }
        let kv = match resp.responses.into_iter().next().and_then(|r| r.response) {
            Some(Response::ResponseRange(r)) => r.kvs.into_iter().next(),
            other => {
                return Err(Error::Internal(format!(
                    "etcd answered a failed Txn's Get with {other:?}"
                )))
            }
        };
        let (version, value) = kv.map(|kv| (kv.version, kv.value)).unwrap_or_default();
        Ok(VersionCas::Changed {
            version,
            value,
            revision,
        })
    }

    /// Compacts the store's history below `revision` (not physical: etcd
    /// answers once the compaction is scheduled). A revision at or below
    /// the store's compacted one fails with etcd's `ErrCompacted`, a future
    /// one with `ErrFutureRev`, both as [`Error::Etcd`].
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.kv()
            .compact(CompactionRequest {
                revision,
                physical: false,
            })
            .await?;
        Ok(())
    }

    /// One etcd `Txn` as given (the service allocator's multi-key
    /// compares); etcd's answer, unread.
    pub async fn txn_request(
        &self,
        req: TxnRequest,
    ) -> Result<ballast_proto::etcdserverpb::TxnResponse> {
        Ok(self.kv().txn(req).await?.into_inner())
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        cond: TargetUnion,
    ) -> Result<Option<i64>> {
        let op = Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        });
        self.txn(key, cond, op).await
    }

    async fn txn(&self, key: &str, cond: TargetUnion, op: Request) -> Result<Option<i64>> {
        let target = match cond {
            TargetUnion::CreateRevision(_) => CompareTarget::Create,
            TargetUnion::ModRevision(_) => CompareTarget::Mod,
            TargetUnion::Version(_) => CompareTarget::Version,
            TargetUnion::Value(_) => CompareTarget::Value,
            TargetUnion::Lease(_) => CompareTarget::Lease,
        };
        let resp = self
            .kv()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: target as i32,
                    key: key.as_bytes().to_vec(),
                    range_end: vec![],
                    target_union: Some(cond),
                }],
                success: vec![RequestOp { request: Some(op) }],
                failure: vec![],
            })
            .await?
            .into_inner();
        if !resp.succeeded {
            return Ok(None);
        }
        // A delete of a key that is already gone succeeds the compare only
        // when rv was 0; report it as "changed" all the same.
        if let Some(Response::ResponseDeleteRange(d)) =
            resp.responses.first().and_then(|r| r.response.as_ref())
        {
            if d.deleted == 0 {
                return Ok(None);
            }
        }
        Ok(Some(header_revision(resp.header.as_ref())))
    }
}

fn header_revision(h: Option<&ballast_proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.map(|h| h.revision).unwrap_or_default()
}

/// The range end that covers every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            super::prefix_end("/registry/pods/"),
            b"/registry/pods0".to_vec()
        );
    }
}
