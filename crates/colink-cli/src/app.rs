//! What every session-level command shares: the app endpoint (`--app`), the device identity (`--device-id`,
//! `--state-dir`), building a `Manager`, and a pairing agent that shows the passkey.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use colink::api::{ConnectErrorCode, ConnectResult, Permission};
use colink::driver::{NodeConfig, RadioLoss};
use colink::trust::{Security, StateDir, Strangers};
use colink::{Caller, Manager, PeerInfo};
use colink_ble::{
    Adapter, Agent, AgentRejected, AgentResult, BoxFuture, DeviceId, IoCapability, Passkey, PeerAddress, ServiceFilter,
};
use colink_proto::secure::SecureError;

use crate::error::{CliError, CliResult};

/// The service name sessions of the CLI use (and advertise).
pub(crate) const SERVICE: &str = "colink-cli";
/// The default app endpoint: `bundle/module/ability`.
pub(crate) const DEFAULT_APP: &str = "org.colink.cli/entry/MainAbility";

/// An app endpoint given as `bundle/module/ability`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppName {
    pub(crate) bundle: String,
    pub(crate) module: String,
    pub(crate) ability: String,
}

impl std::str::FromStr for AppName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [b, m, a] if !b.is_empty() && !m.is_empty() && !a.is_empty() => {
                // The API's string rule (each < 1024 bytes), checked here so it is a usage error before any
                // radio work rather than a failure after connecting.
                use colink::api::validate::required_string_arg;
                required_string_arg("bundle_name", b)
                    .and_then(|()| required_string_arg("module_name", m))
                    .and_then(|()| required_string_arg("ability_name", a))
                    .map_err(|e| e.to_string())?;
                Ok(Self { bundle: (*b).into(), module: (*m).into(), ability: (*a).into() })
            }
            _ => Err("expected bundle/module/ability, e.g. org.colink.cli/entry/MainAbility".into()),
        }
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.bundle, self.module, self.ability)
    }
}

impl AppName {
    /// The app as a colink caller. The CLI acts as a system app: images and media streams are system-only
    /// in the API, and the CLI sends and receives both.
    pub(crate) fn caller(&self) -> Caller {
        Caller::new(&self.bundle, &self.module, &self.ability).system(true).grant(Permission::DistributedDatasync)
    }

    pub(crate) fn peer_on(&self, device: DeviceId) -> PeerInfo {
        PeerInfo::new(device.to_string(), &self.bundle, &self.module, &self.ability)
    }
}

/// Where persistent state lives: `--state-dir`, else `$XDG_STATE_HOME/colink`, else `~/.local/state/colink`.
pub(crate) fn state_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("colink");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/colink"),
        None => std::env::temp_dir().join("colink-state"),
    }
}

/// A random device id, for commands that only scan or pair at the radio level (no sessions, no identity key).
pub(crate) fn random_id() -> DeviceId {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for (i, pair) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        pair.copy_from_slice(&h.finish().to_le_bytes());
    }
    DeviceId::from_bytes(bytes)
}

/// This process's identity and trust (docs/security.md): the state directory's identity key — or, when
/// `persistent` is false, a fresh key (a new device every run) — with the directory's account and trust store;
/// strangers as `strangers` says.
pub(crate) fn security(state: &Path, persistent: bool, strangers: Strangers) -> CliResult<Security> {
    let dir = StateDir::open(state).map_err(CliError::failure)?;
    let s = if persistent { Security::load(&dir) } else { Security::load_ephemeral(&dir) };
    Ok(s.map_err(CliError::failure)?.strangers(strangers))
}

/// Starts a `Manager` with `security` on `adapter`, advertising the CLI's service.
pub(crate) async fn manager(adapter: Arc<dyn Adapter>, security: Security, seed: Option<u64>) -> CliResult<Manager> {
    manager_with(adapter, security, seed, RadioLoss::default()).await
}

/// [`manager`], saying what the node does when the radio goes away under it.
pub(crate) async fn manager_with(
    adapter: Arc<dyn Adapter>,
    security: Security,
    seed: Option<u64>,
    on_radio_loss: RadioLoss,
) -> CliResult<Manager> {
    let mut config = NodeConfig::default();
    config.services = ServiceFilter::EMPTY.with(SERVICE);
    config.on_radio_loss = on_radio_loss;
    // Peers show this device by its host name (`colink devices`).
    config.engine.device_name = host_name();
    let mut b = Manager::builder().shared_adapter(adapter).security(security).node_config(config);
    if let Some(s) = seed {
        b = b.seed(s);
    }
    Ok(b.build().await?)
}

/// This machine's host name (what BlueZ uses as the adapter's alias by default), or "colink" when it has none
/// (an empty name, or the kernel's "(none)" of a machine that never set one: seen in the VM rig's guest).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h != "(none)")
        .unwrap_or_else(|| "colink".to_owned())
}

/// Who answers a pairing with a stranger (a trust request: both devices show the same six digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Ask the person at the terminal.
    Terminal,
    /// Accept, showing the code (`serve --accept-new`).
    AcceptShowing,
}

