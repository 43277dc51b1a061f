//! `colink scan`: a live table of the colink devices in range.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use colink_ble::{Adapter, Advert, PeerAddress, Rssi, ScanEvent, ScanFilter};
use futures::StreamExt;
use serde_json::json;

use crate::app::SERVICE;
use crate::backend::Backend;
use crate::error::{CliError, CliResult};
use crate::neighbours::Neighbourhood;

struct Row {
    peer: PeerAddress,
    name: String,
    rssi: Rssi,
    advert: Advert,
    present: bool,
}

impl Row {
    fn services(&self) -> String {
        let bits = self.advert.services.bits();
        if self.advert.services.may_contain(SERVICE) {
            format!("{bits:#010x} (hosts {SERVICE})")
        } else {
            format!("{bits:#010x}")
        }
    }

    fn psm(&self) -> String {
        self.advert.psm.map(|p| format!("{:#04x}", p.value())).unwrap_or_else(|| "-".into())
    }

    fn line(&self) -> String {
        let rssi = self.rssi.dbm().map(|d| format!("{d} dBm")).unwrap_or_else(|| "unknown".into());
        let state = if self.present { "" } else { "  (lost)" };
        format!(
            "{:<17}  {:<8}  {:<11}  {:>11}  {:<5}  {}{state}",
            self.peer.address.to_string(),
            self.advert.short_id.to_string(),
            self.name,
            rssi,
            self.psm(),
            self.services()
        )
    }
}

const HEADER: &str = "device             short id  name               RSSI  PSM    services";

pub(crate) async fn run(backend: Backend, duration: f64, service: Option<String>, json: bool) -> CliResult {
    let (adapter, neighbours): (Arc<dyn Adapter>, Option<Neighbourhood>) = match &backend {
        Backend::Sim => {
            let n = Neighbourhood::start(1).await?;
            (Arc::new(n.me.clone()), Some(n))
        }
        other => {
            let id = crate::app::device_id(None, std::path::Path::new("."), "scan", false)?;
            (other.open(&format!("scan-{}", id.short()), id).await?, None)
        }
    };
    let mut filter =
        ScanFilter::default().with_update_interval(Duration::from_secs(1)).with_lost_after(Duration::from_secs(5));
    if let Some(s) = &service {
        filter = filter.with_service(s);
    }
    let mut scan = adapter.scan(filter).await.map_err(|e| CliError::failure(format_args!("cannot scan: {e}")))?;
    let live = !json && std::io::stdout().is_terminal();
    if !json {
        let what = if neighbours.is_some() { " (a private simulated air with three simulated neighbours)" } else { "" };
        println!("scanning for colink devices on {backend}{what} for {duration} s");
        println!("{HEADER}");
    }
    let mut rows: BTreeMap<PeerAddress, Row> = BTreeMap::new();
    let mut drawn = 0usize;
    let deadline = tokio::time::sleep(Duration::from_secs_f64(duration));
    tokio::pin!(deadline);
    let stop = crate::hub::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = scan.next() => {
                let Some(event) = event else { break };
                let name_of = |a: &Advert| {
                    neighbours.as_ref().and_then(|n| n.name_of(a.short_id)).unwrap_or("-").to_owned()
                };
                let line = match event {
                    ScanEvent::DeviceFound { peer, rssi, advert } => {
                        let row = Row { peer, name: name_of(&advert), rssi, advert, present: true };
                        let line = format!("+ {}", row.line());
                        rows.insert(peer, row);
                        Some(line)
                    }
                    ScanEvent::DeviceUpdated { peer, rssi, advert } => {
                        let row = Row { peer, name: name_of(&advert), rssi, advert, present: true };
                        rows.insert(peer, row);
                        None
                    }
                    ScanEvent::DeviceLost { peer } => rows.get_mut(&peer).map(|r| {
                        r.present = false;
                        format!("- {}", r.line())
                    }),
                    _ => None,
                };
                if live {
                    // Redraw the table in place.
                    let mut out = std::io::stdout().lock();
                    if drawn > 0 {
                        let _ = write!(out, "\x1b[{drawn}A");
                    }
                    for r in rows.values() {
                        let _ = writeln!(out, "\x1b[2K{}", r.line());
                    }
                    drawn = rows.len();
                    let _ = out.flush();
                } else if let (Some(line), false) = (line, json) {
                    println!("{line}");
                }
            }
            () = &mut deadline => break,
            () = &mut stop => break,
        }
    }
    drop(scan);
    if json {
        let list: Vec<_> = rows
            .values()
            .map(|r| {
                json!({
                    "address": r.peer.address.to_string(), "short_id": r.advert.short_id.to_string(),
                    "name": (r.name != "-").then_some(&r.name), "rssi_dbm": r.rssi.dbm(),
                    "psm": r.advert.psm.map(|p| p.value()), "services_bits": r.advert.services.bits(),
                    "hosts_colink_cli": r.advert.services.may_contain(SERVICE), "present": r.present,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else if !live {
        println!("{} device(s):", rows.len());
        println!("  {HEADER}");
        for r in rows.values() {
            println!("  {}", r.line());
        }
    }
    Ok(())
}
