//! `colink pair`: find a device by its (short) id and pair with it, numeric comparison.

use std::sync::Arc;
use std::time::Duration;

use colink_ble::{Adapter, DeviceId, ScanEvent, ScanFilter, ShortDeviceId};
use futures::StreamExt;

use crate::app::{Confirm, Screen};
use crate::backend::Backend;
use crate::error::{CliError, CliResult};
use crate::neighbours::Neighbourhood;

pub(crate) async fn run(backend: Backend, device: &str, yes: bool, timeout: f64) -> CliResult {
    let short = parse_short(device)?;
    if !(timeout > 0.0 && timeout <= 3600.0) {
        return Err(CliError::usage("--timeout must be in (0, 3600] seconds"));
    }
    let (adapter, _neighbours): (Arc<dyn Adapter>, Option<Neighbourhood>) = match &backend {
        Backend::Sim => {
            let n = Neighbourhood::start(1).await?;
            (Arc::new(n.me.clone()), Some(n))
        }
        other => {
            let id = crate::app::random_id();
            (other.open(&format!("pair-{}", id.short()), id).await?, None)
        }
    };
    println!("looking for {short} on {backend} ...");
    let mut scan =
        adapter.scan(ScanFilter::default()).await.map_err(|e| CliError::failure(format_args!("cannot scan: {e}")))?;
    let found = tokio::time::timeout(Duration::from_secs_f64(timeout), async {
        while let Some(event) = scan.next().await {
            if let ScanEvent::DeviceFound { peer, rssi, advert } = event
                && advert.short_id == short
            {
                return Some((peer, rssi));
            }
        }
        None
    })
    .await;
    drop(scan);
    let Ok(Some((peer, rssi))) = found else {
        return Err(CliError::unreachable(format_args!("device {short} was not heard within {timeout} s")));
    };
    println!("found {short} at {} ({rssi}); pairing ...", peer.address);
    let agent = Arc::new(Screen::new("colink", true, if yes { Confirm::Accept } else { Confirm::Ask }));
    adapter.pair(peer, agent).await.map_err(|e| CliError::failure(format_args!("pairing with {short} failed: {e}")))?;
    println!("paired with {short} ({}): bonded", peer.address);
    Ok(())
}

fn parse_short(s: &str) -> CliResult<ShortDeviceId> {
    if let Ok(id) = s.parse::<DeviceId>() {
        // Adverts carry the device's rotating advert id (docs/security.md), not its stable short form.
        return Ok(id.advert_id(colink_ble::advert_slot(std::time::SystemTime::now())));
    }
    let bytes: Option<Vec<u8>> = (s.len() == 8 && s.is_ascii())
        .then(|| (0..4).map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()).collect::<Option<Vec<u8>>>())
        .flatten();
    match bytes.as_deref() {
        Some(&[a, b, c, d]) => Ok(ShortDeviceId::from_bytes([a, b, c, d])),
        _ => Err(CliError::usage(format_args!(
            "`{s}` is not a device id: give the 8-hex-digit short id from `colink scan` or the full 32-digit id"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_ids_parse() {
        assert_eq!(parse_short("0a0b0c0d").unwrap(), ShortDeviceId::from_bytes([10, 11, 12, 13]));
        // A full id finds the device by the advert id it carries now (a rotating hash of the id, not its prefix).
        let id = DeviceId::from_bytes([0xab; 16]);
        let now = colink_ble::advert_slot(std::time::SystemTime::now());
        let found = parse_short(&"ab".repeat(16)).unwrap();
        assert!(id.advert_ids_around(now).contains(&found), "{found}");
        assert_ne!(found, id.short());
        assert!(parse_short("xyz").is_err());
        assert!(parse_short("0a0b0c0").is_err());
    }
}
