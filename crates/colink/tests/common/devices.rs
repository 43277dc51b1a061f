//! Simulated devices for the Manager-level tests (`tests/manager.rs`, `tests/media.rs`): one Manager per
//! simulated radio, with a fixed device id and seed so every run is the same.

use colink::Manager;
use colink_ble::DeviceId;
use colink_sim::{Position, SimAdapter, SimAir};

/// A Manager on a new radio called `name` at (`x`, 0) on `air`, with device id `[id; 16]` and seed `id`; also
/// the radio, to move it or switch it off.
pub(crate) async fn manager(air: &SimAir, name: &str, x: f64, id: u8) -> (Manager, SimAdapter) {
    let adapter = air.adapter(name, Position::new(x, 0.0));
    let m = Manager::builder()
        .adapter(adapter.clone())
        .device_id(DeviceId::from_bytes([id; 16]))
        .seed(u64::from(id))
        .build()
        .await
        .unwrap();
    (m, adapter)
}