/// Answers `manager`'s trust requests as `answer` says, printing each (as a JSON line with `json`). Without a
/// call to this, trust requests are refused.
pub(crate) fn answer_trust_requests(
    manager: &Manager,
    answer: Answer,
    json: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut requests = manager.trust_requests()?;
    Some(tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let (device, code) = (request.peer.device_id.clone(), request.code());
            let approved = match answer {
                Answer::AcceptShowing => true,
                Answer::Terminal => {
                    let question = format!(
                        "pairing with device {device}: does it show the code {code}? Confirm only if both \
                         screens show the same six digits [y/N] "
                    );
                    tokio::task::spawn_blocking(move || ask_yes_no(&question)).await.unwrap_or(false)
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "trust_request", "device": device, "code": code, "approved": approved})
                );
            } else {
                let how = match (answer, approved) {
                    (Answer::AcceptShowing, _) => "accepted (--accept-new)",
                    (_, true) => "confirmed",
                    (_, false) => "refused",
                };
                println!("pairing with device {device}: code {code}: {how}");
            }
            if approved { request.approve() } else { request.refuse() }
        }
    }))
}

/// Asks `question` on stderr and reads a line from stdin: yes only for `y`/`yes`.
fn ask_yes_no(question: &str) -> bool {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Whether stdin is a terminal a person can answer on.
pub(crate) fn interactive() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal()
}

/// A failed connect as a one-line error (exit code 4).
pub(crate) fn connect_failed(device: DeviceId, result: &ConnectResult) -> CliError {
    if let Some(trust) = &result.trust {
        return CliError::unreachable(format_args!("cannot connect to {device}: {}", trust_advice(trust)));
    }
    let what = match result.error_code {
        Some(ConnectErrorCode::PeerAppRejected) => "the peer app rejected the session".to_owned(),
        Some(ConnectErrorCode::PeerAbilityNoOncollaborate) => {
            "no app listens there (is `colink serve` running with the same --app?)".to_owned()
        }
        Some(ConnectErrorCode::SystemInternalError) => "the device was not found or did not answer in 10 s".to_owned(),
        Some(c) => format!("{c:?}"),
        None => "unknown reason".to_owned(),
    };
    // The reason is the peer's words: escaped, so a rejection cannot write escape sequences to the terminal.
    let reason = result.reason.as_deref().map(|r| format!(" ({})", crate::term::printable(r))).unwrap_or_default();
    CliError::unreachable(format_args!("cannot connect to {device}: {what}{reason}"))
}

/// Why the secure handshake refused a link, and what a person can do about it.
pub(crate) fn trust_advice(e: &SecureError) -> String {
    const JOIN: &str = "put both devices in one account: `colink account create` on one, `colink account join CODE` \
                        on the other";
    match e {
        SecureError::NotInAccount => format!("it is not in this device's account; {JOIN}"),
        SecureError::PairingNotAccepted | SecureError::UnknownDeviceRefused => format!(
            "it does not know this device and pairs with no stranger now; {JOIN}, or pair: run `colink serve` there \
             on a terminal (or with --accept-new) and this command here on a terminal, and compare the codes"
        ),
        SecureError::RefusedByPeer => "its user refused the pairing (the codes must match on both screens)".into(),
        SecureError::RefusedLocally(_) => format!("refused here: it is unknown to this device; {JOIN}, or pair"),
        SecureError::Timeout => "the secure handshake timed out (was the pairing code confirmed in time?)".into(),
        SecureError::Busy => "it is busy with other new links, or refusing this adapter's address for a moment \
                              after a failed attempt from it; try again in a few seconds"
            .into(),
        other => format!("the secure handshake failed: {other}"),
    }
}

/// How a [`Screen`] answers a Bluetooth pairing it is asked to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirm {
    /// Ask the person at the terminal (the code for numeric comparison, a plain yes/no for Just Works).
    Ask,
    /// Confirm, showing the code (`pair --yes`, `serve --accept-new`, the demo's simulated users).
    Accept,
    /// Refuse: nobody is there to ask and nobody said to accept.
    Refuse,
}

impl Confirm {
    /// What `serve` does with a pairing a peer starts: accept with `--accept-new` (showing the code), ask when
    /// on a terminal, refuse otherwise.
    pub(crate) fn for_serve(accept_new: bool, interactive: bool) -> Self {
        match (accept_new, interactive) {
            (true, _) => Self::Accept,
            (false, true) => Self::Ask,
            (false, false) => Self::Refuse,
        }
    }
}

/// A pairing agent for a screen with a yes/no button: records (and optionally prints) the passkey, and confirms
/// a pairing as its [`Confirm`] says.
pub(crate) struct Screen {
    pub(crate) who: String,
    pub(crate) shown: Arc<Mutex<Option<Passkey>>>,
    pub(crate) print: bool,
    pub(crate) confirm: Confirm,
    /// Print what it shows as JSON lines (`serve --json`) instead of text.
    pub(crate) json: bool,
}

