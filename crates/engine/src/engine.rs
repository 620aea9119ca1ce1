//! [`Engine`]: the network life of namespaces, as one API for every front end (the CLI's
//! `run` and `attach`, and runtimes' backends). Typed errors at this boundary. Calls share
//! one store connection, kept between them (opening one costs ~1 ms); it holds no lock
//! between transactions, so many netwright processes work at once.

use std::path::Path;

use crate::container::{self, Created, EndpointRequest, Spec};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::kernel::netlink::Netlink;
use crate::network::{self, CreateSpec};
use crate::recover::{self, Report};
use crate::store::{Container, Network, Store};

pub struct Engine {
    pub ctx: Ctx,
    /// The store connection, between calls.
    idle: std::sync::Mutex<Option<Store>>,
}

fn typed<T>(r: anyhow::Result<T>) -> Result<T> {
    r.map_err(Error::from_anyhow)
}

impl Engine {
    /// The engine of one state root (created if missing).
    pub fn open(root: &Path) -> Result<Engine> {
        Ok(Engine { ctx: typed(Ctx::new(root))?, idle: std::sync::Mutex::new(None) })
    }

    /// A store connection: the engine's idle one, or a new one.
    pub fn store(&self) -> Result<Store> {
        match self.idle.lock().ok().and_then(|mut idle| idle.take()) {
            Some(s) => Ok(s),
            None => typed(self.ctx.store()),
        }
    }

    /// Gives a connection back for the next call.
    pub fn give_back(&self, store: Store) {
        if let Ok(mut idle) = self.idle.lock() {
            *idle = Some(store);
        }
    }

    fn with_store<T>(&self, f: impl FnOnce(&Ctx, &mut Store) -> anyhow::Result<T>) -> Result<T> {
        let mut store = self.store()?;
        let out = typed(f(&self.ctx, &mut store));
        self.give_back(store);
        out
    }

    /// For calls that change something: first finish or undo what a killed netwright left
    /// half-done (crate::recover::resume: one query when nothing crashed).
    fn changing<T>(&self, f: impl FnOnce(&Ctx, &mut Store) -> anyhow::Result<T>) -> Result<T> {
        self.with_store(|ctx, store| {
            crate::ctx::trace("store opened");
            recover::resume(ctx, store)?;
            crate::ctx::trace("nothing to resume");
            f(ctx, store)
        })
    }

    fn with_netlink<T>(&self, f: impl FnOnce(&Ctx, &mut Store, &mut Netlink) -> anyhow::Result<T>) -> Result<T> {
        let mut store = self.store()?;
        let mut nl = typed(Netlink::open().map_err(anyhow::Error::from))?;
        let out = typed(recover::resume(&self.ctx, &mut store).and_then(|_| f(&self.ctx, &mut store, &mut nl)));
        self.give_back(store);
        out
    }

    /// Sets up a container's network: a new namespace (or, with `spec.netns`, the
    /// runtime's), its interfaces, addresses, routes, published ports, names and files.
    /// The container is recorded as Created; the caller starts its process.
    pub fn setup(&self, spec: &Spec) -> Result<Created> {
        self.changing(|ctx, store| container::create(ctx, store, spec))
    }

    /// `--dry-run` of [`Engine::setup`]: the commands it would run; nothing is done.
    pub fn setup_dry_run(&self, spec: &Spec) -> Result<String> {
        let spec = Spec { dry_run: true, ..spec.clone() };
        self.with_store(|ctx, store| crate::observe::explain::dry_run_text(container::create(ctx, store, &spec)))
    }

    /// `--dry-run` of [`Engine::network_create`].
    pub fn network_create_dry_run(&self, spec: &CreateSpec) -> Result<String> {
        let spec = CreateSpec { dry_run: true, ..spec.clone() };
        self.with_netlink(|ctx, store, nl| {
            crate::observe::explain::dry_run_text(network::create(ctx, store, nl, &spec))
        })
    }

    /// Networks a namespace a runtime made and owns (`spec.netns`): set up, and alive for
    /// as long as that namespace is.
    pub fn attach(&self, spec: Spec) -> Result<container::Attached> {
        self.changing(|ctx, store| container::attach(ctx, store, spec))
    }

    /// Releases a container's network (ports, interfaces, namespace pin, names) and records
    /// how it ended.
    pub fn teardown(&self, c: &Container, exit_code: i32, error: Option<&str>) -> Result<()> {
        self.with_store(|ctx, store| container::release(ctx, store, c, exit_code, error))
    }

    /// Forgets a released container (its record and files).
    pub fn forget(&self, c: &Container) -> Result<()> {
        self.with_store(|ctx, store| container::forget(ctx, store, c))
    }

    /// The names of the networks a container has an address on, in interface order.
    pub fn networks_of(&self, container_id: &str) -> Result<Vec<String>> {
        self.with_store(|_, store| {
            store.read(|tx| {
                let mut v = Vec::new();
                for e in tx.endpoints_of(container_id)?.into_iter().filter(|e| e.ip.is_some()) {
                    v.extend(tx.network(&e.network_id)?.map(|n| n.name));
                }
                Ok(v)
            })
        })
    }

    pub fn find(&self, reference: &str) -> Result<Container> {
        self.with_store(|_, store| container::find(store, reference))
    }

    /// Adds an interface on `network` to a running container (`req.ifname` None: the next
    /// free ethN).
    pub fn connect(&self, network: &str, container: &str, req: EndpointRequest) -> Result<()> {
        self.changing(|ctx, store| crate::connect::connect(ctx, store, network, container, req))
    }

    pub fn disconnect(&self, network: &str, container: &str) -> Result<()> {
        self.changing(|ctx, store| crate::connect::disconnect(ctx, store, network, container))
    }

    pub fn network_create(&self, spec: &CreateSpec) -> Result<Network> {
        self.with_netlink(|ctx, store, nl| network::create(ctx, store, nl, spec))
    }

    pub fn network_remove(&self, reference: &str) -> Result<Network> {
        self.with_netlink(|ctx, store, nl| network::remove(ctx, store, nl, reference))
    }

    pub fn service_create(&self, spec: &crate::services::CreateSpec) -> Result<crate::model::Service> {
        self.with_netlink(|ctx, store, nl| crate::services::create(ctx, store, nl, spec))
    }

    pub fn service_remove(&self, reference: &str) -> Result<crate::model::Service> {
        self.with_netlink(|ctx, store, nl| crate::services::remove(ctx, store, nl, reference))
    }

    pub fn network_prune(&self) -> Result<Vec<String>> {
        self.with_netlink(network::prune)
    }

    /// Finishes or undoes interrupted operations and releases containers whose owner died;
    /// returns what was done.
    pub fn sweep(&self) -> Result<Vec<String>> {
        self.with_store(recover::sweep)
    }

    /// What differs between the store's desired devices and the kernel, one line each (what
    /// `doctor` reports and `recover` repairs).
    pub fn drift(&self) -> Result<Vec<String>> {
        use crate::apply::{self, Kernel, NetlinkKernel};
        self.with_netlink(|ctx, store, nl| {
            let snap = recover::snapshot(store)?;
            let live = NetlinkKernel { ctx, nl }.links()?;
            Ok(apply::diff(&ctx.tag, &crate::desired::host(&snap), &live).iter().map(|a| a.to_string()).collect())
        })
    }

    /// Sweep, then converge the kernel on the desired state (see [`crate::recover`]).
    pub fn recover(&self) -> Result<Report> {
        self.with_netlink(recover::reconcile)
    }
}
