//! A small etcd v3 client over etcd's JSON gateway (HTTP/1.1, `/v3/...`), behind [`Kv`].
//!
//! Why not the `etcd-client` crate: it is gRPC (tonic) and needs `protoc` at build time, an
//! async runtime in every command, and ~80 crates; netwright needs eight calls (range, put,
//! delete, txn, lease grant/keepalive/revoke, watch), each one JSON request. etcd 3.4 (Debian's
//! `etcd-server`) serves all of them on its client port; `/v3/watch` streams one JSON object per
//! line. Keys and values travel base64-encoded; 64-bit numbers as strings.
//!
//! Every call has short timeouts: a host cut off from etcd must fail fast with a clear error,
//! never hang a `run`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// Past one lost SYN (its retransmission comes after a second), short of a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);
const IO_TIMEOUT: Duration = Duration::from_millis(3000);

/// One key as etcd has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A watch event: a put (with the new value) or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete(String),
}

/// A condition of a transaction.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key was last modified at this revision (0: it does not exist).
    ModRevision(String, i64),
}

/// An operation of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put { key: String, value: Vec<u8>, lease: i64 },
    Delete(String),
}

/// What netwright needs from etcd. [`Gateway`] is the real one.
pub trait Kv {
    /// Every key under `prefix`, and the store's revision they were read at.
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)>;
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<()>;
    fn delete(&self, key: &str) -> Result<()>;
    /// All `ops` if every compare holds; returns whether they did.
    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool>;
    /// A lease of `ttl` seconds; its id.
    fn grant(&self, ttl: i64) -> Result<i64>;
    /// Renews a lease; false when it has expired (its keys are gone).
    fn keepalive(&self, lease: i64) -> Result<bool>;
    fn revoke(&self, lease: i64) -> Result<()>;
}

/// etcd's JSON gateway at one endpoint (`http://HOST:PORT`).
#[derive(Debug, Clone)]
pub struct Gateway {
    pub url: String,
    addr: SocketAddr,
    host: String,
}

impl Gateway {
    pub fn new(url: &str) -> Result<Gateway> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("etcd endpoint {url:?}: give it as http://HOST:PORT (https is not supported yet)")
        })?;
        let host = rest.trim_end_matches('/').to_string();
        let hostport = if host.contains(':') { host.clone() } else { format!("{host}:2379") };
        let addr = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| format!("etcd endpoint {url:?}: cannot resolve {hostport}"))?;
        Ok(Gateway { url: url.trim_end_matches('/').to_string(), addr, host })
    }

    fn connect(&self) -> Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .with_context(|| format!("etcd at {} is unreachable", self.url))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    fn send(&self, s: &mut TcpStream, path: &str, body: &Value) -> Result<()> {
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            body.len()
        );
        s.write_all(req.as_bytes()).with_context(|| format!("sending to etcd at {}", self.url))
    }

    /// One request, one JSON answer.
    fn call(&self, path: &str, body: Value) -> Result<Value> {
        let mut s = self.connect()?;
        self.send(&mut s, path, &body)?;
        let mut r = BufReader::new(s);
        let (status, chunked, length) =
            read_head(&mut r).with_context(|| format!("reading etcd's answer to {path}"))?;
        let mut bytes = Vec::new();
        if chunked {
            Chunked { inner: &mut r, left: 0, done: false }.read_to_end(&mut bytes)?;
        } else if let Some(n) = length {
            bytes.resize(n, 0);
            r.read_exact(&mut bytes)?;
        } else {
            r.read_to_end(&mut bytes)?;
        }
        let v: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("etcd's answer to {path} is not JSON"))?;
        if status != 200 {
            let msg = v.get("message").or_else(|| v.get("error")).and_then(Value::as_str).unwrap_or("no message");
            bail!("etcd refused {path}: {msg} (HTTP {status})");
        }
        Ok(v)
    }

    /// Streams events under `prefix` from `revision` on, calling `f` for each batch until it
    /// returns false or the stream ends. Err(Compacted(rev)) when `revision` is compacted.
    pub fn watch(&self, prefix: &str, revision: i64, mut f: impl FnMut(Vec<Event>, i64) -> bool) -> Result<()> {
        let mut s = self.connect()?;
        // A watch is quiet for as long as nothing changes: no read timeout on it.
        s.set_read_timeout(None)?;
        let body = json!({"create_request": {
            "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": revision.to_string(), "progress_notify": true,
        }});
        self.send(&mut s, "/v3/watch", &body)?;
        let mut r = BufReader::new(s);
        let (status, chunked, _) = read_head(&mut r)?;
        if status != 200 {
            bail!("etcd refused the watch (HTTP {status})");
        }
        let mut lines: Box<dyn BufRead> = if chunked {
            Box::new(BufReader::new(Chunked { inner: &mut r, left: 0, done: false }))
        } else {
            Box::new(r)
        };
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                bail!("etcd closed the watch stream");
            }
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line.trim()).context("etcd's watch stream is not JSON")?;
            let res = v.get("result").unwrap_or(&v);
            let compacted = num(res.get("compact_revision"));
            if compacted > 0 {
                return Err(Compacted(compacted).into());
            }
            if res.get("canceled").and_then(Value::as_bool) == Some(true) {
                bail!("etcd canceled the watch");
            }
            let rev = num(res.get("header").and_then(|h| h.get("revision")));
            let events: Vec<Event> = res
                .get("events")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(event).collect())
                .unwrap_or_default();
            if !f(events, rev) {
                return Ok(());
            }
        }
    }
}

