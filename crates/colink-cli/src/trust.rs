//! `colink account …` and `colink trust …`: the shared account (join codes) and the devices this one trusts.
//!
//! Both work on the state directory only (no radio): `--state-dir`, else `$XDG_STATE_HOME/colink`.

use std::io::IsTerminal as _;
use std::path::Path;

use colink::trust::{Account, StateDir, TrustKind, TrustStore, unix_now};
use colink_ble::DeviceId;

use crate::error::{CliError, CliResult};
use crate::term::printable;

/// What `colink account` does.
#[derive(Debug, Clone)]
pub(crate) enum AccountOp {
    /// A new account; `force` replaces one this device already has.
    Create { force: bool },
    /// Join the account of this code.
    Join { code: String, force: bool },
    /// Show the account (with `code`, its join code again).
    Show { code: bool },
    /// Leave the account.
    Leave,
}

/// What `colink trust` does.
#[derive(Debug, Clone)]
pub(crate) enum TrustOp {
    /// List the known devices.
    List { json: bool },
    /// Forget one.
    Remove { device: DeviceId },
}

fn open(state: &Path) -> CliResult<StateDir> {
    StateDir::open(state).map_err(CliError::failure)
}

/// Runs `colink account …` on the state directory `state`.
pub(crate) fn account(state: &Path, op: AccountOp) -> CliResult {
    let dir = open(state)?;
    let current = dir.account().map_err(CliError::failure)?;
    match op {
        AccountOp::Create { force } => {
            refuse_replacing(current.as_ref(), force)?;
            let account = Account::create().map_err(|e| CliError::failure(format_args!("no random source: {e}")))?;
            dir.set_account(&account).map_err(CliError::failure)?;
            println!("created account {}", account.id());
            print_code(&account);
            println!("On each of your other devices: colink account join <the code above>");
            Ok(())
        }
        AccountOp::Join { code, force } => {
            let account = Account::from_join_code(&code).map_err(CliError::usage)?;
            if current.as_ref() == Some(&account) {
                println!("already in account {}", account.id());
                return Ok(());
            }
            refuse_replacing(current.as_ref(), force)?;
            dir.set_account(&account).map_err(CliError::failure)?;
            println!("joined account {}: devices in it now trust this one without asking", account.id());
            Ok(())
        }
        AccountOp::Show { code } => {
            let Some(account) = current else {
                println!("not in an account (colink account create, or colink account join CODE)");
                return Ok(());
            };
            println!("account {}", account.id());
            if code {
                print_code(&account);
            }
            Ok(())
        }
        AccountOp::Leave => {
            match current {
                Some(a) => {
                    dir.leave_account().map_err(CliError::failure)?;
                    println!(
                        "left account {}; devices trusted so far stay trusted until `colink trust remove`",
                        a.id()
                    );
                }
                None => println!("not in an account"),
            }
            Ok(())
        }
    }
}

fn refuse_replacing(current: Option<&Account>, force: bool) -> CliResult {
    match current {
        Some(a) if !force => Err(CliError::usage(format_args!(
            "this device is in account {} already; add --force to replace it (its devices stop trusting this one \
             by membership)",
            a.id()
        ))),
        _ => Ok(()),
    }
}

/// The join code, as text and — on a terminal — as a QR code to scan.
fn print_code(account: &Account) {
    let code = account.join_code();
    println!("join code: {code}");
    if std::io::stdout().is_terminal()
        && let Ok(qr) = qrcode::QrCode::new(code.as_bytes())
    {
        let picture = qr
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        println!("{picture}");
    }
    println!("Keep it secret: whoever has it joins the account.");
}

/// Runs `colink trust …` on the state directory `state`.
pub(crate) fn trust(state: &Path, op: TrustOp) -> CliResult {
    let dir = open(state)?;
    let mut store = dir.trust_store().map_err(CliError::failure)?;
    match op {
        TrustOp::List { json } => {
            if json {
                for line in json_lines(&store) {
                    println!("{line}");
                }
            } else {
                print!("{}", table(&store, unix_now()));
            }
            Ok(())
        }
        TrustOp::Remove { device } => {
            if !store.remove(&device) {
                return Err(CliError::usage(format_args!("{device} is not a trusted device (colink trust list)")));
            }
            store.save().map_err(CliError::failure)?;
            println!("{device} is no longer trusted: it must join the account or pair again");
            Ok(())
        }
    }
}

fn kind(k: TrustKind) -> &'static str {
    match k {
        TrustKind::Account => "account",
        TrustKind::Paired => "paired",
        _ => "other",
    }
}

/// The known devices as a table; names (peer strings) escaped.
fn table(store: &TrustStore, now: u64) -> String {
    let mut out = String::new();
    if store.peers().next().is_none() {
        out.push_str("no trusted devices yet (colink account join CODE, or pair on first connect)\n");
        return out;
    }
    out.push_str(&format!("{:<32}  {:<7}  {:<10}  {}\n", "DEVICE", "TRUST", "LAST SEEN", "NAME"));
    for p in store.peers() {
        let name = p.name.as_deref().map_or_else(|| "-".to_string(), printable);
        out.push_str(&format!("{:<32}  {:<7}  {:<10}  {name}\n", p.device_id, kind(p.trust), ago(now, p.last_seen)));
    }
    out
}

/// One JSON object a line per known device.
fn json_lines(store: &TrustStore) -> Vec<String> {
    store
        .peers()
        .map(|p| {
            serde_json::json!({
                "device_id": p.device_id.to_string(),
                "trust": kind(p.trust),
                "name": p.name,
                "public_key": p.public_key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "added": p.added,
                "last_seen": p.last_seen,
            })
            .to_string()
        })
        .collect()
}

/// `now - then` as a person reads it: `just now`, `5 min ago`, `3 h ago`, `2 d ago`.
fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_table_are_escaped_and_times_read_well() {
        let dir = std::env::temp_dir().join(format!("colink-cli-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let mut store = state.trust_store().unwrap();
        let id = DeviceId::from_bytes([1; 16]);
        store.pin(id, [2; 32], TrustKind::Paired, 1000).unwrap();
        store.touch(&id, 1000, Some("evil\u{1b}]0;pwned\u{7}\u{202e}"));
        let t = table(&store, 1000 + 7200);
        assert!(t.contains("2 h ago"), "{t}");
        assert!(!t.contains('\u{1b}') && !t.contains('\u{202e}') && !t.contains('\u{7}'), "{t:?}");
        assert!(t.contains("evil\\u{1b}]0;pwned"), "{t}");
        let j = json_lines(&store);
        assert_eq!(j.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&j[0]).unwrap();
        assert_eq!(v["trust"], "paired");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ages() {
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(100, 200), "just now");
        assert_eq!(ago(4000, 100), "1 h ago");
        assert_eq!(ago(86_400 * 3, 0), "3 d ago");
    }
}
