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
use crate::term;

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

    /// The row's cells, in [`HEADERS`] order; strings that came from elsewhere are escaped.
    fn cells(&self) -> [String; COLS] {
        let rssi = self.rssi.dbm().map(|d| format!("{d} dBm")).unwrap_or_else(|| "unknown".into());
        let services = if self.present { self.services() } else { format!("{} (lost)", self.services()) };
        [
            self.peer.address.to_string(),
            self.advert.short_id.to_string(),
            term::printable(&self.name),
            rssi,
            self.psm(),
            services,
        ]
    }
}

const COLS: usize = 6;
const HEADERS: [&str; COLS] = ["device", "short id", "name", "RSSI", "PSM", "services"];
const NAME: usize = 2;
const RSSI: usize = 3;
const PSM: usize = 4;
const SERVICES: usize = 5;
/// Spaces between columns.
const GAP: usize = 2;

/// The table's column widths (0: the column is hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout([usize; COLS]);

impl Layout {
    /// Widths for `rows` within `limit` columns (`None`: no limit, e.g. piped). Over the limit, the services
    /// column is elided first (down to its bits), then the name (down to 6 columns); then services, name, PSM
    /// and RSSI are hidden in that order. Address and short id always stay.
    fn new<'a>(rows: impl Iterator<Item = &'a [String; COLS]> + Clone, limit: Option<usize>) -> Self {
        let natural: [usize; COLS] = std::array::from_fn(|i| {
            rows.clone().map(|r| console::measure_text_width(&r[i])).chain([HEADERS[i].len()]).max().unwrap_or(0)
        });
        let Some(limit) = limit else { return Self(natural) };
        let hide_order = [SERVICES, NAME, PSM, RSSI];
        let mut layout = Self(natural);
        // Hide as few columns as will do; the ones left shrink only as far as they must.
        for hidden in 0..=hide_order.len() {
            let mut w = natural;
            for col in &hide_order[..hidden] {
                w[*col] = 0;
            }
            for (col, min) in [(SERVICES, 10), (NAME, 6)] {
                let total = Self(w).total();
                if total > limit && w[col] > 0 {
                    w[col] = w[col].saturating_sub(total - limit).max(min.min(w[col]));
                }
            }
            layout = Self(w);
            if layout.total() <= limit {
                break;
            }
        }
        layout
    }

    fn total(self) -> usize {
        let shown = self.0.iter().filter(|w| **w > 0).count();
        self.0.iter().sum::<usize>() + GAP * shown.saturating_sub(1)
    }

    /// One line of the table; RSSI is right-aligned, everything else left-aligned.
    fn line(self, cells: &[String; COLS]) -> String {
        let parts: Vec<String> = (0..COLS)
            .filter(|i| self.0[*i] > 0)
            .map(|i| {
                if i == RSSI {
                    let cut = term::elide(&cells[i], self.0[i]);
                    format!("{}{cut}", " ".repeat(self.0[i].saturating_sub(console::measure_text_width(&cut))))
                } else {
                    term::fit(&cells[i], self.0[i])
                }
            })
            .collect();
        parts.join(&" ".repeat(GAP)).trim_end().to_owned()
    }

    fn header(self) -> String {
        self.line(&HEADERS.map(str::to_owned))
    }
}

/// The table's lines (header first) with `indent` before each, each at most `limit` columns.
fn table(rows: &BTreeMap<PeerAddress, Row>, limit: Option<usize>, indent: &str) -> Vec<String> {
    let cells: Vec<[String; COLS]> = rows.values().map(Row::cells).collect();
    let layout = Layout::new(cells.iter(), limit.map(|l| l.saturating_sub(indent.len())));
    std::iter::once(layout.header())
        .chain(cells.iter().map(|c| layout.line(c)))
        .map(|l| clip(&format!("{indent}{l}"), limit))
        .collect()
}

/// `line` elided to `limit` columns, when there is a limit.
fn clip(line: &str, limit: Option<usize>) -> String {
    match limit {
        Some(l) => term::elide(line, l),
        None => line.to_owned(),
    }
}

/// The trusted devices of this device's state directory, to name the adverts they send: an advert carries only a
/// rotating advert id (docs/security.md), which a device that knows the full id can resolve.
#[derive(Debug, Default)]
pub(crate) struct Known {
    peers: Vec<(colink_ble::DeviceId, Option<String>)>,
}

impl Known {
    /// Reads the trust store under `state_dir` (nothing known when there is none or it cannot be read: a scan
    /// still works, without names).
    pub(crate) fn load(state_dir: &std::path::Path) -> Self {
        // A scan creates no state directory: only an existing one is read.
        if !state_dir.is_dir() {
            return Self::default();
        }
        let store = colink::trust::StateDir::open(state_dir).and_then(|d| d.trust_store());
        match store {
            Ok(store) => Self { peers: store.peers().map(|p| (p.device_id, p.name.clone())).collect() },
            Err(e) => {
                tracing::debug!(error = %e, "no trust store to name known devices from");
                Self::default()
            }
        }
    }

    /// The name (or, without one, the device id) of the trusted device whose advert id `short` is, at `now`.
    fn name_of(&self, short: colink_ble::ShortDeviceId, now: std::time::SystemTime) -> Option<String> {
        let slot = colink_ble::advert_slot(now);
        let (id, name) = self.peers.iter().find(|(id, _)| id.advert_ids_around(slot).contains(&short))?;
        Some(name.clone().unwrap_or_else(|| format!("known {}", id.short())))
    }
}