/// The watch started at a revision etcd has compacted away: list again.
#[derive(Debug)]
pub struct Compacted(pub i64);

impl std::fmt::Display for Compacted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "etcd compacted the history up to revision {}", self.0)
    }
}

impl std::error::Error for Compacted {}

impl Kv for Gateway {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let v =
            self.call("/v3/kv/range", json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))}))?;
        let rev = num(v.get("header").and_then(|h| h.get("revision")));
        Ok((kvs(&v), rev))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let v = self.call("/v3/kv/range", json!({"key": B64.encode(key)}))?;
        Ok(kvs(&v).into_iter().next())
    }

    fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<()> {
        self.call("/v3/kv/put", put_body(key, value, lease)).map(drop)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.call("/v3/kv/deleterange", json!({"key": B64.encode(key)})).map(drop)
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::Absent(k) => {
                    json!({"target": "CREATE", "key": B64.encode(k), "create_revision": "0", "result": "EQUAL"})
                }
                Compare::ModRevision(k, r) => {
                    json!({"target": "MOD", "key": B64.encode(k), "mod_revision": r.to_string(), "result": "EQUAL"})
                }
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => json!({"request_put": put_body(key, value, *lease)}),
                Op::Delete(k) => json!({"request_delete_range": {"key": B64.encode(k)}}),
            })
            .collect();
        let v = self.call("/v3/kv/txn", json!({"compare": compare, "success": success}))?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    fn grant(&self, ttl: i64) -> Result<i64> {
        let v = self.call("/v3/lease/grant", json!({"TTL": ttl.to_string()}))?;
        let id = num(v.get("ID"));
        if id == 0 {
            bail!("etcd granted no lease: {v}");
        }
        Ok(id)
    }

    fn keepalive(&self, lease: i64) -> Result<bool> {
        let v = self.call("/v3/lease/keepalive", json!({"ID": lease.to_string()}))?;
        Ok(num(v.get("result").and_then(|r| r.get("TTL"))) > 0)
    }

    fn revoke(&self, lease: i64) -> Result<()> {
        self.call("/v3/lease/revoke", json!({"ID": lease.to_string()})).map(drop)
    }
}

fn put_body(key: &str, value: &[u8], lease: i64) -> Value {
    let mut b = json!({"key": B64.encode(key), "value": B64.encode(value)});
    if lease != 0 {
        b["lease"] = Value::String(lease.to_string());
    }
    b
}

/// The end of the key range holding every key that starts with `prefix`.
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

/// etcd writes 64-bit numbers as JSON strings; small ones may come as numbers.
fn num(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv(v: &Value) -> Option<KeyValue> {
    let key = B64.decode(v.get("key")?.as_str()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => B64.decode(s).ok()?,
        None => Vec::new(),
    };
    Some(KeyValue {
        key: String::from_utf8(key).ok()?,
        value,
        create_revision: num(v.get("create_revision")),
        mod_revision: num(v.get("mod_revision")),
        lease: num(v.get("lease")),
    })
}

fn kvs(v: &Value) -> Vec<KeyValue> {
    v.get("kvs").and_then(Value::as_array).map(|a| a.iter().filter_map(kv).collect()).unwrap_or_default()
}

fn event(v: &Value) -> Option<Event> {
    let kv = kv(v.get("kv")?)?;
    Some(match v.get("type").and_then(Value::as_str) {
        Some("DELETE") => Event::Delete(kv.key),
        _ => Event::Put(kv),
    })
}

/// Status line and the headers that matter: (status, chunked, content length).
fn read_head(r: &mut impl BufRead) -> Result<(u16, bool, Option<usize>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", line.trim()))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse().ok();
        }
    }
    Ok((status, chunked, length))
}

/// A reader over an HTTP/1.1 chunked body, yielding data as each chunk arrives.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // The CRLF ending the previous chunk, then the size line.
            while line.trim().is_empty() {
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = self.left.min(buf.len());
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        self.left -= got;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked { inner: &body[..], left: 0, done: false }.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn numbers_come_as_strings_or_numbers() {
        assert_eq!(num(Some(&json!("7587883004224423690"))), 7587883004224423690);
        assert_eq!(num(Some(&json!(12))), 12);
        assert_eq!(num(None), 0);
    }
}
