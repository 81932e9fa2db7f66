//! A repository in a bucket of an S3-compatible object store (AWS S3, Garage, MinIO, ...).
//!
//! Objects have exactly the names and bytes the files of a local repository have (see
//! docs/format.md), under the location's prefix. How the [`Backend`] contract holds here:
//! - `put` is one complete PUT: S3 makes an object visible only when its upload completed, so
//!   a reader never sees a partial object, and a completed PUT is durable (`sync_point` has
//!   nothing to do).
//! - `put_new` is HEAD, then PUT, then a read-back. Conditional PUT (`If-None-Match: *`) is
//!   not used because Garage ignores it. Content-addressed objects (packs) make any race
//!   harmless (same name, same plaintext). For WAL records the read-back catches a
//!   concurrent writer whose PUT landed after ours (sealing is randomized, so another
//!   writer's record never has our bytes): we answer "something else is there" and `wal-push`
//!   compares digests (identical segment: success; other bytes: exit 14). What remains is two
//!   pushes of one name whose HEAD→PUT windows overlap and whose later PUT lands after the
//!   earlier one's read-back; docs/format.md says when that can happen.
//! - Every request is retried on 5xx, connection errors and timeouts with exponential backoff
//!   and jitter (object_store's `RetryConfig`), with a bounded number in flight.
//!
//! Why a private tokio runtime with answers through a channel: the [`Backend`] trait is
//! synchronous, and its callers include the agent's tokio tasks, where `Runtime::block_on`
//! would panic. A calling thread only ever waits on a channel.

mod readahead;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::limit::LimitStore;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::backend::{Backend, MAX_WHOLE_OBJECT};
use super::location::{Credentials, S3Location};
use crate::error::{Error, Result};

/// Requests in flight at once per process (uploads of packs, ranged reads of the mount).
const MAX_REQUESTS: usize = 16;

/// Reads of packs fetch and cache aligned windows of this size. Why not exactly the blob:
/// every request is a round trip (tens of ms on a replicated store), and the next blob a
/// restore or a sequential mount read needs is almost always in the same window of the same
/// pack; why not the whole pack: a read of one small file should not fetch megabytes more.
pub const WINDOW: u64 = 1 << 20;

/// Objects deleted per request batch by `delete_many`.
const DELETE_BATCH: usize = 8;

/// A repository under a bucket prefix.
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    /// `prefix/` or empty.
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    name: String,
    /// Dropped with `shutdown_background` (see `Drop`), so `Option`.
    rt: Option<tokio::runtime::Runtime>,
    cache: Arc<RangeCache>,
    ahead: Arc<readahead::ReadAhead>,
}

