//! A small blocking client for etcd's v3 HTTP/JSON gateway.
//!
//! etcd serves its gRPC API as JSON under `/v3/...` (etcd 3.4, as Debian 12
//! ships it; 3.5 serves the same paths). This client speaks only the five
//! calls rdaemon needs: `lease/grant`, `lease/keepalive`, `lease/revoke`,
//! `lease/timetolive`, `kv/txn` and `kv/range`. The gateway's quirks are
//! handled here and nowhere else:
//!
//! - keys and values are base64 in both directions;
//! - 64-bit integers (revisions, lease IDs, TTLs) are JSON *strings*;
//! - fields at their default value are omitted: a txn whose compare failed
//!   has no `succeeded`, a keep-alive of a lease that no longer exists has
//!   no `TTL`, an empty range has no `kvs`;
//! - `lease/keepalive` is a gRPC stream, so its answer is wrapped in
//!   `{"result": ...}`;
//! - an etcd error is a non-200 status with `{"error", "message", "code"}`
//!   (`code` is the gRPC code: 5 = not found). A non-200 answer without that
//!   body comes from something that is not an etcd v3 gateway.
//!
//! Every request has a deadline (connect and overall). Endpoints are tried
//! in order, starting with the one that answered last; the next one is tried
//! when one cannot be reached or is not an etcd gateway. An error names each
//! endpoint tried and why it failed.
//!
//! `https://` endpoints need the cargo feature `etcd-tls` (rustls with the
//! system's root certificates); without it they are refused with a message
//! that says so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// How long to wait for an answer from one endpoint at most, whatever the
/// caller's deadline.
const MAX_CALL: Duration = Duration::from_secs(5);

/// Longest answer accepted from etcd (a range of a few thousand slots).
const MAX_BODY: u64 = 16 << 20;

/// What went wrong talking to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint could answer: the text names each one and its cause.
    Unavailable(String),
    /// etcd answered with an error (gRPC `code`, message).
    Etcd { code: i64, message: String },
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unavailable(s) => f.write_str(s),
            EtcdError::Etcd { code, message } => write!(f, "etcd refused: {message} (code {code})"),
        }
    }
}

/// gRPC's NOT_FOUND, as etcd returns for an unknown lease.
pub const CODE_NOT_FOUND: i64 = 5;

/// One key as `kv/range` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// 0 when the key has no lease.
    pub lease: i64,
}

/// A blocking etcd v3 gateway client over one or more endpoints.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    call_timeout: Duration,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
}

