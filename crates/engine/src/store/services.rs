//! Services and their backends' slots (see crate::services).

use std::net::Ipv4Addr;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::Tx;
use crate::model::{Backend, Service};

impl Tx<'_> {
    /// Cheap: whether any service exists (most hosts have none; nothing else to do then).
    pub fn has_services(&self) -> Result<bool> {
        Ok(self.0.prepare_cached("SELECT 1 FROM services LIMIT 1")?.exists([])?)
    }

    pub fn services(&self) -> Result<Vec<Service>> {
        let mut st = self.0.prepare_cached("SELECT record FROM services ORDER BY name")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| serde_json::from_str(&r.ok()?).ok()).collect())
    }

    /// A service by exact name, exact id, or unique id prefix.
    pub fn service(&self, reference: &str) -> Result<Option<Service>> {
        let mut st = self.0.prepare_cached("SELECT record FROM services WHERE name = ?1 OR id = ?1")?;
        let exact: Option<String> = st.query_row([reference], |r| r.get(0)).optional()?;
        let text = match exact {
            Some(t) => Some(t),
            None => {
                let mut st = self.0.prepare_cached("SELECT record FROM services WHERE id LIKE ?1 || '%' LIMIT 2")?;
                let found: Vec<String> = st.query_map([reference], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
                if found.len() == 1 { found.into_iter().next() } else { None }
            }
        };
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    pub fn insert_service(&self, s: &Service) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO services (id, name, network_id, vip, selector, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![s.id, s.name, s.network_id, s.vip.to_string(), s.selector, serde_json::to_string(s)?])?;
        Ok(())
    }

    fn services_where(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Service>> {
        let mut st = self.0.prepare_cached(sql)?;
        let rows = st.query_map(args, |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| serde_json::from_str(&r.ok()?).ok()).collect())
    }

    pub fn services_on(&self, network_id: &str) -> Result<Vec<Service>> {
        self.services_where("SELECT record FROM services WHERE network_id = ?1", [network_id])
    }

    /// The services on a network whose selector is this alias (indexed).
    pub fn services_selecting(&self, network_id: &str, alias: &str) -> Result<Vec<Service>> {
        self.services_where("SELECT record FROM services WHERE network_id = ?1 AND selector = ?2", [network_id, alias])
    }

    /// The services an endpoint is a backend of (indexed).
    pub fn services_backed_by(&self, endpoint_id: &str) -> Result<Vec<Service>> {
        self.services_where(
            "SELECT s.record FROM services s JOIN service_backends b ON b.service_id = s.id WHERE b.endpoint_id = ?1",
            [endpoint_id],
        )
    }

    pub fn delete_service(&self, id: &str) -> Result<()> {
        self.0.prepare_cached("DELETE FROM service_backends WHERE service_id = ?1")?.execute([id])?;
        self.0.prepare_cached("DELETE FROM services WHERE id = ?1")?.execute([id])?;
        Ok(())
    }

    /// Is the address a service's VIP on the network (IPAM must not hand it out)?
    pub fn vip_taken(&self, network_id: &str, ip: Ipv4Addr) -> Result<bool> {
        let mut st = self.0.prepare_cached("SELECT 1 FROM services WHERE network_id = ?1 AND vip = ?2")?;
        Ok(st.exists(params![network_id, ip.to_string()])?)
    }

    pub fn vips_on(&self, network_id: &str) -> Result<Vec<Ipv4Addr>> {
        let mut st = self.0.prepare_cached("SELECT vip FROM services WHERE network_id = ?1")?;
        let rows = st.query_map([network_id], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| r.ok()?.parse().ok()).collect())
    }

    /// A service's backends by slot.
    pub fn backends(&self, service_id: &str) -> Result<Vec<Backend>> {
        let mut st = self
            .0
            .prepare_cached("SELECT slot, ip, endpoint_id FROM service_backends WHERE service_id = ?1 ORDER BY slot")?;
        let rows =
            st.query_map([service_id], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        Ok(rows
            .filter_map(|r| {
                let (slot, ip, endpoint_id) = r.ok()?;
                Some(Backend { slot, ip: ip.parse().ok()?, endpoint_id })
            })
            .collect())
    }

    pub fn set_backend(&self, service_id: &str, b: &Backend) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO service_backends (service_id, slot, ip, endpoint_id) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![service_id, b.slot, b.ip.to_string(), b.endpoint_id])?;
        Ok(())
    }

    pub fn delete_backend(&self, service_id: &str, slot: u32) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM service_backends WHERE service_id = ?1 AND slot = ?2")?
            .execute(params![service_id, slot])?;
        Ok(())
    }
}