impl S3Backend {
    /// Connects (lazily: no request is made here) to `loc` with `creds`.
    pub fn new(loc: &S3Location, creds: &Credentials) -> Result<S3Backend> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(&loc.region)
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(creds.secret.as_str())
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 6,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_secs(60))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(true),
            );
        if let Some(t) = &creds.token {
            b = b.with_token(t.as_str());
        }
        if let Some(e) = &loc.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        let s3 = b
            .build()
            .map_err(|e| Error::Invalid(format!("s3://{}: {e}", loc.bucket)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wayback-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 runtime", "s3", e))?;
        let prefix = if loc.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", loc.prefix)
        };
        Ok(S3Backend {
            store: Arc::new(LimitStore::new(s3, MAX_REQUESTS)),
            name: format!("s3://{}/{}", loc.bucket, loc.prefix),
            prefix,
            rt: Some(rt),
            cache: Arc::new(RangeCache::new(loc.cache_mib << 20)),
            ahead: Arc::default(),
        })
    }

    fn key(&self, path: &str) -> ObjPath {
        ObjPath::from(format!("{}{}", self.prefix, path.trim_start_matches('/')))
    }

    /// Runs `fut` on the private runtime and waits for its answer on a channel.
    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        path: &str,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| {
            Error::io(
                what,
                format!("{}/{path}", self.name),
                std::io::Error::other("the S3 request task ended without an answer"),
            )
        })
    }

    fn err(&self, what: &'static str, path: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => {
                Error::NotFound(format!("repository object {path}"))
            }
            e => Error::io(
                what,
                format!("{}/{path}", self.name),
                std::io::Error::other(short_message(&e.to_string())),
            ),
        }
    }

    fn put_bytes(&self, path: &str, data: &[u8]) -> Result<()> {
        let store = self.store.clone();
        let key = self.key(path);
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        self.run("put", path, async move { store.put(&key, payload).await })?
            .map(|_| ())
            .map_err(|e| self.err("put", path, e))
    }

    /// Window `w` of `path` (shorter at the object's end); `Corrupt` past the end.
    fn fetch_window(&self, path: &str, w: u64) -> Result<Bytes> {
        let store = self.store.clone();
        let key = self.key(path);
        let start = w * WINDOW;
        let r = self.run("get range", path, async move {
            let opts = GetOptions::new().with_range(Some(start..start + WINDOW));
            store.get_opts(&key, opts).await?.bytes().await
        })?;
        match r {
            Ok(b) => Ok(b),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::NotFound(format!("repository object {path}")))
            }
            // A window starting past the end is refused by the server (416) or object_store.
            Err(e) if is_bad_range(&e) => Err(Error::Corrupt(format!(
                "{path}: truncated (nothing at offset {start}): {e}"
            ))),
            Err(e) => Err(self.err("get range", path, e)),
        }
    }

    /// Starts fetching the windows after `w` of `path` in the background when the reader is
    /// sequential (see [`readahead`]); they land in the range cache.
    fn read_ahead(&self, path: &str, w: u64, len: usize) {
        let plan = self.ahead.advance(path, w, len, WINDOW as usize, |x| {
            self.cache.get(path, x).is_some()
        });
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        for (x, slot) in plan {
            let (store, key, cache, ahead) = (
                self.store.clone(),
                self.key(path),
                self.cache.clone(),
                self.ahead.clone(),
            );
            let path = path.to_string();
            rt.spawn(async move {
                let start = x * WINDOW;
                let opts = GetOptions::new().with_range(Some(start..start + WINDOW));
                let got = match store.get_opts(&key, opts).await {
                    Ok(r) => r.bytes().await.ok(),
                    Err(_) => None,
                };
                if let Some(b) = &got {
                    cache.insert(&path, x, b.clone());
                }
                ahead.finish(&path, x, &slot, got);
            });
        }
    }

    fn exists(&self, path: &str) -> Result<bool> {
        match self.size(path) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime (the agent's).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for S3Backend {
    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        self.put_bytes(path, data)
    }

    fn put_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        if self.exists(path)? {
            return Ok(false);
        }
        self.put_bytes(path, data)?;
        // Read-back: another writer's PUT of this name that landed after ours is seen here.
        let back = self.get(path)?;
        Ok(back == data)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let store = self.store.clone();
        let key = self.key(path);
        let r = self.run("get", path, async move {
            let r = store.get(&key).await?;
            if r.meta.size > MAX_WHOLE_OBJECT {
                return Ok(Err(r.meta.size));
            }
            r.bytes().await.map(Ok)
        })?;
        match r.map_err(|e| self.err("get", path, e))? {
            Ok(b) => Ok(b.to_vec()),
            Err(size) => Err(Error::Corrupt(format!(
                "{path}: {size} bytes, larger than any object read whole"
            ))),
        }
    }

    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let truncated = |have: &str| {
            Error::Corrupt(format!(
                "{path}: truncated (wanted {len} bytes at offset {offset}{have})"
            ))
        };
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| truncated(""))?;
        if len == 0 {
            return Ok(Vec::new());
        }
        // Whole aligned windows, each fetched once and cached: a blob needs one or a few.
        let (first, last) = (offset / WINDOW, (end - 1) / WINDOW);
        if last - first > (super::backend::MAX_WHOLE_OBJECT / WINDOW) {
            return Err(truncated(", more than any blob"));
        }
        let mut out = Vec::with_capacity(len);
        for w in first..=last {
            let win = match self.cache.get(path, w) {
                Some(b) => b,
                None => match self.ahead.wait(path, w).or_else(|| self.cache.get(path, w)) {
                    Some(b) => b,
                    None => {
                        let b = self.fetch_window(path, w)?;
                        self.cache.insert(path, w, b.clone());
                        b
                    }
                },
            };
            self.read_ahead(path, w, win.len());
            let (ws, we) = (w * WINDOW, w * WINDOW + win.len() as u64);
            let (from, to) = (offset.max(ws), end.min(we));
            if from >= to || (to < end && win.len() as u64 != WINDOW) {
                return Err(truncated(&format!(", the object has {we}")));
            }
            out.extend_from_slice(&win[(from - ws) as usize..(to - ws) as usize]);
        }
        if out.len() != len {
            return Err(truncated(""));
        }
        Ok(out)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let store = self.store.clone();
        let rel = dir.trim_matches('/');
        let key = self.key(rel);
        let r = self.run("list", dir, async move {
            store.list_with_delimiter(Some(&key)).await
        })?;
        let r = r.map_err(|e| self.err("list", dir, e))?;
        let mut out: Vec<String> = r
            .common_prefixes
            .iter()
            .chain(r.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn size(&self, path: &str) -> Result<u64> {
        let store = self.store.clone();
        let key = self.key(path);
        self.run("stat", path, async move { store.head(&key).await })?
            .map(|m| m.size)
            .map_err(|e| self.err("stat", path, e))
    }

    fn modified(&self, path: &str) -> Result<Option<i64>> {
        let store = self.store.clone();
        let key = self.key(path);
        self.run("stat", path, async move { store.head(&key).await })?
            .map(|m| Some(m.last_modified.timestamp()))
            .map_err(|e| self.err("stat", path, e))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.delete_many(&[path.to_string()])
    }

    fn delete_many(&self, paths: &[String]) -> Result<()> {
        self.cache.forget(paths);
        let store = self.store.clone();
        let keys: Vec<ObjPath> = paths.iter().map(|p| self.key(p)).collect();
        let first = paths.first().cloned().unwrap_or_default();
        let r = self.run("delete", &first, async move {
            let results = futures::stream::iter(keys)
                .map(|k| {
                    let store = store.clone();
                    async move {
                        match store.delete(&k).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err((k.to_string(), e)),
                        }
                    }
                })
                .buffer_unordered(DELETE_BATCH)
                .collect::<Vec<_>>()
                .await;
            results
                .into_iter()
                .collect::<std::result::Result<Vec<()>, _>>()
        })?;
        r.map(|_| ()).map_err(|(k, e)| self.err("delete", &k, e))
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }
}