impl Client {
    /// A client for `endpoints` (`http://host:port`, a trailing `/` is
    /// ignored) whose calls each wait at most `call_timeout` per endpoint.
    ///
    /// Errors: no endpoint, or one that is not `http://` (or `https://`
    /// with the `etcd-tls` feature); the text names it.
    pub fn new(endpoints: &[String], call_timeout: Duration) -> Result<Client, String> {
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        let mut clean = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let e = e.trim().trim_end_matches('/');
            let tls = e.starts_with("https://");
            let host = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            if host.is_none_or(str::is_empty) {
                return Err(format!(
                    "{e:?}: not an etcd endpoint URL (expected http://HOST:PORT)"
                ));
            }
            if tls && !cfg!(feature = "etcd-tls") {
                return Err(format!(
                    "{e}: https endpoints need rdaemon built with the cargo feature etcd-tls"
                ));
            }
            clean.push(e.to_string());
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent("rdaemon")
            .max_idle_connections_per_host(2)
            .max_idle_age(Duration::from_secs(30));
        #[cfg(feature = "etcd-tls")]
        let config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        );
        Ok(Client {
            endpoints: clean,
            agent: config.build().into(),
            call_timeout: call_timeout.min(MAX_CALL),
            preferred: AtomicUsize::new(0),
        })
    }

    /// The endpoints, as given (without a trailing `/`).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` on the first endpoint that answers before
    /// `deadline`, and returns etcd's JSON answer.
    fn call(&self, path: &str, body: &Value, deadline: Instant) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let text = body.to_string();
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &self.endpoints[i];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push(format!("{endpoint}: not tried, out of time"));
                continue;
            }
            let timeout = left.min(self.call_timeout);
            match self.call_one(endpoint, path, &text, timeout) {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Attempt::Etcd(e)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Err(e);
                }
                Err(Attempt::Failed(why)) => failures.push(format!("{endpoint}: {why}")),
            }
        }
        Err(EtcdError::Unavailable(failures.join("; ")))
    }

    fn call_one(
        &self,
        endpoint: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Value, Attempt> {
        let url = format!("{endpoint}{path}");
        let response = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body);
        let mut response = response.map_err(|e| Attempt::Failed(describe(&e, timeout)))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| Attempt::Failed(describe(&e, timeout)))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        match (status, parsed) {
            (200, Some(v)) if v.is_object() => Ok(v),
            (_, Some(v)) if v.get("code").is_some() && v.get("message").is_some() => {
                Err(Attempt::Etcd(EtcdError::Etcd {
                    code: v.get("code").and_then(Value::as_i64).unwrap_or(-1),
                    message: v
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                }))
            }
            (200, _) => Err(Attempt::Failed(format!(
                "not an etcd v3 JSON gateway (POST {path} answered 200 without a JSON object)"
            ))),
            (s, _) => Err(Attempt::Failed(format!(
                "not an etcd v3 JSON gateway (POST {path} answered HTTP {s})"
            ))),
        }
    }

    /// Grants a lease of `ttl_secs`; returns (lease ID, granted TTL in
    /// seconds). Blocks until `deadline` at most.
    pub fn grant(&self, ttl_secs: i64, deadline: Instant) -> Result<(i64, i64), EtcdError> {
        let v = self.call(
            "/v3/lease/grant",
            &json!({ "TTL": ttl_secs.to_string() }),
            deadline,
        )?;
        if let Some(err) = v
            .get("error")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            return Err(EtcdError::Etcd {
                code: -1,
                message: err.to_string(),
            });
        }
        let id = int(&v, "ID");
        let ttl = int(&v, "TTL");
        if id == 0 || ttl <= 0 {
            return Err(EtcdError::Unavailable(format!(
                "lease grant answered without a lease: {v}"
            )));
        }
        Ok((id, ttl))
    }

    /// Renews lease `id` once; returns the TTL etcd granted, 0 when the
    /// lease no longer exists (expired or revoked).
    pub fn keepalive(&self, id: i64, deadline: Instant) -> Result<i64, EtcdError> {
        let v = self.call(
            "/v3/lease/keepalive",
            &json!({ "ID": id.to_string() }),
            deadline,
        )?;
        let Some(result) = v.get("result") else {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map_or_else(|| v.to_string(), str::to_string);
            return Err(EtcdError::Etcd {
                code: v
                    .pointer("/error/grpc_code")
                    .and_then(Value::as_i64)
                    .unwrap_or(-1),
                message: msg,
            });
        };
        Ok(int(result, "TTL"))
    }

    /// Revokes lease `id`, deleting the keys attached to it. A lease that
    /// no longer exists is not an error.
    pub fn revoke(&self, id: i64, deadline: Instant) -> Result<(), EtcdError> {
        match self.call(
            "/v3/lease/revoke",
            &json!({ "ID": id.to_string() }),
            deadline,
        ) {
            Ok(_) => Ok(()),
            Err(EtcdError::Etcd { code, .. }) if code == CODE_NOT_FOUND => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The remaining and the granted TTL of lease `id`, in seconds; the
    /// remaining TTL is -1 when the lease no longer exists.
    pub fn time_to_live(&self, id: i64, deadline: Instant) -> Result<(i64, i64), EtcdError> {
        let v = self.call(
            "/v3/lease/timetolive",
            &json!({ "ID": id.to_string() }),
            deadline,
        )?;
        Ok((int(&v, "TTL"), int(&v, "grantedTTL")))
    }

    /// Creates `key` with `value` bound to `lease` only if the key does not
    /// exist (compare `create_revision == 0`), in one transaction. Returns
    /// the new key's create revision, or `None` when the key exists.
    pub fn create(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        deadline: Instant,
    ) -> Result<Option<i64>, EtcdError> {
        let k = B64.encode(key);
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.to_string() } }],
        });
        let v = self.call("/v3/kv/txn", &body, deadline)?;
        if v.get("succeeded").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        // The put's revision is the key's create revision; the txn header
        // carries the same number.
        let rev = v
            .pointer("/responses/0/response_put/header/revision")
            .map_or_else(
                || int(v.get("header").unwrap_or(&Value::Null), "revision"),
                as_int,
            );
        if rev <= 0 {
            return Err(EtcdError::Unavailable(format!(
                "txn succeeded without a revision: {v}"
            )));
        }
        Ok(Some(rev))
    }

    /// Every key that starts with `prefix`, in key order.
    pub fn range_prefix(
        &self,
        prefix: &[u8],
        deadline: Instant,
    ) -> Result<Vec<KeyValue>, EtcdError> {
        let body =
            json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) });
        self.range(&body, deadline)
    }

    /// The key `key`, if it exists.
    pub fn get(&self, key: &[u8], deadline: Instant) -> Result<Option<KeyValue>, EtcdError> {
        let body = json!({ "key": B64.encode(key) });
        Ok(self.range(&body, deadline)?.into_iter().next())
    }

    fn range(&self, body: &Value, deadline: Instant) -> Result<Vec<KeyValue>, EtcdError> {
        let v = self.call("/v3/kv/range", body, deadline)?;
        let Some(kvs) = v.get("kvs") else {
            return Ok(Vec::new());
        };
        let kvs = kvs.as_array().ok_or_else(|| {
            EtcdError::Unavailable(format!("range answered kvs that is not a list: {kvs}"))
        })?;
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: b64_field(kv, "key")?,
                    value: b64_field(kv, "value")?,
                    create_revision: int(kv, "create_revision"),
                    mod_revision: int(kv, "mod_revision"),
                    lease: int(kv, "lease"),
                })
            })
            .collect()
    }
}

