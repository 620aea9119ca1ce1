//! `netwright service …`: VIPs over containers (see netwright_engine::services).

use std::io::Write;

use anyhow::Result;
use serde_json::{Value, json};

use super::{ServiceCmd, output};
use netwright_engine::Engine;
use netwright_engine::model::{Backend, Service};
use netwright_engine::services::{self, CreateSpec};

pub(super) fn run(engine: &Engine, cmd: ServiceCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        ServiceCmd::Create { name, network, port, selector, ip, publish, affinity } => {
            engine.sweep()?;
            let s =
                engine.service_create(&CreateSpec { name, network, ports: port, selector, ip, publish, affinity })?;
            writeln!(out, "{}", s.id)?;
        }
        ServiceCmd::Ls { format } => {
            let mut store = engine.store()?;
            let (svcs, nets) = store.read(|tx| Ok((services::all(tx)?, tx.networks()?)))?;
            let net_name = |id: &str| nets.iter().find(|n| n.id == id).map(|n| n.name.clone()).unwrap_or_default();
            if format == "json" {
                for (s, b) in &svcs {
                    writeln!(out, "{}", doc(s, b, &net_name(&s.network_id)))?;
                }
            } else {
                let rows: Vec<Vec<String>> = svcs
                    .iter()
                    .map(|(s, b)| {
                        vec![
                            s.id[..12].to_string(),
                            s.name.clone(),
                            net_name(&s.network_id),
                            s.vip.to_string(),
                            ports(s),
                            b.len().to_string(),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    output::table(&["SERVICE ID", "NAME", "NETWORK", "VIP", "PORTS", "BACKENDS"], &rows)
                )?;
            }
        }
        ServiceCmd::Inspect { services: refs, format } => {
            let mut store = engine.store()?;
            let mut docs = Vec::new();
            for r in &refs {
                let d = store.read(|tx| {
                    let s = tx.service(r)?.ok_or_else(|| {
                        netwright_engine::error::not_found(format!("service {r} not found: see `netwright service ls`"))
                    })?;
                    let net = tx.network(&s.network_id)?.map(|n| n.name).unwrap_or_default();
                    let b = tx.backends(&s.id)?;
                    let mut d = doc(&s, &b, &net);
                    // The backends' names, as `tasks.NAME` answers them.
                    let mut named = Vec::new();
                    for be in &b {
                        let c = tx
                            .all_endpoints()?
                            .into_iter()
                            .find(|e| e.id == be.endpoint_id)
                            .and_then(|e| tx.container(&e.container_id).ok().flatten());
                        named.push(json!({"Slot": be.slot, "IP": be.ip.to_string(),
                                          "Container": c.map(|c| c.name).unwrap_or_default()}));
                    }
                    d["Backends"] = json!(named);
                    Ok(d)
                })?;
                docs.push(d);
            }
            super::commands::print_docs(out, &docs, format.as_deref())?;
        }
        ServiceCmd::Rm { services: refs } => {
            let mut failed = None;
            for r in &refs {
                match engine.service_remove(r) {
                    Ok(_) => writeln!(out, "{r}")?,
                    Err(e) => failed = Some(anyhow::Error::from(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn ports(s: &Service) -> String {
    let mut v: Vec<String> = s.ports.iter().map(|p| format!("{}/{}", p.port, p.proto.as_str())).collect();
    v.extend(s.publish.iter().map(|p| format!("0.0.0.0:{}->{}/{}", p.host_port, p.port, p.proto.as_str())));
    v.join(", ")
}

fn doc(s: &Service, b: &[Backend], network: &str) -> Value {
    json!({
        "ID": s.id, "Name": s.name, "Network": network, "VIP": s.vip.to_string(),
        "Ports": s.ports.iter().map(|p| format!("{}/{}", p.port, p.proto.as_str())).collect::<Vec<_>>(),
        "Published": s.publish.iter().map(|p| format!("{}:{}/{}", p.host_port, p.port, p.proto.as_str())).collect::<Vec<_>>(),
        "Selector": format!("alias={}", s.selector),
        "Affinity": if s.client_affinity { "client-ip" } else { "none" },
        "Backends": b.iter().map(|x| x.ip.to_string()).collect::<Vec<_>>(),
    })
}