pub(crate) async fn run(
    backend: Backend,
    duration: f64,
    service: Option<String>,
    json: bool,
    known: Known,
) -> CliResult {
    let (adapter, neighbours): (Arc<dyn Adapter>, Option<Neighbourhood>) = match &backend {
        Backend::Sim => {
            let n = Neighbourhood::start(1).await?;
            (Arc::new(n.me.clone()), Some(n))
        }
        other => {
            let id = crate::app::random_id();
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
                    neighbours
                        .as_ref()
                        .and_then(|n| n.name_of(a.short_id).map(str::to_owned))
                        .or_else(|| known.name_of(a.short_id, std::time::SystemTime::now()))
                        .unwrap_or_else(|| "-".to_owned())
                };
                let found = match event {
                    ScanEvent::DeviceFound { peer, rssi, advert } => {
                        let row = Row { peer, name: name_of(&advert), rssi, advert, present: true };
                        rows.insert(peer, row);
                        Some(('+', peer))
                    }
                    ScanEvent::DeviceUpdated { peer, rssi, advert } => {
                        let row = Row { peer, name: name_of(&advert), rssi, advert, present: true };
                        rows.insert(peer, row);
                        None
                    }
                    ScanEvent::DeviceLost { peer } => rows.get_mut(&peer).map(|r| {
                        r.present = false;
                        ('-', peer)
                    }),
                    _ => None,
                };
                if live {
                    // Redraw the table in place, header included (its columns follow the rows), every line
                    // within the terminal's width so none wraps and the cursor arithmetic holds.
                    let lines = table(&rows, term::stdout_width(), "");
                    let mut out = std::io::stdout().lock();
                    if drawn > 0 {
                        let _ = write!(out, "\x1b[{drawn}A");
                    }
                    for line in &lines {
                        let _ = writeln!(out, "\x1b[2K{line}");
                    }
                    drawn = lines.len();
                    let _ = out.flush();
                } else if let (Some((mark, peer)), false) = (found, json) {
                    // Piped: one line per change, in the columns of the table so far.
                    let cells: Vec<[String; COLS]> = rows.values().map(Row::cells).collect();
                    let layout = Layout::new(cells.iter(), None);
                    if let Some(r) = rows.get(&peer) {
                        println!("{mark} {}", layout.line(&r.cells()));
                    }
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
        for line in table(&rows, term::stdout_width(), "  ") {
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_devices_rotating_advert_id_is_shown_by_name() {
        let now = std::time::SystemTime::now();
        let named = colink_ble::DeviceId::from_bytes([7; 16]);
        let unnamed = colink_ble::DeviceId::from_bytes([9; 16]);
        let known = Known { peers: vec![(named, Some("kitchen laptop".into())), (unnamed, None)] };
        let slot = colink_ble::advert_slot(now);
        assert_eq!(known.name_of(named.advert_id(slot), now).as_deref(), Some("kitchen laptop"));
        // The neighbouring slots too (clocks differ; the advert rotates at the boundary).
        assert_eq!(known.name_of(named.advert_id(slot + 1), now).as_deref(), Some("kitchen laptop"));
        assert_eq!(known.name_of(unnamed.advert_id(slot), now), Some(format!("known {}", unnamed.short())));
        // A stranger's advert, and a known device's stable short id (never on the air), name nobody.
        assert_eq!(known.name_of(colink_ble::DeviceId::from_bytes([1; 16]).advert_id(slot), now), None);
        assert_eq!(known.name_of(named.advert_id(slot + 5), now), None);
    }

    fn rows() -> Vec<[String; COLS]> {
        vec![
            ["c0:00:00:00:00:01", "3294daf4", "sim-phone", "-48 dBm", "0x80", "0x00000010 (hosts colink-cli)"],
            ["c0:00:00:00:00:02", "0badf00d", "a-very-long-name\\u{1b}", "unknown", "-", "0x00000000"],
        ]
        .into_iter()
        .map(|r| r.map(str::to_owned))
        .collect()
    }

    #[test]
    fn columns_line_up_with_the_header() {
        let rows = rows();
        let layout = Layout::new(rows.iter(), None);
        let header = layout.header();
        let first = layout.line(&rows[0]);
        // Every left-aligned column starts where its header does.
        for (h, cell) in HEADERS.iter().zip(&rows[0]).filter(|(h, _)| **h != "RSSI") {
            assert_eq!(header.find(h), first.find(cell.as_str()), "{h}\n{header}\n{first}");
        }
        // RSSI is right-aligned under its header.
        let end = header.find("RSSI").map(|i| i + 4);
        assert_eq!(first.find("-48 dBm").map(|i| i + 7), end, "{header}\n{first}");
    }

    #[test]
    fn the_table_fits_any_width() {
        let rows = rows();
        for limit in [20, 40, 60, 80, 100, 200] {
            let layout = Layout::new(rows.iter(), Some(limit));
            for line in std::iter::once(layout.header()).chain(rows.iter().map(|r| layout.line(r))) {
                let w = console::measure_text_width(&line);
                // The address and short id always stay (27 columns); beyond that every line fits.
                assert!(w <= limit.max(27), "{limit}: {w} columns: {line}");
            }
        }
        // Wide enough: nothing hidden or cut.
        assert_eq!(Layout::new(rows.iter(), Some(200)), Layout::new(rows.iter(), None));
        // Narrow: the services column goes before the name, and the name then takes the room left (60 columns:
        // 17 + 8 + 7 + 4 and four gaps leave 16 for it).
        let narrow = Layout::new(rows.iter(), Some(60));
        assert_eq!((narrow.0[NAME], narrow.0[SERVICES]), (16, 0), "{narrow:?}");
        assert_eq!(narrow.total(), 60);
        // Services elided to its bits when that is enough.
        let cut = Layout::new(rows.iter(), Some(80));
        assert!(cut.0[SERVICES] >= 10 && cut.0[NAME] == 22 && cut.total() == 80, "{cut:?}");
    }
}