enum Attempt {
    /// Try the next endpoint.
    Failed(String),
    /// etcd itself answered: final.
    Etcd(EtcdError),
}

/// Names a transport error the way an operator wants to read it.
fn describe(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("no answer within {} ms", timeout.as_millis()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        ureq::Error::Io(io) => format!("I/O error: {io}"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Protocol(p) => format!("not an etcd v3 JSON gateway (bad HTTP: {p})"),
        ureq::Error::BodyExceedsLimit(n) => format!("answer larger than {n} bytes"),
        other => other.to_string(),
    }
}

/// The gateway's int64: a JSON string, or (tolerated) a number; absent = 0.
fn int(v: &Value, field: &str) -> i64 {
    v.get(field).map_or(0, as_int)
}

fn as_int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64_field(v: &Value, field: &str) -> Result<Vec<u8>, EtcdError> {
    match v.get(field) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => B64
            .decode(s)
            .map_err(|e| EtcdError::Unavailable(format!("bad base64 in {field}: {e}"))),
        Some(other) => Err(EtcdError::Unavailable(format!(
            "{field} is not a base64 string: {other}"
        ))),
    }
}

/// The `range_end` that selects every key starting with `prefix`: the
/// prefix with its last byte below 0xff incremented (etcd's rule).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: "\0" means "to the end of the keyspace".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(
            prefix_end(b"/rdaemon/x/slot/"),
            b"/rdaemon/x/slot0".to_vec()
        );
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn gateway_integers() {
        let v = json!({"a": "42", "b": 7, "c": "x", "d": null});
        assert_eq!(int(&v, "a"), 42);
        assert_eq!(int(&v, "b"), 7);
        assert_eq!(int(&v, "c"), 0);
        assert_eq!(int(&v, "d"), 0);
        assert_eq!(int(&v, "missing"), 0);
    }

    #[test]
    fn endpoints_are_vetted() {
        let t = Duration::from_secs(1);
        assert!(Client::new(&[], t).is_err());
        assert!(Client::new(&["127.0.0.1:2379".into()], t).is_err());
        assert!(Client::new(&["http://".into()], t).is_err());
        let c = Client::new(&["http://127.0.0.1:2379/".into()], t).unwrap();
        assert_eq!(c.endpoints(), ["http://127.0.0.1:2379"]);
        if !cfg!(feature = "etcd-tls") {
            let e = Client::new(&["https://etcd:2379".into()], t).unwrap_err();
            assert!(e.contains("etcd-tls"), "{e}");
        }
    }
}
