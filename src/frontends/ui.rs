//! `netwright ui`: the live system in a browser, drawn the way the seed documents draw it
//! (host and uplink, netwright's firewall on the path, each network's bridge with its
//! containers), changing as it changes, with connections appearing as they happen.
//!
//! A thin front end: the engine's topology, inspect, trace, doctor and conntrack, served
//! read-only over HTTP on loopback by default. Live, without polling the whole state:
//!
//! - a netlink socket on the kernel's link and address groups, and SQLite's `data_version`
//!   (a counter that moves when another process commits), wake a watcher that sends the
//!   new topology as a Server-Sent Event;
//! - the kernel's conntrack events (NFNLGRP_CONNTRACK_NEW/DESTROY) become "flow" events:
//!   both tuples, the NAT, and the path through the drawing (container → bridge →
//!   masquerade → uplink, LAN → DNAT → bridge → container, container → bridge → container).
//!
//! Every asset is in the binary (these machines have no internet).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use futures_util::stream::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use netwright_engine::ctx::Ctx;
use netwright_engine::kernel::conntrack::{self, Conn};
use netwright_engine::kernel::netlink::LinkWatch;
use netwright_engine::observe::{conntrack as ct, doctor, topology, trace};

const PAGE: &str = include_str!("ui.html");

struct App {
    ctx: Ctx,
    events: broadcast::Sender<(&'static str, String)>,
    /// The latest topology (JSON), for a client that connects between changes.
    latest: std::sync::Mutex<String>,
    /// Moves each time `latest` changes: the flow watcher re-reads container names then.
    generation: std::sync::atomic::AtomicU64,
}

/// Serves until killed. `allow_remote`: a non-loopback address was asked for explicitly.
pub fn run(ctx: Ctx, listen: SocketAddr, allow_remote: bool) -> Result<()> {
    if !listen.ip().is_loopback() {
        if !allow_remote {
            bail!(
                "--listen {listen} is not a loopback address: anyone who reaches it sees your containers, addresses and connections; add --allow-remote to mean it"
            );
        }
        eprintln!(
            "netwright: WARNING: serving the live view on {listen} (not loopback): anyone who reaches it sees your containers and connections (read-only)"
        );
    }
    let (tx, _) = broadcast::channel(1024);
    let app = Arc::new(App {
        ctx,
        events: tx,
        latest: std::sync::Mutex::new(String::from("{}")),
        generation: std::sync::atomic::AtomicU64::new(0),
    });
    *app.latest.lock().expect("lock") =
        topology_json(&app.ctx).unwrap_or_else(|e| json!({"error": e.to_string()}).to_string());
    watch_topology(app.clone())?;
    watch_flows(app.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        eprintln!("netwright ui: http://{listen}/ (read-only; Ctrl-C to stop)");
        let router = Router::new()
            .route("/", get(page))
            .route("/api/topology", get(api_topology))
            .route("/api/container/{name}", get(api_container))
            .route("/api/trace", get(api_trace))
            .route("/api/doctor", get(api_doctor))
            .route("/events", get(events))
            .with_state(app);
        axum::serve(listener, router).await.context("serving")
    })
}

fn topology_json(ctx: &Ctx) -> Result<String> {
    let mut store = ctx.store()?;
    let t = topology::build(ctx, &mut store)?;
    Ok(serde_json::to_string(&t)?)
}

