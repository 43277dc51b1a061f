//! `--backend sim | sim-hub[:PATH] | bluez[:hciN]`: which radio a command runs on, and opening it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use colink_ble::{Adapter, DeviceId};
use colink_sim::Position;
use colink_sim::hub::HubAdapter;

use crate::error::{CliError, CliResult};

/// The radio a command runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A simulated air private to this process.
    Sim,
    /// A device on the shared simulated air of a `colink sim-hub` (other processes join the same air).
    SimHub(PathBuf),
    /// A real adapter through BlueZ (`None`: the default adapter).
    Bluez(Option<String>),
}

/// The socket `colink sim-hub` serves by default, and `--backend sim-hub` joins.
pub(crate) fn default_hub_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("colink-sim.sock"),
        _ => std::env::temp_dir().join("colink-sim.sock"),
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("sim", None) => Ok(Self::Sim),
            ("sim-hub", None) => Ok(Self::SimHub(default_hub_path())),
            ("sim-hub", Some(p)) if !p.is_empty() => Ok(Self::SimHub(PathBuf::from(p))),
            ("bluez", None) => Ok(Self::Bluez(None)),
            ("bluez", Some(a)) if a.starts_with("hci") && a.len() > 3 && a[3..].bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Self::Bluez(Some(a.to_owned())))
            }
            ("bluez", Some(a)) => Err(format!("`{a}` is not an adapter name like hci0")),
            _ => Err("expected sim, sim-hub[:PATH] or bluez[:hciN]".to_owned()),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sim => f.write_str("sim"),
            Self::SimHub(p) => write!(f, "sim-hub:{}", p.display()),
            Self::Bluez(None) => f.write_str("bluez"),
            Self::Bluez(Some(a)) => write!(f, "bluez:{a}"),
        }
    }
}

impl Backend {
    /// `--hub PATH` wins over `--backend`.
    pub(crate) fn resolve(backend: Option<Self>, hub: Option<PathBuf>) -> Self {
        match (hub, backend) {
            (Some(path), _) => Self::SimHub(path),
            (None, Some(b)) => b,
            (None, None) => Self::Sim,
        }
    }

    /// Opens the adapter of a real or shared radio: a hub device (named `name`) or a BlueZ adapter. `sim` has no
    /// single adapter to open (see [`crate::neighbours`]); callers handle it before.
    pub(crate) async fn open(&self, name: &str, device: DeviceId) -> CliResult<Arc<dyn Adapter>> {
        match self {
            Self::Sim => Err(CliError::usage(
                "`--backend sim` is an air private to one process; start `colink sim-hub` and pass \
                 `--backend sim-hub[:PATH]` (or `--hub PATH`) so other processes can reach this one",
            )),
            Self::SimHub(path) => {
                let adapter = HubAdapter::connect(path, name, position_for(device)).await.map_err(|e| {
                    CliError::not_supported(format_args!(
                        "no simulator hub at {} ({e}); start one with `colink sim-hub --socket {}`",
                        path.display(),
                        path.display()
                    ))
                })?;
                Ok(Arc::new(adapter))
            }
            Self::Bluez(name) => open_bluez(name.as_deref()).await,
        }
    }
}

/// Where a device joins the hub's floor: 1-3 m from the origin, derived from its id so it stays put.
pub(crate) fn position_for(device: DeviceId) -> Position {
    let b = device.to_bytes();
    Position::new(1.0 + f64::from(b[0] % 21) / 10.0, f64::from(b[1] % 21) / 10.0)
}

#[cfg(target_os = "linux")]
async fn open_bluez(name: Option<&str>) -> CliResult<Arc<dyn Adapter>> {
    use colink_ble::bluez::Bluez;
    let bluez = Bluez::new().await.map_err(|e| {
        CliError::not_supported(format_args!(
            "BlueZ is not available: cannot reach bluetoothd on the D-Bus system bus ({e}); install and start \
             bluez (systemctl start bluetooth), or try colink on the simulator: `colink demo`, or `colink sim-hub` \
             in another terminal and then this command with --backend sim-hub"
        ))
    })?;
    let adapter = match name {
        Some(n) => bluez.adapter(n).await.map_err(|e| {
            CliError::not_supported(format_args!(
                "no Bluetooth adapter {n} ({e}); `colink scan --backend bluez` lists the default"
            ))
        })?,
        None => bluez
            .default_adapter()
            .await
            .map_err(|e| CliError::not_supported(format_args!("no Bluetooth adapter present ({e})")))?,
    };
    let label = adapter.name().to_owned();
    match adapter.is_powered().await {
        Ok(true) => Ok(Arc::new(adapter)),
        Ok(false) => Err(CliError::not_supported(format_args!(
            "Bluetooth adapter {label} is powered off (`bluetoothctl power on`)"
        ))),
        Err(e) => Err(CliError::not_supported(format_args!("Bluetooth adapter {label} is unusable ({e})"))),
    }
}

#[cfg(not(target_os = "linux"))]
async fn open_bluez(_name: Option<&str>) -> CliResult<Arc<dyn Adapter>> {
    Err(CliError::not_supported(
        "BlueZ exists on Linux only; try colink on the simulator: `colink demo`, or `colink sim-hub` in another \
         terminal and then this command with --backend sim-hub",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("sim".parse(), Ok(Backend::Sim));
        assert_eq!("bluez".parse(), Ok(Backend::Bluez(None)));
        assert_eq!("bluez:hci1".parse(), Ok(Backend::Bluez(Some("hci1".into()))));
        assert_eq!("sim-hub:/tmp/x.sock".parse(), Ok(Backend::SimHub("/tmp/x.sock".into())));
        assert!("sim-hub".parse::<Backend>().is_ok());
        assert!("bluez:eth0".parse::<Backend>().is_err());
        assert!("bluez:hci".parse::<Backend>().is_err());
        assert!("wifi".parse::<Backend>().is_err());
    }

    #[test]
    fn hub_wins_over_backend() {
        let b = Backend::resolve(Some(Backend::Bluez(None)), Some("/tmp/h".into()));
        assert_eq!(b, Backend::SimHub("/tmp/h".into()));
        assert_eq!(Backend::resolve(None, None), Backend::Sim);
    }
}
