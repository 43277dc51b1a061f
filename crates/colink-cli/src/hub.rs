//! `colink sim-hub`: one simulated air on a Unix socket, shared by every process that joins it.

use std::path::PathBuf;
use std::time::Duration;

use colink_sim::hub::HubServer;
use colink_sim::{PhyProfile, SimAir};

use crate::error::{CliError, CliResult};

/// The `fast` profile: LE 2M with every air time divided by this (for moving large files in tests).
pub(crate) const FAST_FACTOR: u32 = 100;

/// LE 2M timing with the air rate ×100 and per-packet overheads ÷100, a 7.5 ms connection interval: links run
/// ≈ 100× faster than the LE 2M model, everything else (discovery, pairing, connection set-up) unchanged.
pub(crate) fn fast_profile() -> PhyProfile {
    let mut p = PhyProfile::le_2m();
    p.air_bit_rate *= u64::from(FAST_FACTOR);
    p.packet_overhead /= FAST_FACTOR;
    p.turnaround /= FAST_FACTOR;
    p.conn_interval = (Duration::from_micros(7500), Duration::from_micros(7500));
    p
}

pub(crate) async fn run(path: PathBuf, seed: u64, profile: &str) -> CliResult {
    if tokio::net::UnixStream::connect(&path).await.is_ok() {
        return Err(CliError::failure(format_args!("a hub already serves {}; stop it first", path.display())));
    }
    let mut builder = SimAir::builder(seed);
    let model = if profile == "fast" {
        builder = builder.profile(fast_profile());
        let kbit = fast_profile().capacity_bps(u16::MAX) / 1000.0;
        format!("fast: LE 2M timing at {FAST_FACTOR}× the air rate, ≈ {kbit:.0} kbit/s per link")
    } else {
        let kbit = PhyProfile::le_2m().capacity_bps(u16::MAX) / 1000.0;
        format!("le-2m: ≈ {kbit:.0} kbit/s per link")
    };
    let hub = HubServer::bind(builder.build(), &path)
        .await
        .map_err(|e| CliError::failure(format_args!("cannot serve {}: {e}", path.display())))?;
    println!("colink sim-hub: a simulated air on {} (seed {seed}, profile {model})", path.display());
    println!("join it with --backend sim-hub:{} (or --hub {}); Ctrl-C stops it", path.display(), path.display());
    shutdown_signal().await;
    drop(hub);
    println!("colink sim-hub: stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_profile_is_much_faster_than_le_2m() {
        let slow = PhyProfile::le_2m().capacity_bps(u16::MAX);
        let fast = fast_profile().capacity_bps(u16::MAX);
        assert!(fast > slow * 50.0, "{fast} vs {slow}");
    }
}