/// Link/address notifications and store commits → a new topology event (at most every
/// 100 ms: a container start is a burst of both).
fn watch_topology(app: Arc<App>) -> Result<()> {
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    let mut links = LinkWatch::subscribe().context("subscribing to link changes")?;
    let tx = wake_tx.clone();
    std::thread::spawn(move || {
        while links.wait().is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    let ctx = app.ctx.clone();
    std::thread::spawn(move || {
        // SQLite's data_version moves when another connection commits: a counter, not a read
        // of the state.
        let Ok(conn) = netwright_engine::store::Store::open(&ctx.root) else { return };
        let mut last = conn.data_version().unwrap_or(0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = conn.data_version().unwrap_or(last);
            if now != last {
                last = now;
                if wake_tx.send(()).is_err() {
                    break;
                }
            }
        }
    });
    std::thread::spawn(move || {
        while wake_rx.recv().is_ok() {
            std::thread::sleep(Duration::from_millis(100));
            while wake_rx.try_recv().is_ok() {}
            if let Ok(t) = topology_json(&app.ctx) {
                let changed = *app.latest.lock().expect("lock") != t;
                if changed {
                    *app.latest.lock().expect("lock") = t.clone();
                    app.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = app.events.send(("topology", t));
                }
            }
        }
    });
    Ok(())
}

/// The containers' addresses and networks, for naming a flow's ends.
struct Names {
    by_ip: HashMap<Ipv4Addr, (String, String)>,
    host: Vec<Ipv4Addr>,
}

fn names(ctx: &Ctx) -> Names {
    let mut by_ip = HashMap::new();
    let mut host = Vec::new();
    if let Ok(mut store) = ctx.store()
        && let Ok(t) = topology::build(ctx, &mut store)
    {
        for n in &t.networks {
            for a in &n.attached {
                if let Some(ip) = a.ip.split('/').next().and_then(|s| s.parse().ok()) {
                    by_ip.insert(ip, (a.container.clone(), n.name.clone()));
                }
            }
        }
        for i in &t.host {
            host.extend(i.addrs.iter().filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok()));
        }
    }
    Names { by_ip, host }
}

/// A connection as the page draws it: the nodes it passes, in order.
fn flow(c: &Conn, n: &Names) -> Option<Value> {
    let who = |ip: Option<Ipv4Addr>| ip.and_then(|ip| n.by_ip.get(&ip).cloned());
    let (from, to) = (who(c.original.src), who(c.reply.src));
    let (path, kind) = match (&from, &to) {
        (Some((a, na)), Some((b, nb))) if c.dnat && a != b => (
            vec![format!("c:{a}"), format!("n:{na}"), "fw".into(), format!("n:{nb}"), format!("c:{b}")],
            "container → published port → container (hairpin)",
        ),
        (Some((a, na)), Some((b, nb))) if na == nb => {
            (vec![format!("c:{a}"), format!("n:{na}"), format!("c:{b}")], "container → bridge → container")
        }
        (Some((a, na)), Some((b, nb))) => (
            vec![format!("c:{a}"), format!("n:{na}"), "fw".into(), format!("n:{nb}"), format!("c:{b}")],
            "container → container across networks",
        ),
        (Some((a, na)), None) if c.snat => (
            vec![format!("c:{a}"), format!("n:{na}"), "fw".into(), "uplink".into()],
            "container → bridge → masquerade → uplink",
        ),
        (Some((a, na)), None) if c.original.dst.is_some_and(|d| n.host.contains(&d)) => {
            (vec![format!("c:{a}"), format!("n:{na}"), "host".into()], "container → the host")
        }
        (Some((a, na)), None) => (vec![format!("c:{a}"), format!("n:{na}"), "uplink".into()], "container → out"),
        (None, Some((b, nb))) if c.dnat => (
            vec!["uplink".into(), "fw".into(), format!("n:{nb}"), format!("c:{b}")],
            "LAN → DNAT (published port) → bridge → container",
        ),
        (None, Some((b, nb))) => (vec!["host".into(), format!("n:{nb}"), format!("c:{b}")], "host → container"),
        (None, None) => return None,
    };
    Some(json!({
        "key": format!("{} {}", c.proto, c.original),
        "proto": ct::proto_name(c.proto),
        "original": c.original.to_string(),
        "reply": c.reply.to_string(),
        "nat": ct::nat(c),
        "state": c.state,
        "path": path,
        "kind": kind,
    }))
}

/// Conntrack events → flow events (only connections that touch a container).
fn watch_flows(app: Arc<App>) -> Result<()> {
    let mut evs = conntrack::Events::subscribe().context("subscribing to conntrack events")?;
    std::thread::spawn(move || {
        let mut known = names(&app.ctx);
        let mut version = app.generation.load(std::sync::atomic::Ordering::Relaxed);
        while let Ok(batch) = evs.recv() {
            let now = app.generation.load(std::sync::atomic::Ordering::Relaxed);
            if now != version {
                known = names(&app.ctx);
                version = now;
            }
            for e in batch {
                let (kind, c) = match &e {
                    conntrack::Event::New(c) => ("new", c),
                    conntrack::Event::Destroy(c) => ("destroy", c),
                };
                let mut f = flow(c, &known);
                if f.is_none() {
                    // A container started since the names were read: read them again once.
                    known = names(&app.ctx);
                    f = flow(c, &known);
                }
                if let Some(mut f) = f {
                    f["event"] = json!(kind);
                    let _ = app.events.send(("flow", f.to_string()));
                }
            }
        }
    });
    Ok(())
}

async fn events(State(app): State<Arc<App>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = app.latest.lock().expect("lock").clone();
    let rx = app.events.subscribe();
    let stream = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(t) = first {
            return Some((Ok(Event::default().event("topology").data(t)), (None, rx)));
        }
        loop {
            match rx.recv().await {
                Ok((kind, data)) => return Some((Ok(Event::default().event(kind).data(data)), (None, rx))),
                // A slow client missed some: it gets the next ones (and the next topology).
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn error(e: anyhow::Error) -> Response {
    (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": format!("{e:#}")}))).into_response()
}

/// Runs engine work (blocking: SQLite, netlink) off the server's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.context("worker")?
}

/// The page with the current topology and the connections open now inlined (drawn before
/// the load event).
async fn page(State(app): State<Arc<App>>) -> Html<String> {
    let t = app.latest.lock().expect("lock").clone();
    let ctx = app.ctx.clone();
    let open = blocking(move || {
        let known = names(&ctx);
        Ok(conntrack::dump()?.iter().filter_map(|c| flow(c, &known)).collect::<Vec<_>>())
    })
    .await
    .unwrap_or_default();
    // Inside a <script>: no "</" may close it early.
    let inline = |s: String| s.replace("</", "<\\/");
    Html(PAGE.replacen("/*INITIAL*/null", &inline(t), 1).replacen(
        "/*FLOWS*/[]",
        &inline(serde_json::to_string(&open).unwrap_or_default()),
        1,
    ))
}

async fn api_topology(State(app): State<Arc<App>>) -> Response {
    let t = app.latest.lock().expect("lock").clone();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], t).into_response()
}

async fn api_container(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let ctx = app.ctx.clone();
    match blocking(move || {
        let mut store = ctx.store()?;
        let c = netwright_engine::container::find(&mut store, &name)?;
        let inspect = crate::cli::inspect_doc(&ctx, &mut store, &c)?;
        let conns = ct::read(&mut store, Some(&name))?;
        let conns: Vec<Value> = conns
            .conns
            .iter()
            .map(|c| {
                json!({"proto": ct::proto_name(c.proto), "original": c.original.to_string(),
                       "reply": c.reply.to_string(), "nat": ct::nat(c), "state": c.state})
            })
            .collect();
        Ok(json!({"inspect": inspect, "connections": conns}))
    })
    .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

async fn api_trace(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ctx = app.ctx.clone();
    match blocking(move || {
        let (src, dst) = (q.get("src").context("src= missing")?, q.get("dst").context("dst= missing")?);
        let mut store = ctx.store()?;
        let t = trace::trace(&ctx, &mut store, src, dst, None)?;
        Ok(serde_json::to_value(&t)?)
    })
    .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

async fn api_doctor(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ctx = app.ctx.clone();
    match blocking(move || {
        let mut store = ctx.store()?;
        let found = doctor::run(&ctx, &mut store, q.get("container").map(String::as_str))?;
        Ok(found
            .iter()
            .map(|f| {
                json!({"check": f.check, "ok": matches!(f.level, doctor::Level::Ok), "detail": f.detail, "fix": f.fix})
            })
            .collect::<Vec<_>>())
    })
    .await
    {
        Ok(v) => Json(json!(v)).into_response(),
        Err(e) => error(e),
    }
}