/// object_store's message without its repetition (its `Display` appends the source, which
/// says the same again) and with the server's XML escapes undone.
fn short_message(m: &str) -> String {
    let n = m.len().saturating_sub(2) / 2;
    let m = match (m.get(..n), m.get(n..n + 2), m.get(n + 2..)) {
        (Some(a), Some(": "), Some(b)) if a == b => a,
        _ => m,
    };
    m.replace("&quot;", "\"").replace("&amp;", "&")
}

/// True for the server's or object_store's refusal of a range outside the object.
fn is_bad_range(e: &object_store::Error) -> bool {
    let m = e.to_string();
    m.contains("416") || m.contains("Range")
}

/// A bounded, least-recently-used cache of pack ranges read over the network.
///
/// Why: the mount reads the same blobs again when a file is opened twice or a directory
/// listed again, and each refetch is a round trip to the store. Entries are [`WINDOW`]s of
/// packs, so a read of one file fetches only the windows holding its blobs.
struct RangeCache {
    inner: Mutex<RangeCacheInner>,
    budget: usize,
}

struct RangeCacheInner {
    map: lru::LruCache<(String, u64), Bytes>,
    bytes: usize,
}

impl RangeCache {
    fn new(budget: usize) -> RangeCache {
        RangeCache {
            inner: Mutex::new(RangeCacheInner {
                map: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    fn get(&self, path: &str, window: u64) -> Option<Bytes> {
        let mut c = self.inner.lock().expect("range cache poisoned");
        c.map.get(&(path.to_string(), window)).cloned()
    }

    fn insert(&self, path: &str, window: u64, b: Bytes) {
        if b.len() > self.budget {
            return;
        }
        let mut c = self.inner.lock().expect("range cache poisoned");
        let n = b.len();
        if let Some(old) = c.map.put((path.to_string(), window), b) {
            c.bytes -= old.len();
        }
        c.bytes += n;
        while c.bytes > self.budget {
            match c.map.pop_lru() {
                Some((_, old)) => c.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn forget(&self, paths: &[String]) {
        let mut c = self.inner.lock().expect("range cache poisoned");
        let gone: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
        let keys: Vec<(String, u64)> = c
            .map
            .iter()
            .filter(|((p, _), _)| gone.contains(p.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(old) = c.map.pop(&k) {
                c.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_store_messages_are_shown_once() {
        assert_eq!(
            short_message("E: x &quot;y&quot;: E: x &quot;y&quot;"),
            "E: x \"y\""
        );
        assert_eq!(short_message("plain: message"), "plain: message");
    }

    #[test]
    fn the_range_cache_stays_within_its_budget_and_forgets_deleted_packs() {
        let c = RangeCache::new(100);
        for i in 0..10u64 {
            c.insert("packs/aa/x", i, Bytes::from(vec![i as u8; 20]));
        }
        let inner = c.inner.lock().unwrap();
        assert!(inner.bytes <= 100, "{}", inner.bytes);
        drop(inner);
        assert!(c.get("packs/aa/x", 0).is_none(), "oldest evicted");
        assert_eq!(c.get("packs/aa/x", 9).unwrap()[0], 9);
        c.insert("packs/aa/y", 0, Bytes::from(vec![0u8; 101]));
        assert!(
            c.get("packs/aa/y", 0).is_none(),
            "larger than the budget: not kept"
        );
        c.forget(&["packs/aa/x".to_string()]);
        assert!(c.get("packs/aa/x", 9).is_none());
        assert_eq!(c.inner.lock().unwrap().bytes, 0);
    }
}
