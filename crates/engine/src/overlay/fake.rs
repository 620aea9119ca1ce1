//! An in-memory etcd for unit tests: revisions, compare-and-swap transactions and leases as
//! etcd has them, so the overlay's cluster logic is tested without a server.

use std::cell::RefCell;
use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::etcd::{Compare, KeyValue, Kv, Op};

#[derive(Default)]
pub struct FakeKv {
    inner: RefCell<State>,
}

#[derive(Default)]
struct State {
    rev: i64,
    keys: BTreeMap<String, KeyValue>,
    leases: Vec<i64>,
}

impl State {
    fn put(&mut self, key: &str, value: &[u8], lease: i64) -> Result<()> {
        if lease != 0 && !self.leases.contains(&lease) {
            bail!("etcd refused /v3/kv/put: etcdserver: requested lease not found (HTTP 500)");
        }
        self.rev += 1;
        let create_revision = self.keys.get(key).map(|k| k.create_revision).unwrap_or(self.rev);
        self.keys.insert(
            key.to_string(),
            KeyValue { key: key.into(), value: value.to_vec(), create_revision, mod_revision: self.rev, lease },
        );
        Ok(())
    }
}

impl FakeKv {
    /// A lease expiring: its keys go, as etcd deletes them.
    pub fn expire(&self, lease: i64) {
        let mut s = self.inner.borrow_mut();
        s.leases.retain(|l| *l != lease);
        s.keys.retain(|_, kv| kv.lease != lease);
        s.rev += 1;
    }
}

impl Kv for FakeKv {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let s = self.inner.borrow();
        Ok((s.keys.values().filter(|kv| kv.key.starts_with(prefix)).cloned().collect(), s.rev))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.inner.borrow().keys.get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<()> {
        self.inner.borrow_mut().put(key, value, lease)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let mut s = self.inner.borrow_mut();
        if s.keys.remove(key).is_some() {
            s.rev += 1;
        }
        Ok(())
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool> {
        let mut s = self.inner.borrow_mut();
        let holds = compares.iter().all(|c| match c {
            Compare::Absent(k) => !s.keys.contains_key(k),
            Compare::ModRevision(k, r) => s.keys.get(k).map(|kv| kv.mod_revision).unwrap_or(0) == *r,
        });
        if !holds {
            return Ok(false);
        }
        for o in ops {
            if let Op::Put { lease, .. } = o
                && *lease != 0
                && !s.leases.contains(lease)
            {
                bail!("etcd refused /v3/kv/txn: etcdserver: requested lease not found (HTTP 500)");
            }
        }
        for o in ops {
            match o {
                Op::Put { key, value, lease } => s.put(key, value, *lease)?,
                Op::Delete(k) => {
                    s.keys.remove(k);
                }
            }
        }
        Ok(true)
    }

    fn grant(&self, _ttl: i64) -> Result<i64> {
        let mut s = self.inner.borrow_mut();
        let id = 7000 + s.leases.len() as i64 + s.rev;
        s.leases.push(id);
        Ok(id)
    }

    fn keepalive(&self, lease: i64) -> Result<bool> {
        Ok(self.inner.borrow().leases.contains(&lease))
    }

    fn revoke(&self, lease: i64) -> Result<()> {
        self.expire(lease);
        Ok(())
    }
}