impl Screen {
    pub(crate) fn new(who: &str, print: bool, confirm: Confirm) -> Self {
        Self { who: who.to_owned(), shown: Arc::default(), print, confirm, json: false }
    }

    /// The same agent printing JSON lines: `{"event":"pairing","peer":…,"passkey":…,"approved":…}`.
    pub(crate) fn with_json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    fn say(&self, peer: PeerAddress, passkey: Option<Passkey>, approved: bool, text: String) {
        if !self.print {
            return;
        }
        if self.json {
            let event = serde_json::json!({
                "event": "pairing", "peer": peer.to_string(), "passkey": passkey.map(|p| p.to_string()),
                "approved": approved,
            });
            println!("{event}");
        } else {
            let how = match (self.confirm, approved) {
                (Confirm::Accept, _) => "",
                (_, true) => ": confirmed",
                (Confirm::Refuse, false) => ": refused (not on a terminal; --accept-new accepts)",
                (_, false) => ": refused",
            };
            println!("{}: {text}{how}", self.who);
        }
    }

    pub(crate) fn passkey(&self) -> Option<Passkey> {
        *self.shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides a pairing with `peer` (`passkey`: the code both screens show; none for Just Works), says so, and
    /// answers the agent call.
    async fn decide(&self, peer: PeerAddress, passkey: Option<Passkey>) -> AgentResult<()> {
        if let Some(p) = passkey {
            *self.shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p);
        }
        let text = match passkey {
            Some(p) => format!("Bluetooth pairing with {peer}: passkey {p}"),
            None => format!("Bluetooth pairing with {peer} (just works, no code to compare)"),
        };
        let approved = match self.confirm {
            Confirm::Accept => true,
            Confirm::Refuse => false,
            Confirm::Ask => {
                let question = match passkey {
                    Some(p) => format!("{}: does {peer} show {p} too? [y/N] ", self.who),
                    None => format!("{}: pair with {peer}? [y/N] ", self.who),
                };
                tokio::task::spawn_blocking(move || ask_yes_no(&question)).await.unwrap_or(false)
            }
        };
        self.say(peer, passkey, approved, text);
        if approved { Ok(()) } else { Err(AgentRejected) }
    }
}

impl Agent for Screen {
    fn io_capability(&self) -> IoCapability {
        IoCapability::DisplayYesNo
    }

    fn confirm_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        Box::pin(self.decide(peer, Some(passkey)))
    }

    fn confirm_just_works(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<()>> {
        Box::pin(self.decide(peer, None))
    }

    fn display_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        *self.shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(passkey);
        let approved = self.confirm != Confirm::Refuse;
        self.say(peer, Some(passkey), approved, format!("type {passkey} on {peer}"));
        Box::pin(async move { if approved { Ok(()) } else { Err(AgentRejected) } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_confirms_a_bluetooth_pairing_only_when_told_or_asked() {
        assert_eq!(Confirm::for_serve(true, false), Confirm::Accept);
        assert_eq!(Confirm::for_serve(true, true), Confirm::Accept);
        assert_eq!(Confirm::for_serve(false, true), Confirm::Ask);
        assert_eq!(Confirm::for_serve(false, false), Confirm::Refuse);
    }

    #[tokio::test]
    async fn a_refusing_screen_refuses_every_kind_of_pairing() {
        let peer = PeerAddress::le_public(colink_ble::Address::new([1, 2, 3, 4, 5, 6]));
        let screen = Screen::new("serve", false, Confirm::Refuse);
        assert!(screen.confirm_just_works(peer).await.is_err());
        assert!(screen.confirm_passkey(peer, Passkey::new_wrapping(123_456)).await.is_err());
        assert!(screen.display_passkey(peer, Passkey::new_wrapping(123_456)).await.is_err());
        let accepting = Screen::new("pair", false, Confirm::Accept);
        assert!(accepting.confirm_passkey(peer, Passkey::new_wrapping(654_321)).await.is_ok());
        assert_eq!(accepting.passkey(), Passkey::new(654_321));
    }

    #[test]
    fn app_names_parse() {
        let a: AppName = DEFAULT_APP.parse().unwrap();
        assert_eq!(a.to_string(), DEFAULT_APP);
        assert!("a/b".parse::<AppName>().is_err());
        assert!("a//c".parse::<AppName>().is_err());
        let long = format!("{}/entry/Main", "b".repeat(1024));
        assert!(long.parse::<AppName>().unwrap_err().contains("bundle_name"));
    }

    #[test]
    fn identities_persist_per_state_dir_unless_ephemeral() {
        let dir = std::env::temp_dir().join(format!("colink-cli-test-{}", std::process::id()));
        let a = security(&dir, true, Strangers::Refuse).unwrap().device_id();
        let b = security(&dir, true, Strangers::Refuse).unwrap().device_id();
        assert_eq!(a, b);
        let c = security(&dir, false, Strangers::Refuse).unwrap().device_id();
        assert_ne!(a, c);
        let _ = std::fs::remove_dir_all(dir);
    }
}
