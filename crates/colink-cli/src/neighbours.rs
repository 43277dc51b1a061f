//! `--backend sim` for the one-device commands (`scan`, `pair`): a private simulated air with this device and a
//! few simulated neighbours that advertise, listen and answer pairing, so there is something to see.

use std::sync::Arc;

use colink_ble::{Adapter, AdvertHandle, DeviceId, LinkMode, LinkParams, Listener, Port, ServiceFilter, ShortDeviceId};
use colink_sim::{Position, SimAdapter, SimAir};

use crate::app::{Confirm, SERVICE, Screen};
use crate::error::{CliError, CliResult};

/// The simulated neighbours: name, position (metres from this device), services.
const NEIGHBOURS: [(&str, f64, f64, &[&str]); 3] = [
    ("sim-phone", 1.0, 0.5, &[SERVICE, "chat"]),
    ("sim-tablet", 4.0, -2.0, &[SERVICE]),
    ("sim-tv", 12.0, 3.0, &["media"]),
];

/// A private air: this device plus its neighbours.
pub(crate) struct Neighbourhood {
    /// This device.
    pub(crate) me: SimAdapter,
    /// Short id → name of every neighbour.
    pub(crate) names: Vec<(ShortDeviceId, &'static str)>,
    _air: SimAir,
    _held: Vec<(Box<dyn Listener>, AdvertHandle, SimAdapter)>,
}

impl Neighbourhood {
    pub(crate) async fn start(seed: u64) -> CliResult<Self> {
        let air = SimAir::new(seed);
        let me = air.adapter("this-device", Position::new(0.0, 0.0));
        let mut names = Vec::new();
        let mut held = Vec::new();
        for (name, x, y, services) in NEIGHBOURS {
            let adapter = air.adapter(name, Position::new(x, y));
            let mut id = [0u8; 16];
            for (slot, b) in id.iter_mut().zip(name.bytes().skip(4).chain(std::iter::repeat(0x5a))) {
                *slot = b;
            }
            let id = DeviceId::from_bytes(id);
            let fail = |e: colink_ble::AdapterError| CliError::failure(format_args!("simulated {name}: {e}"));
            adapter.set_agent(Some(Arc::new(Screen::new(name, false, Confirm::Accept)))).await.map_err(fail)?;
            let listener = adapter.listen(None, LinkMode::Packet, LinkParams::default()).await.map_err(fail)?;
            let mut advert = colink_ble::Advert::new(id.short())
                .with_services(services.iter().fold(ServiceFilter::EMPTY, |f, s| f.with(s)));
            if let Port::L2cap(psm) = listener.port() {
                advert = advert.with_psm(psm);
            }
            let handle = adapter.advertise(advert).await.map_err(fail)?;
            names.push((id.short(), name));
            held.push((listener, handle, adapter));
        }
        Ok(Self { me, names, _air: air, _held: held })
    }

    pub(crate) fn name_of(&self, short: ShortDeviceId) -> Option<&'static str> {
        self.names.iter().find(|(s, _)| *s == short).map(|(_, n)| *n)
    }
}
