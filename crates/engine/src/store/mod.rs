//! The store: networks, containers, endpoints and IP allocations in SQLite.
//!
//! WAL mode plus `BEGIN IMMEDIATE` for every write makes many netwright processes safe at
//! once (writers queue on the busy timeout instead of failing), and SQLite's journal makes
//! a kill -9 at any moment leave either the old or the new state, never half of one.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

mod remote;
mod services;

pub use crate::model::{Container, Endpoint, Network, RemoteEndpoint, State};
use crate::model::{Driver, Mapping, NetworkMode, Proto};
use crate::model::{Intent, Kind};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS networks (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    driver   TEXT NOT NULL,
    subnet   TEXT NOT NULL,
    gateway  TEXT NOT NULL,
    ip_range TEXT,
    subnet6  TEXT,                        -- dual stack: the IPv6 subnet (NULL: IPv4 only)
    gateway6 TEXT,
    bridge   TEXT NOT NULL UNIQUE,
    mtu      INTEGER NOT NULL,
    internal INTEGER NOT NULL DEFAULT 0,
    options  TEXT NOT NULL DEFAULT '{}',
    builtin  INTEGER NOT NULL DEFAULT 0,
    created  INTEGER NOT NULL,
    cursor   INTEGER NOT NULL DEFAULT 0   -- last offset handed out, so IPs are not reused at once
);
CREATE TABLE IF NOT EXISTS containers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    cmd           TEXT NOT NULL,          -- JSON array
    hostname      TEXT NOT NULL,
    state         TEXT NOT NULL,          -- created | running | exited
    pid           INTEGER,
    monitor_pid   INTEGER,
    monitor_start INTEGER,                -- start time of monitor_pid, to tell PID reuse apart
    exit_code     INTEGER,
    error         TEXT,
    auto_remove   INTEGER NOT NULL,
    detached      INTEGER NOT NULL,
    network_mode  TEXT NOT NULL,
    dns           TEXT NOT NULL DEFAULT '[]',  -- JSON array of --dns upstreams
    netns_source  TEXT,                   -- attached: the runtime's namespace (netwright attach)
    egress_rate   INTEGER,                -- bits/s out of the container (NULL: the network's, or none)
    ingress_rate  INTEGER,                -- bits/s into it
    created       INTEGER NOT NULL,
    started       INTEGER,
    finished      INTEGER
);
CREATE TABLE IF NOT EXISTS endpoints (
    id           TEXT PRIMARY KEY,
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    network_id   TEXT NOT NULL REFERENCES networks(id),
    ifname       TEXT NOT NULL,
    host_ifname  TEXT NOT NULL,
    ip           TEXT,                    -- NULL once released
    requested_ip TEXT,
    ip6          TEXT,                    -- on a dual-stack network; NULL once released
    requested_ip6 TEXT,
    mac          TEXT NOT NULL,
    aliases      TEXT NOT NULL DEFAULT '[]',   -- JSON array of --network-alias
    segment      INTEGER NOT NULL DEFAULT 0,   -- which of the network's bridges (plan::Segment)
    UNIQUE (network_id, ip)
);
-- Live endpoints (with an address) by segment: counting a network's segment loads, on
-- every attach, reads this index alone (a partial index: exited containers' rows are not
-- in it; host_ifname and ip answer the queries without the table: SQLite checks a
-- query's `ip IS NOT NULL` on a column of the index, not from its WHERE).
CREATE INDEX IF NOT EXISTS endpoints_live_by_segment ON endpoints(network_id, segment, host_ifname, ip) WHERE ip IS NOT NULL;
-- Lookups an attach or a release makes among every container: which one holds a
-- namespace (attached_to), which ones share a container's namespace (has_joiners).
CREATE INDEX IF NOT EXISTS containers_by_netns ON containers(monitor_start) WHERE netns_source IS NOT NULL;
CREATE INDEX IF NOT EXISTS containers_by_mode ON containers(network_mode);
CREATE INDEX IF NOT EXISTS endpoints_by_container ON endpoints(container_id);
CREATE UNIQUE INDEX IF NOT EXISTS endpoints_ip6 ON endpoints(network_id, ip6);
CREATE TABLE IF NOT EXISTS ports (
    container_id   TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    host_ip        TEXT NOT NULL,         -- '' = every address of the host
    host_port      INTEGER NOT NULL,
    proto          TEXT NOT NULL,
    container_port INTEGER NOT NULL,
    PRIMARY KEY (host_ip, host_port, proto)
);
CREATE INDEX IF NOT EXISTS ports_by_container ON ports(container_id);
-- Who holds a host port, whatever the host address (port_holder, on every -p).
CREATE INDEX IF NOT EXISTS ports_by_port ON ports(host_port, proto);
"#;

/// Operations in progress (see crate::recover): left behind only by a killed process.
const INTENTS: &str = r#"
CREATE TABLE IF NOT EXISTS intents (
    kind      TEXT NOT NULL,              -- create | remove | disconnect | network-rm
    target    TEXT NOT NULL,              -- container id, endpoint id or device name
    detail    TEXT NOT NULL DEFAULT '',
    pid       INTEGER NOT NULL,           -- the process doing it
    pid_start INTEGER NOT NULL,           -- and its start time, so PID reuse cannot fool us
    PRIMARY KEY (kind, target)
);
"#;
/// The other hosts' endpoints on overlay networks, mirrored from etcd (see crate::overlay).
const REMOTE: &str = r#"
CREATE TABLE IF NOT EXISTS remote_endpoints (
    id         TEXT PRIMARY KEY,
    network_id TEXT NOT NULL,
    record     TEXT NOT NULL              -- JSON: crate::model::RemoteEndpoint
);
"#;
/// Services (VIPs) and the slots of their backends (see crate::services).
const SERVICES: &str = r#"
CREATE TABLE IF NOT EXISTS services (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    network_id TEXT NOT NULL REFERENCES networks(id),
    vip        TEXT NOT NULL,
    selector   TEXT NOT NULL,             -- the alias that makes a container a backend
    record     TEXT NOT NULL              -- JSON: crate::model::Service
);
CREATE INDEX IF NOT EXISTS services_by_selector ON services(network_id, selector);
CREATE TABLE IF NOT EXISTS service_backends (
    service_id  TEXT NOT NULL,
    slot        INTEGER NOT NULL,         -- 0..N-1, dense: the index numgen picks
    ip          TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    PRIMARY KEY (service_id, slot)
);
CREATE INDEX IF NOT EXISTS backends_by_endpoint ON service_backends(endpoint_id);
"#;
/// How many endpoints holding an address each segment of each network has: every attach
/// asks (where does the new one go? which segment bridges does the firewall name?), and
/// counting them from the index cost ~2–5 ms at 10,000 containers. Kept by the store's
/// endpoint writes ([`Tx::insert_endpoint`], [`Tx::delete_endpoint`], [`Tx::mark_exited`],
/// [`Tx::delete_container`] — the only statements that add, drop or release an endpoint),
/// not by triggers: SQLite parses every trigger of the schema when a connection runs its
/// first statement, and the three that kept these counts were half of that, ~0.2 ms of
/// every command.
const LOADS: &str = r#"
CREATE TABLE IF NOT EXISTS segment_loads (
    network_id TEXT NOT NULL,
    segment    INTEGER NOT NULL,
    endpoints  INTEGER NOT NULL,
    PRIMARY KEY (network_id, segment)
) WITHOUT ROWID;
"#;
/// The counts taken again from the endpoints (a store from before they were kept).
const RECOUNT_LOADS: &str = "DELETE FROM segment_loads;
    INSERT INTO segment_loads SELECT network_id, segment, COUNT(*) FROM endpoints
        WHERE ip IS NOT NULL GROUP BY network_id, segment;";
const LOAD_ADD: &str = "INSERT INTO segment_loads VALUES (?1, ?2, 1)
    ON CONFLICT (network_id, segment) DO UPDATE SET endpoints = endpoints + 1";
const LOAD_SUB: &str = "UPDATE segment_loads SET endpoints = endpoints - 1 WHERE network_id = ?1 AND segment = ?2";
const LOAD_EMPTY: &str = "DELETE FROM segment_loads WHERE network_id = ?1 AND segment = ?2 AND endpoints <= 0";
const SCHEMA_VERSION: i64 = 13;

// The segment queries: each attach runs them, so none may count a network's endpoints
// (segment_loads keeps the counts; tests::per_attach_queries_search_an_index).
const SEGMENT_LOADS: &str = "SELECT segment, endpoints FROM segment_loads WHERE network_id = ?1 ORDER BY segment";
const ALL_SEGMENT_LOADS: &str = "SELECT network_id, segment, endpoints,
     (SELECT MIN(e.host_ifname) FROM endpoints e
      WHERE e.network_id = segment_loads.network_id AND e.segment = segment_loads.segment AND e.ip IS NOT NULL)
     FROM segment_loads ORDER BY network_id, segment";
// Likewise for the lookups among all containers an attach or a release makes.
const BY_ID_PREFIX: &str = "SELECT * FROM containers WHERE id >= ?1 AND id < ?1 || 'g' LIMIT 2";
const ATTACHED_TO: &str =
    "SELECT name FROM containers WHERE netns_source IS NOT NULL AND monitor_start = ?1 AND state != 'exited'";
const JOINERS: &str = "SELECT 1 FROM containers WHERE network_mode = 'container:' || ?1 AND state != 'exited'";
const PORT_HOLDER: &str = "SELECT c.name, p.host_ip, p.container_port FROM ports p
     JOIN containers c ON c.id = p.container_id WHERE p.host_port = ?1 AND p.proto = ?2";
const SEGMENT_IN_USE: &str =
    "SELECT 1 FROM endpoints WHERE network_id = ?1 AND segment = ?2 AND ip IS NOT NULL LIMIT 1";

pub struct Store {
    conn: Connection,
}

fn network_from_row(r: &Row) -> rusqlite::Result<Network> {
    let subnet: String = r.get("subnet")?;
    let gateway: String = r.get("gateway")?;
    let ip_range: Option<String> = r.get("ip_range")?;
    let options: String = r.get("options")?;
    Ok(Network {
        id: r.get("id")?,
        name: r.get("name")?,
        driver: Driver::parse(&r.get::<_, String>("driver")?).ok_or_else(|| bad_column("driver"))?,
        subnet: subnet.parse().map_err(|_| bad_column("subnet"))?,
        gateway: gateway.parse().map_err(|_| bad_column("gateway"))?,
        ip_range: ip_range.map(|s| s.parse()).transpose().map_err(|_| bad_column("ip_range"))?,
        subnet6: opt_parse(r, "subnet6")?,
        gateway6: opt_parse(r, "gateway6")?,
        bridge: r.get("bridge")?,
        mtu: r.get("mtu")?,
        internal: r.get("internal")?,
        options: serde_json::from_str(&options).map_err(|_| bad_column("options"))?,
        builtin: r.get("builtin")?,
        created: r.get("created")?,
        cursor: r.get("cursor")?,
    })
}

fn container_from_row(r: &Row) -> rusqlite::Result<Container> {
    let cmd: String = r.get("cmd")?;
    let state: String = r.get("state")?;
    Ok(Container {
        id: r.get("id")?,
        name: r.get("name")?,
        cmd: serde_json::from_str(&cmd).map_err(|_| bad_column("cmd"))?,
        hostname: r.get("hostname")?,
        state: State::parse(&state),
        pid: r.get("pid")?,
        monitor_pid: r.get("monitor_pid")?,
        monitor_start: r.get::<_, Option<i64>>("monitor_start")?.map(|v| v as u64),
        exit_code: r.get("exit_code")?,
        error: r.get("error")?,
        auto_remove: r.get("auto_remove")?,
        detached: r.get("detached")?,
        network_mode: NetworkMode::parse(&r.get::<_, String>("network_mode")?),
        dns: serde_json::from_str(&r.get::<_, String>("dns")?).map_err(|_| bad_column("dns"))?,
        netns_source: r.get("netns_source")?,
        egress_rate: r.get::<_, Option<i64>>("egress_rate")?.map(|v| v as u64),
        ingress_rate: r.get::<_, Option<i64>>("ingress_rate")?.map(|v| v as u64),
        created: r.get("created")?,
        started: r.get("started")?,
        finished: r.get("finished")?,
    })
}

fn endpoint_from_row(r: &Row) -> rusqlite::Result<Endpoint> {
    let ip: Option<String> = r.get("ip")?;
    let req: Option<String> = r.get("requested_ip")?;
    Ok(Endpoint {
        id: r.get("id")?,
        container_id: r.get("container_id")?,
        network_id: r.get("network_id")?,
        ifname: r.get("ifname")?,
        host_ifname: r.get("host_ifname")?,
        ip: ip.and_then(|s| s.parse().ok()),
        requested_ip: req.and_then(|s| s.parse().ok()),
        ip6: opt_parse(r, "ip6")?,
        requested_ip6: opt_parse(r, "requested_ip6")?,
        mac: r.get("mac")?,
        aliases: serde_json::from_str(&r.get::<_, String>("aliases")?).map_err(|_| bad_column("aliases"))?,
        segment: r.get("segment")?,
    })
}

/// A nullable column holding an address or a subnet.
fn opt_parse<T: std::str::FromStr>(r: &Row, col: &str) -> rusqlite::Result<Option<T>> {
    let v: Option<String> = r.get(col)?;
    v.map(|s| s.parse().map_err(|_| bad_column(col))).transpose()
}

fn bad_column(name: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("{name} holds a value netwright cannot read"))
}

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).with_context(|| format!("creating state root {}", root.display()))?;
        let path = root.join("netwright.db");
        crate::ctx::trace("store: opening");
        let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        crate::ctx::trace("store: file opened");
        conn.busy_timeout(Duration::from_secs(30))?;
        // Every statement a command runs stays compiled for the command's life: rusqlite
        // keeps 16 by default, fewer than an attach uses, and compiling SQL is a good part
        // of a short command's work.
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        crate::ctx::trace("store: pragmas set");
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        crate::ctx::trace("store: schema read");
        // WAL is a property of the database file: set once, when the store is made (every
        // command opens the store; setting it again each time cost ~0.3 ms of locking).
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        // Older stores gain the columns added since, in order.
        if version == 2 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                ALTER TABLE endpoints ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';
                ALTER TABLE containers ADD COLUMN dns TEXT NOT NULL DEFAULT '[]';
                PRAGMA user_version = 3; COMMIT;",
            )
            .context("upgrading the store's schema")?;
        }
        if version == 2 || version == 3 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                ALTER TABLE containers ADD COLUMN netns_source TEXT;
                PRAGMA user_version = 4; COMMIT;",
            )
            .context("upgrading the store's schema")?;
        }
        if (2..=4).contains(&version) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {INTENTS} PRAGMA user_version = 5; COMMIT;"))
                .context("upgrading the store's schema")?;
        }
        if (2..=5).contains(&version) {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                ALTER TABLE containers ADD COLUMN egress_rate INTEGER;
                ALTER TABLE containers ADD COLUMN ingress_rate INTEGER;
                PRAGMA user_version = 6; COMMIT;",
            )
            .context("upgrading the store's schema")?;
        }
        if (2..=6).contains(&version) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {REMOTE} PRAGMA user_version = 7; COMMIT;"))
                .context("upgrading the store's schema")?;
        }
        if (2..=7).contains(&version) {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                ALTER TABLE networks ADD COLUMN subnet6 TEXT;
                ALTER TABLE networks ADD COLUMN gateway6 TEXT;
                ALTER TABLE endpoints ADD COLUMN ip6 TEXT;
                ALTER TABLE endpoints ADD COLUMN requested_ip6 TEXT;
                CREATE UNIQUE INDEX IF NOT EXISTS endpoints_ip6 ON endpoints(network_id, ip6);
                PRAGMA user_version = 8; COMMIT;",
            )
            .context("upgrading the store's schema")?;
        }
        if (2..=8).contains(&version) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {SERVICES} PRAGMA user_version = 9; COMMIT;"))
                .context("upgrading the store's schema")?;
        }
        if (2..=9).contains(&version) {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                ALTER TABLE endpoints ADD COLUMN segment INTEGER NOT NULL DEFAULT 0;
                CREATE INDEX IF NOT EXISTS endpoints_by_segment ON endpoints(network_id, segment);
                PRAGMA user_version = 10; COMMIT;",
            )
            .context("upgrading the store's schema")?;
        }
        if (2..=10).contains(&version) {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                DROP INDEX IF EXISTS endpoints_by_segment;
                CREATE INDEX IF NOT EXISTS endpoints_live_by_segment
                    ON endpoints(network_id, segment, host_ifname, ip) WHERE ip IS NOT NULL;
                CREATE INDEX IF NOT EXISTS containers_by_netns ON containers(monitor_start)
                    WHERE netns_source IS NOT NULL;
                CREATE INDEX IF NOT EXISTS containers_by_mode ON containers(network_mode);
                CREATE INDEX IF NOT EXISTS ports_by_port ON ports(host_port, proto);
                PRAGMA user_version = 11; COMMIT;",
            )
            .context("upgrading the store's schema")?;
        }
        if (2..=12).contains(&version) {
            // 12 kept the loads by triggers (LOADS says why no longer).
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {LOADS}
                DROP TRIGGER IF EXISTS segment_loads_insert;
                DROP TRIGGER IF EXISTS segment_loads_delete;
                DROP TRIGGER IF EXISTS segment_loads_update;
                {RECOUNT_LOADS}
                PRAGMA user_version = 13; COMMIT;"
            ))
            .context("upgrading the store's schema")?;
        }
        if version < 2 {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} {INTENTS} {REMOTE} {SERVICES} {LOADS} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .context("creating the store's schema")?;
        }
        Ok(Store { conn })
    }

    /// SQLite's data_version: it moves when another connection commits (the live view's
    /// cheap "did anything change?").
    pub fn data_version(&self) -> Result<i64> {
        Ok(self.conn.pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// Runs `f` in a write transaction taken up front (BEGIN IMMEDIATE), so two processes
    /// never both read-then-write the same allocation.
    pub fn write<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&Tx(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// Read-only access (a deferred transaction gives a consistent snapshot).
    pub fn read<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction()?;
        let out = f(&Tx(&tx))?;
        tx.commit()?;
        Ok(out)
    }
}

/// Queries available inside a transaction.
pub struct Tx<'a>(&'a Transaction<'a>);

impl Tx<'_> {
    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut st = self.0.prepare_cached("SELECT * FROM networks ORDER BY created, name")?;
        let rows = st.query_map([], network_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A network by exact name, exact id, or unique id prefix.
    pub fn network(&self, reference: &str) -> Result<Option<Network>> {
        let mut st = self.0.prepare_cached("SELECT * FROM networks WHERE name = ?1 OR id = ?1")?;
        if let Some(n) = st.query_row([reference], network_from_row).optional()? {
            return Ok(Some(n));
        }
        let mut st = self.0.prepare_cached("SELECT * FROM networks WHERE id LIKE ?1 || '%' LIMIT 2")?;
        let found: Vec<Network> = st.query_map([reference], network_from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(if found.len() == 1 { found.into_iter().next() } else { None })
    }

    pub fn insert_network(&self, n: &Network) -> Result<()> {
        self.0.prepare_cached(
            "INSERT INTO networks (id, name, driver, subnet, gateway, ip_range, bridge, mtu, internal, options, builtin, created, cursor, subnet6, gateway6)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?.execute(params![
            n.id, n.name, n.driver.as_str(), n.subnet.to_string(), n.gateway.to_string(),
            n.ip_range.map(|r| r.to_string()), n.bridge, n.mtu, n.internal,
            serde_json::to_string(&n.options)?, n.builtin, n.created, n.cursor,
            n.subnet6.map(|s| s.to_string()), n.gateway6.map(|g| g.to_string())
        ])?;
        Ok(())
    }

    pub fn delete_network(&self, id: &str) -> Result<()> {
        self.0.execute("DELETE FROM endpoints WHERE network_id = ?1 AND ip IS NULL", [id])?;
        self.0.execute("DELETE FROM networks WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn set_cursor(&self, network_id: &str, cursor: u32) -> Result<()> {
        self.0.prepare_cached("UPDATE networks SET cursor = ?2 WHERE id = ?1")?.execute(params![network_id, cursor])?;
        Ok(())
    }

    /// Is the address in use on the network: a container's, or a service's VIP?
    pub fn ip_taken(&self, network_id: &str, ip: Ipv4Addr) -> Result<bool> {
        let mut st = self.0.prepare_cached(
            "SELECT 1 FROM endpoints WHERE network_id = ?1 AND ip = ?2
             UNION ALL SELECT 1 FROM services WHERE network_id = ?1 AND vip = ?2",
        )?;
        Ok(st.exists(params![network_id, ip.to_string()])?)
    }

    pub fn ip6_taken(&self, network_id: &str, ip: std::net::Ipv6Addr) -> Result<bool> {
        let mut st = self.0.prepare_cached("SELECT 1 FROM endpoints WHERE network_id = ?1 AND ip6 = ?2")?;
        Ok(st.exists(params![network_id, ip.to_string()])?)
    }

    /// Every address in use on a network.
    pub fn ips_in_use(&self, network_id: &str) -> Result<Vec<Ipv4Addr>> {
        let mut st = self.0.prepare_cached(
            "SELECT ip FROM endpoints WHERE network_id = ?1 AND ip IS NOT NULL
             UNION ALL SELECT vip FROM services WHERE network_id = ?1",
        )?;
        let rows = st.query_map([network_id], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| r.ok()?.parse().ok()).collect())
    }

    pub fn containers(&self) -> Result<Vec<Container>> {
        let mut st = self.0.prepare_cached("SELECT * FROM containers ORDER BY created DESC")?;
        let rows = st.query_map([], container_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn running_containers(&self) -> Result<Vec<Container>> {
        let mut st = self.0.prepare_cached("SELECT * FROM containers WHERE state != 'exited'")?;
        let rows = st.query_map([], container_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A container by exact name, exact id, or unique id prefix.
    pub fn container(&self, reference: &str) -> Result<Option<Container>> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        let mut st = self.0.prepare_cached("SELECT * FROM containers WHERE name = ?1 OR id = ?1")?;
        if let Some(c) = st.query_row([reference], container_from_row).optional()? {
            return Ok(Some(c));
        }
        if reference.len() < 3 || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        // A prefix of the id: a range of the primary key (ids are lowercase hexadecimal, so
        // every id starting with the prefix sorts before prefix + "g"); LIKE would scan.
        let mut st = self.0.prepare_cached(BY_ID_PREFIX)?;
        let prefix = reference.to_ascii_lowercase();
        let found: Vec<Container> = st.query_map([&prefix], container_from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(if found.len() == 1 { found.into_iter().next() } else { None })
    }

    /// Whether a live container shares `id`'s network namespace (container:<id>).
    pub fn has_joiners(&self, id: &str) -> Result<bool> {
        let mut st = self.0.prepare_cached(JOINERS)?;
        Ok(st.exists([id])?)
    }

    pub fn name_taken(&self, name: &str) -> Result<bool> {
        let mut st = self.0.prepare_cached("SELECT 1 FROM containers WHERE name = ?1")?;
        Ok(st.exists([name])?)
    }

    pub fn insert_container(&self, c: &Container) -> Result<()> {
        self.0.prepare_cached(
            "INSERT INTO containers (id, name, cmd, hostname, state, pid, monitor_pid, monitor_start, exit_code, error,
                                     auto_remove, detached, network_mode, dns, created, started, finished, netns_source,
                                     egress_rate, ingress_rate)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )?.execute(params![
            c.id, c.name, serde_json::to_string(&c.cmd)?, c.hostname, c.state.as_str(), c.pid,
            c.monitor_pid, c.monitor_start.map(|v| v as i64), c.exit_code, c.error, c.auto_remove,
            c.detached, c.network_mode.as_string(), serde_json::to_string(&c.dns)?, c.created, c.started, c.finished, c.netns_source,
            c.egress_rate.map(|v| v as i64), c.ingress_rate.map(|v| v as i64)
        ])?;
        Ok(())
    }

    /// A container's bandwidth limits (bits/s; None: the network's default, or none).
    pub fn set_rates(&self, id: &str, egress: Option<u64>, ingress: Option<u64>) -> Result<()> {
        self.0
            .prepare_cached("UPDATE containers SET egress_rate = ?2, ingress_rate = ?3 WHERE id = ?1")?
            .execute(params![id, egress.map(|v| v as i64), ingress.map(|v| v as i64)])?;
        Ok(())
    }

    /// `pid` is None for an attached container: it runs once its network is set up.
    pub fn mark_running(&self, id: &str, pid: Option<i32>, started: i64) -> Result<()> {
        self.0
            .prepare_cached("UPDATE containers SET state = 'running', pid = ?2, started = ?3 WHERE id = ?1")?
            .execute(params![id, pid, started])?;
        // Its creation is complete.
        self.end_intent(Kind::Create, id)?;
        Ok(())
    }

    /// Records the end of a container and frees its addresses, in one transaction.
    /// The name of the live container attached to the namespace with this inode.
    pub fn attached_to(&self, inode: u64) -> Result<Option<String>> {
        let mut st = self.0.prepare_cached(ATTACHED_TO)?;
        Ok(st.query_row([inode as i64], |r| r.get(0)).optional()?)
    }

    /// Records what this process is about to do (see crate::recover).
    pub fn begin_intent(&self, i: &Intent) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO intents (kind, target, detail, pid, pid_start) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![i.kind.as_str(), i.target, i.detail, i.pid, i.pid_start as i64])?;
        Ok(())
    }

    pub fn end_intent(&self, kind: Kind, target: &str) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM intents WHERE kind = ?1 AND target = ?2")?
            .execute(params![kind.as_str(), target])?;
        Ok(())
    }

    pub fn intents(&self) -> Result<Vec<Intent>> {
        let mut st = self.0.prepare_cached("SELECT kind, target, detail, pid, pid_start FROM intents")?;
        let rows = st.query_map([], |r| {
            let kind: String = r.get(0)?;
            Ok(Intent {
                kind: Kind::parse(&kind).ok_or_else(|| bad_column("kind"))?,
                target: r.get(1)?,
                detail: r.get(2)?,
                pid: r.get(3)?,
                pid_start: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn mark_exited(&self, id: &str, exit_code: i32, error: Option<&str>, finished: i64) -> Result<()> {
        self.0.prepare_cached(
            "UPDATE containers SET state = 'exited', exit_code = ?2, error = COALESCE(?3, error), finished = ?4 WHERE id = ?1",
        )?.execute(params![id, exit_code, error, finished])?;
        self.unload_container(id)?;
        self.0.prepare_cached("UPDATE endpoints SET ip = NULL, ip6 = NULL WHERE container_id = ?1")?.execute([id])?;
        self.0.prepare_cached("DELETE FROM ports WHERE container_id = ?1")?.execute([id])?;
        self.end_intent(Kind::Create, id)?;
        Ok(())
    }

    /// Deletes the container, its endpoints and ports with it (ON DELETE CASCADE).
    pub fn delete_container(&self, id: &str) -> Result<()> {
        self.unload_container(id)?;
        self.0.prepare_cached("DELETE FROM containers WHERE id = ?1")?.execute([id])?;
        self.0.prepare_cached("DELETE FROM intents WHERE target = ?1")?.execute([id])?;
        Ok(())
    }

    pub fn insert_endpoint(&self, e: &Endpoint) -> Result<()> {
        self.0.prepare_cached(
            "INSERT INTO endpoints (id, container_id, network_id, ifname, host_ifname, ip, requested_ip, mac, aliases, ip6, requested_ip6, segment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?.execute(params![
            e.id, e.container_id, e.network_id, e.ifname, e.host_ifname,
            e.ip.map(|i| i.to_string()), e.requested_ip.map(|i| i.to_string()), e.mac,
            serde_json::to_string(&e.aliases)?,
            e.ip6.map(|i| i.to_string()), e.requested_ip6.map(|i| i.to_string()), e.segment
        ])?;
        if e.ip.is_some() {
            self.0.prepare_cached(LOAD_ADD)?.execute(params![e.network_id, e.segment])?;
        }
        Ok(())
    }

    /// Takes the container's endpoints holding an address out of the segment loads (they
    /// are about to be released or deleted).
    fn unload_container(&self, container_id: &str) -> Result<()> {
        let live: Vec<(String, u32)> = {
            let mut st = self.0.prepare_cached(
                "SELECT network_id, segment FROM endpoints WHERE container_id = ?1 AND ip IS NOT NULL",
            )?;
            st.query_map([container_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
        };
        for (network_id, segment) in live {
            self.unload(&network_id, segment)?;
        }
        Ok(())
    }

    fn unload(&self, network_id: &str, segment: u32) -> Result<()> {
        self.0.prepare_cached(LOAD_SUB)?.execute(params![network_id, segment])?;
        self.0.prepare_cached(LOAD_EMPTY)?.execute(params![network_id, segment])?;
        Ok(())
    }

    pub fn endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        let mut st = self.0.prepare_cached("SELECT * FROM endpoints WHERE id = ?1")?;
        Ok(st.query_row([id], endpoint_from_row).optional()?)
    }

    /// How many endpoints holding an address each of a network's bridge segments has.
    pub fn segment_loads(&self, network_id: &str) -> Result<Vec<(u32, u32)>> {
        let mut st = self.0.prepare_cached(SEGMENT_LOADS)?;
        let rows = st.query_map([network_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// (network id, segment, endpoints, a host device name of it) for every segment with
    /// endpoints holding an address, of every network.
    pub fn all_segment_loads(&self) -> Result<Vec<(String, u32, u32, String)>> {
        let mut st = self.0.prepare_cached(ALL_SEGMENT_LOADS)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Does any endpoint holding an address sit on this segment of the network?
    pub fn segment_in_use(&self, network_id: &str, segment: u32) -> Result<bool> {
        let mut st = self.0.prepare_cached(SEGMENT_IN_USE)?;
        Ok(st.exists(params![network_id, segment])?)
    }

    pub fn endpoints_of(&self, container_id: &str) -> Result<Vec<Endpoint>> {
        let mut st = self.0.prepare_cached("SELECT * FROM endpoints WHERE container_id = ?1 ORDER BY ifname")?;
        let rows = st.query_map([container_id], endpoint_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Endpoints holding an address on a network (the containers attached to it now).
    pub fn active_endpoints_on(&self, network_id: &str) -> Result<Vec<Endpoint>> {
        let mut st = self.0.prepare_cached("SELECT * FROM endpoints WHERE network_id = ?1 AND ip IS NOT NULL")?;
        let rows = st.query_map([network_id], endpoint_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn all_endpoints(&self) -> Result<Vec<Endpoint>> {
        let mut st = self.0.prepare_cached("SELECT * FROM endpoints")?;
        let rows = st.query_map([], endpoint_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn delete_endpoint(&self, id: &str) -> Result<()> {
        let live: Option<(String, u32)> = self
            .0
            .prepare_cached("SELECT network_id, segment FROM endpoints WHERE id = ?1 AND ip IS NOT NULL")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((network_id, segment)) = live {
            self.unload(&network_id, segment)?;
        }
        self.0.prepare_cached("DELETE FROM endpoints WHERE id = ?1")?.execute([id])?;
        Ok(())
    }

    pub fn delete_ports(&self, container_id: &str) -> Result<()> {
        self.0.prepare_cached("DELETE FROM ports WHERE container_id = ?1")?.execute([container_id])?;
        Ok(())
    }

    pub fn insert_port(&self, container_id: &str, m: &Mapping) -> Result<()> {
        self.0.prepare_cached(
            "INSERT INTO ports (container_id, host_ip, host_port, proto, container_port) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?.execute(params![container_id, ip_key(m.host_ip), m.host_port, m.proto.as_str(), m.container_port])?;
        Ok(())
    }

    /// The container (name) already publishing a port that `m` would collide with.
    pub fn port_holder(
        &self,
        host_ip: Option<IpAddr>,
        host_port: u16,
        proto: Proto,
    ) -> Result<Option<(String, Mapping)>> {
        let mut st = self.0.prepare_cached(PORT_HOLDER)?;
        let rows = st.query_map(params![host_port, proto.as_str()], |r| {
            let ip: String = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                Mapping { host_ip: ip.parse().ok(), host_port, container_port: r.get(2)?, proto },
            ))
        })?;
        for row in rows {
            let (name, m) = row?;
            if crate::ports::collides(m.host_ip, host_ip) {
                return Ok(Some((name, m)));
            }
        }
        Ok(None)
    }

    pub fn ports_of(&self, container_id: &str) -> Result<Vec<Mapping>> {
        let mut st = self.0.prepare_cached(
            "SELECT host_ip, host_port, proto, container_port FROM ports WHERE container_id = ?1 ORDER BY proto, container_port, host_ip")?;
        let rows = st.query_map([container_id], mapping_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every published port with the addresses of its container (first endpoint) and the
    /// container's name.
    pub fn active_ports(&self) -> Result<Vec<crate::firewall::Published>> {
        let mut st = self.0.prepare_cached(
            "SELECT p.host_ip, p.host_port, p.proto, p.container_port, e.ip, c.name, e.ip6 FROM ports p
             JOIN endpoints e ON e.container_id = p.container_id AND e.ifname = 'eth0'
             JOIN containers c ON c.id = p.container_id WHERE e.ip IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| {
            let ip: String = r.get(4)?;
            Ok(crate::firewall::Published {
                mapping: mapping_from_row(r)?,
                to: crate::firewall::Target {
                    ip: ip.parse().map_err(|_| bad_column("ip"))?,
                    ip6: opt_parse(r, "ip6")?,
                },
                owner: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn ip_key(ip: Option<IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_default()
}

fn mapping_from_row(r: &Row) -> rusqlite::Result<Mapping> {
    let ip: String = r.get(0)?;
    let proto: String = r.get(2)?;
    Ok(Mapping {
        host_ip: ip.parse().ok(),
        host_port: r.get(1)?,
        proto: Proto::parse(&proto).ok_or_else(|| bad_column("proto"))?,
        container_port: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a directory of its own that is removed however the test ends (a failed
    /// assertion unwinds through Drop).
    struct Scratch(std::path::PathBuf, Option<Store>);
    impl Scratch {
        fn new(what: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("netwright-{what}-{}", std::process::id()));
            let store = Store::open(&dir).expect("a fresh store");
            Scratch(dir, Some(store))
        }
        fn store(&self) -> &Store {
            self.1.as_ref().expect("open until dropped")
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            drop(self.1.take());
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn plan(store: &Store, sql: &str) -> String {
        let mut st = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("a valid query");
        let unbound = vec![rusqlite::types::Null; st.parameter_count()];
        let rows = st.query_map(rusqlite::params_from_iter(unbound), |r| r.get::<_, String>(3)).expect("a plan");
        rows.map(|r| r.expect("a plan row")).collect::<Vec<_>>().join("; ")
    }

    /// The store's endpoint writes keep segment_loads equal to counting the endpoints:
    /// inserts (with and without an address), releases (twice: the second changes
    /// nothing), deletes of one endpoint and of containers (their endpoints go by cascade).
    #[test]
    fn segment_loads_follow_the_endpoints() {
        let scratch = Scratch::new("store-loads");
        let c = &scratch.store().conn;
        type Loads = Vec<(String, i64, i64)>;
        let counted = |c: &Connection| -> (Loads, Loads) {
            let q = |sql: &str| -> Loads {
                let mut st = c.prepare(sql).unwrap();
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
            };
            (
                q("SELECT network_id, segment, endpoints FROM segment_loads ORDER BY 1, 2"),
                q(
                    "SELECT network_id, segment, COUNT(*) FROM endpoints WHERE ip IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
                ),
            )
        };
        c.execute_batch(
            "INSERT INTO networks (id, name, driver, subnet, gateway, bridge, mtu, created)
                VALUES ('n1', 'one', 'bridge', '10.1.0.0/16', '10.1.0.1', 'b1', 1500, 0),
                       ('n2', 'two', 'bridge', '10.2.0.0/16', '10.2.0.1', 'b2', 1500, 0);",
        )
        .unwrap();
        let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate).unwrap();
        let t = Tx(&tx);
        for i in 0..40u8 {
            c.execute(
                "INSERT INTO containers (id, name, cmd, hostname, state, auto_remove, detached, network_mode, created)
                    VALUES (?1, ?1, '[]', 'h', 'running', 0, 0, 'one', 0)",
                [format!("c{i}")],
            )
            .unwrap();
            let (net, segment) = if i % 3 == 0 { ("n2", 0) } else { ("n1", u32::from(i % 4)) };
            t.insert_endpoint(&Endpoint {
                id: format!("e{i}"),
                container_id: format!("c{i}"),
                network_id: net.to_string(),
                ifname: "eth0".to_string(),
                host_ifname: format!("e{i}"),
                // Every seventh without an address (a container made but never started).
                ip: (i % 7 != 6).then(|| std::net::Ipv4Addr::new(10, 9, 0, i)),
                requested_ip: None,
                ip6: None,
                requested_ip6: None,
                mac: "m".to_string(),
                aliases: vec![],
                segment,
            })
            .unwrap();
        }
        let (kept, truth) = counted(c);
        assert_eq!(kept, truth);
        assert!(truth.len() > 3, "the test spreads endpoints over segments: {truth:?}");
        for id in ["c1", "c2", "c5", "c2", "c6"] {
            t.mark_exited(id, 0, None, 0).unwrap();
        }
        for id in ["e9", "e13", "e1"] {
            t.delete_endpoint(id).unwrap();
        }
        for id in ["c10", "c11", "c3", "c5"] {
            t.delete_container(id).unwrap();
        }
        let (kept, truth) = counted(c);
        assert_eq!(kept, truth);
        for i in 0..40 {
            t.delete_container(&format!("c{i}")).unwrap();
        }
        assert_eq!(counted(c).0, vec![], "no row left for empty segments");
        tx.commit().unwrap();
    }

    /// A store of schema 12 (loads kept by triggers) is upgraded: the triggers
    /// go, the counts are taken again.
    #[test]
    fn a_store_with_load_triggers_loses_them() {
        let scratch = Scratch::new("store-triggers");
        let c = &scratch.store().conn;
        c.execute_batch(
            "CREATE TRIGGER segment_loads_insert AFTER INSERT ON endpoints BEGIN SELECT 1; END;
             INSERT INTO segment_loads VALUES ('gone', 3, 9);
             PRAGMA user_version = 12;",
        )
        .unwrap();
        let again = Store::open(&scratch.0).unwrap();
        let q = |sql: &str| -> i64 { again.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(q("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'trigger'"), 0);
        assert_eq!(q("SELECT COUNT(*) FROM segment_loads"), 0, "recounted from the endpoints (none)");
        assert_eq!(q("PRAGMA user_version"), SCHEMA_VERSION);
    }

    /// With 10,000 containers on a network, a table scan per attach was a noticeable part of
    /// it: the segment queries must be answered from the partial index or the kept counts.
    #[test]
    fn per_attach_queries_search_an_index() {
        let scratch = Scratch::new("store-plans");
        let store = scratch.store();
        for sql in [ALL_SEGMENT_LOADS, SEGMENT_IN_USE] {
            let p = plan(store, sql);
            assert!(p.contains("COVERING INDEX endpoints_live_by_segment"), "{sql}\n→ {p}");
        }
        for sql in [SEGMENT_LOADS, ALL_SEGMENT_LOADS] {
            let p = plan(store, sql);
            let counts = p.contains("SCAN endpoints") || p.contains("endpoints_live_by_segment (network_id=?)");
            assert!(p.contains("segment_loads") && !counts, "no endpoint is counted: {sql}\n→ {p}");
        }
        for (sql, index) in [
            (BY_ID_PREFIX, "INDEX sqlite_autoindex_containers_1"),
            (ATTACHED_TO, "INDEX containers_by_netns"),
            (JOINERS, "INDEX containers_by_mode"),
            (PORT_HOLDER, "INDEX ports_by_port"),
        ] {
            let p = plan(store, sql);
            assert!(p.starts_with("SEARCH") && p.contains(index), "{sql}\n→ {p}");
        }
    }
}
