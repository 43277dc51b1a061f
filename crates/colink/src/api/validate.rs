//! The validation rules of api.md, one function per rule, each naming the argument it blames.
//!
//! Every function is pure: it looks only at its arguments (never at sessions or links), so the Manager can run
//! them before touching any state. Unknown-id checks (401) need the session table and live in the Manager.
//!
//! # Order of checks
//!
//! An operation that breaks several rules reports the first of, in this order:
//!
//! 1. `201`: the caller lacks `ohos.permission.DISTRIBUTED_DATASYNC`;
//! 2. `202`: a non-system caller uses a system operation, option or event;
//! 3. `401`: the arguments, in the reference's argument order, and within a record in field order.
//!
//! Authorization comes first so a caller that may not use an operation learns nothing about the arguments it
//! would have needed (the convention of OpenHarmony's access-controlled APIs; the reference's NAPI layer also
//! checks `IsSystemApp` before parsing the arguments of `sendImage` and of `on`/`off`).

use std::collections::BTreeMap;

use colink_proto::MAX_STRING_LEN;

use super::caller::{Caller, Permission};
use super::enums::{ReferenceEnum, StartOptionParams, StreamRole};
use super::error::Error;
use super::events::EventKind;
use super::types::{ConnectOptions, PeerInfo};

/// Longest string argument in bytes of UTF-8: every string must be shorter than 1024 bytes.
pub const MAX_STRING_BYTES: usize = MAX_STRING_LEN;

/// Most entries in `ConnectOptions::parameters`. The peer's session engine rejects a connect request with more
/// as malformed, so colink refuses them up front.
pub const MAX_PARAMETERS: usize = 256;

/// Most bytes (keys plus values) in `ConnectOptions::parameters`. A connect request travels as one control
/// message of at most 64 KiB together with both peers' names (up to ~10 KiB); this bound keeps it well inside.
pub const MAX_PARAMETER_BYTES: usize = 32 * 1024;

/// Rule: a string argument is shorter than 1024 bytes of UTF-8 (bytes, not characters: "é" counts 2).
pub fn string_arg(arg: &'static str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_STRING_BYTES {
        return Err(Error::invalid_arg(
            arg,
            format_args!("must be shorter than 1024 bytes of UTF-8, got {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Rule: a required string argument is not empty and shorter than 1024 bytes of UTF-8.
pub fn required_string_arg(arg: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid_arg(arg, "must not be empty"));
    }
    string_arg(arg, value)
}

/// `createAbilityConnectionSession(serviceName, ...)`: the service name is required and < 1024 bytes.
pub fn service_name(name: &str) -> Result<(), Error> {
    required_string_arg("service_name", name)
}

/// `createAbilityConnectionSession(_, context, ...)`: the calling app's bundle, module and ability names are
/// required and < 1024 bytes (blamed as `context.bundle_name`, ...).
pub fn caller_identity(caller: &Caller) -> Result<(), Error> {
    required_string_arg("context.bundle_name", caller.bundle_name())?;
    required_string_arg("context.module_name", caller.module_name())?;
    required_string_arg("context.ability_name", caller.ability_name())
}

/// `PeerInfo`: `device_id`, `bundle_name`, `module_name` and `ability_name` are required; `service_name` may be
/// absent (`None`, meaning "the session's") but not empty; every field is < 1024 bytes. Blamed as
/// `peer_info.<field>`.
pub fn peer_info(peer: &PeerInfo) -> Result<(), Error> {
    required_string_arg("peer_info.device_id", &peer.device_id)?;
    required_string_arg("peer_info.bundle_name", &peer.bundle_name)?;
    required_string_arg("peer_info.module_name", &peer.module_name)?;
    required_string_arg("peer_info.ability_name", &peer.ability_name)?;
    if let Some(service) = &peer.service_name {
        if service.is_empty() {
            return Err(Error::invalid_arg(
                "peer_info.service_name",
                "must not be empty (use None to fall back to the session's service name)",
            ));
        }
        string_arg("peer_info.service_name", service)?;
    }
    Ok(())
}

/// `ConnectOptions`: `need_send_stream` and `need_receive_stream` are not both set.
pub fn stream_flags(options: &ConnectOptions) -> Result<(), Error> {
    if options.need_send_stream && options.need_receive_stream {
        return Err(Error::invalid_arg(
            "connect_options.need_receive_stream",
            "need_send_stream and need_receive_stream must not both be set",
        ));
    }
    Ok(())
}

/// `ConnectOptions.startOptions` as the reference's number: only 0 (foreground) and 1 (background).
pub fn start_options(value: i32) -> Result<StartOptionParams, Error> {
    StartOptionParams::from_number(value).map_err(|_| {
        Error::invalid_arg(
            "connect_options.start_options",
            format_args!("must be START_IN_FOREGROUND = 0 or START_IN_BACKGROUND = 1, got {value}"),
        )
    })
}

/// `ConnectOptions.parameters`: at most [`MAX_PARAMETERS`] entries and [`MAX_PARAMETER_BYTES`] bytes in all;
/// every key and value < 1024 bytes.
pub fn parameters(parameters: &BTreeMap<String, String>) -> Result<(), Error> {
    const ARG: &str = "connect_options.parameters";
    if parameters.len() > MAX_PARAMETERS {
        return Err(Error::invalid_arg(
            ARG,
            format_args!("must have at most {MAX_PARAMETERS} entries, got {}", parameters.len()),
        ));
    }
    let mut total = 0usize;
    for (k, v) in parameters {
        if k.len() > MAX_STRING_BYTES {
            return Err(Error::invalid_arg(
                ARG,
                format_args!("key {:?}...: must be shorter than 1024 bytes of UTF-8, got {} bytes", prefix(k), k.len()),
            ));
        }
        if v.len() > MAX_STRING_BYTES {
            return Err(Error::invalid_arg(
                ARG,
                format_args!("value of {k:?}: must be shorter than 1024 bytes of UTF-8, got {} bytes", v.len()),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_PARAMETER_BYTES {
        return Err(Error::invalid_arg(
            ARG,
            format_args!("keys and values must total at most {MAX_PARAMETER_BYTES} bytes, got {total}"),
        ));
    }
    Ok(())
}

/// `202` rule of `ConnectOptions`: starting the peer in the background and asking for streams are system
/// features.
pub fn connect_options_system(options: &ConnectOptions, caller: &Caller) -> Result<(), Error> {
    if options.start_options == StartOptionParams::StartInBackground {
        caller.check_system("connect_options.start_options = START_IN_BACKGROUND")?;
    }
    if options.need_send_stream {
        caller.check_system("connect_options.need_send_stream")?;
    }
    if options.need_receive_stream {
        caller.check_system("connect_options.need_receive_stream")?;
    }
    Ok(())
}

/// `401` rules of `ConnectOptions`: stream flags, then parameters.
pub fn connect_options(options: &ConnectOptions) -> Result<(), Error> {
    stream_flags(options)?;
    parameters(&options.parameters)
}

/// `createAbilityConnectionSession(serviceName, context, peerInfo, connectOptions)`: every rule, in the order
/// of the module docs: `201` without `DISTRIBUTED_DATASYNC`; `202` for background start or stream flags from a
/// non-system caller; then `401` for `service_name`, the caller's identity (`context`), `peer_info` (field by
/// field) and `connect_options` (stream flags, parameters).
pub fn create_session(service: &str, peer: &PeerInfo, options: &ConnectOptions, caller: &Caller) -> Result<(), Error> {
    caller.check_permission_for("create_session", Permission::DistributedDatasync)?;
    connect_options_system(options, caller)?;
    service_name(service)?;
    caller_identity(caller)?;
    peer_info(peer)?;
    connect_options(options)
}

/// `sendMessage(id, msg)`: the message is not empty and < 1024 bytes.
pub fn message(msg: &str) -> Result<(), Error> {
    required_string_arg("msg", msg)
}

/// `sendData(id, data)`: the payload's length fits the protocol's u32 length field.
pub fn data_len(len: usize) -> Result<(), Error> {
    if u32::try_from(len).is_err() {
        return Err(Error::invalid_arg("data", format_args!("must be at most {} bytes, got {len}", u32::MAX)));
    }
    Ok(())
}

/// `acceptConnect(id, token)`: the token is not empty and < 1024 bytes.
pub fn token(token: &str) -> Result<(), Error> {
    required_string_arg("token", token)
}

/// `reject(token, reason)`: the token, then the reason, are not empty and < 1024 bytes.
pub fn reject(token: &str, reason: &str) -> Result<(), Error> {
    self::token(token)?;
    required_string_arg("reason", reason)
}

/// `setSurfaceId(streamId, surfaceId, param)`: a surface id is the decimal form of a u64, < 1024 bytes.
pub fn surface_id(id: &str) -> Result<u64, Error> {
    required_string_arg("surface_id", id)?;
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid_arg("surface_id", format_args!("must be a decimal number, got {id:?}")));
    }
    id.parse::<u64>().map_err(|_| Error::invalid_arg("surface_id", format_args!("must fit in 64 bits, got {id}")))
}

/// `sendImage(id, image, quality)`: the JPEG quality is in 0..=100 (the reference's default is 30).
pub fn image_quality(quality: i32) -> Result<u8, Error> {
    u8::try_from(quality)
        .ok()
        .filter(|q| *q <= 100)
        .ok_or_else(|| Error::invalid_arg("quality", format_args!("must be in 0..=100, got {quality}")))
}

/// `createStream(id, param)`: a SOURCE stream needs the session's `need_send_stream`, a SINK stream its
/// `need_receive_stream`.
pub fn stream_role(role: StreamRole, options: &ConnectOptions) -> Result<(), Error> {
    let (allowed, flag) = match role {
        StreamRole::Source => (options.need_send_stream, "need_send_stream"),
        StreamRole::Sink => (options.need_receive_stream, "need_receive_stream"),
    };
    if !allowed {
        return Err(Error::invalid_arg(
            "param.role",
            format_args!("a {role:?} stream needs the session's connect option {flag}"),
        ));
    }
    Ok(())
}

/// `on` / `off(type, ...)`: `receiveImage` and `collaborateEvent` are system events (`202` otherwise).
pub fn event_kind(kind: EventKind, caller: &Caller) -> Result<(), Error> {
    if kind.is_system_only() {
        caller.check_system(kind.as_str())?;
    }
    Ok(())
}

/// The first characters of a long string, for messages.
fn prefix(s: &str) -> &str {
    let mut end = s.len().min(16);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Caller {
        Caller::new("com.example", "entry", "Main").grant(Permission::DistributedDatasync)
    }

    fn peer() -> PeerInfo {
        PeerInfo::new("dev-1", "com.example", "entry", "Main")
    }

    fn arg_of(r: Result<impl std::fmt::Debug, Error>) -> (i32, Option<String>) {
        let e = r.unwrap_err();
        (e.code(), e.argument().map(str::to_owned))
    }

    fn bad(arg: &str) -> (i32, Option<String>) {
        (401, Some(arg.to_owned()))
    }

    #[test]
    fn strings_must_be_shorter_than_1024_bytes() {
        assert_eq!(string_arg("x", &"a".repeat(1023)), Ok(()));
        assert_eq!(arg_of(string_arg("x", &"a".repeat(1024))), bad("x"));
        assert_eq!(string_arg("x", ""), Ok(()));
    }

    #[test]
    fn the_limit_counts_utf8_bytes_not_characters() {
        // 511 two-byte characters = 1022 bytes, plus one = 1023: fine; one more byte: too long.
        let s = "é".repeat(511) + "a";
        assert_eq!(s.len(), 1023);
        assert_eq!(string_arg("x", &s), Ok(()));
        let s = "é".repeat(512);
        assert_eq!((s.len(), s.chars().count()), (1024, 512));
        assert_eq!(arg_of(string_arg("x", &s)), bad("x"));
        // 4-byte characters: 255 × 4 = 1020 + 3 = 1023 bytes.
        let s = "🦀".repeat(255) + "abc";
        assert_eq!(string_arg("x", &s), Ok(()));
        let s = "🦀".repeat(256);
        let e = string_arg("x", &s).unwrap_err();
        assert!(e.message().contains("got 1024 bytes"), "{e}");
    }

    #[test]
    fn required_strings_must_not_be_empty() {
        let e = required_string_arg("token", "").unwrap_err();
        assert_eq!((e.code(), e.argument()), (401, Some("token")));
        assert!(e.message().contains("must not be empty"), "{e}");
        assert_eq!(required_string_arg("token", "t"), Ok(()));
    }

    #[test]
    fn service_name_rules() {
        assert_eq!(service_name("svc"), Ok(()));
        assert_eq!(arg_of(service_name("")), bad("service_name"));
        assert_eq!(arg_of(service_name(&"s".repeat(1024))), bad("service_name"));
        assert_eq!(service_name(&"s".repeat(1023)), Ok(()));
    }

    #[test]
    fn every_peer_info_field_is_checked_by_name() {
        assert_eq!(peer_info(&peer()), Ok(()));
        let long = "x".repeat(1024);
        type Set = fn(&mut PeerInfo, String);
        let fields: [(&str, Set); 4] = [
            ("peer_info.device_id", |p, v| p.device_id = v),
            ("peer_info.bundle_name", |p, v| p.bundle_name = v),
            ("peer_info.module_name", |p, v| p.module_name = v),
            ("peer_info.ability_name", |p, v| p.ability_name = v),
        ];
        for (name, set) in fields {
            for value in [String::new(), long.clone()] {
                let mut p = peer();
                set(&mut p, value);
                assert_eq!(arg_of(peer_info(&p)), bad(name));
            }
            let mut p = peer();
            set(&mut p, "x".repeat(1023));
            assert_eq!(peer_info(&p), Ok(()));
        }
    }

    #[test]
    fn peer_service_name_is_optional_but_not_empty() {
        assert_eq!(peer_info(&peer().with_service_name("svc")), Ok(()));
        assert_eq!(arg_of(peer_info(&peer().with_service_name(""))), bad("peer_info.service_name"));
        assert_eq!(arg_of(peer_info(&peer().with_service_name("s".repeat(1024)))), bad("peer_info.service_name"));
    }

    #[test]
    fn both_stream_flags_are_rejected() {
        let mut o = ConnectOptions { need_send_stream: true, ..Default::default() };
        assert_eq!(stream_flags(&o), Ok(()));
        o.need_receive_stream = true;
        assert_eq!(arg_of(stream_flags(&o)), bad("connect_options.need_receive_stream"));
        o.need_send_stream = false;
        assert_eq!(stream_flags(&o), Ok(()));
    }

    #[test]
    fn start_options_outside_0_and_1_are_rejected() {
        assert_eq!(start_options(0), Ok(StartOptionParams::StartInForeground));
        assert_eq!(start_options(1), Ok(StartOptionParams::StartInBackground));
        for v in [-1, 2, i32::MAX] {
            assert_eq!(arg_of(start_options(v)), bad("connect_options.start_options"));
        }
    }

    #[test]
    fn parameter_limits() {
        let mut p = BTreeMap::new();
        p.insert("k".to_owned(), "v".repeat(1023));
        assert_eq!(parameters(&p), Ok(()));
        p.insert("k".to_owned(), "v".repeat(1024));
        assert_eq!(arg_of(parameters(&p)), bad("connect_options.parameters"));
        let mut p = BTreeMap::new();
        p.insert("k".repeat(1024), String::new());
        assert_eq!(arg_of(parameters(&p)), bad("connect_options.parameters"));

        let many: BTreeMap<String, String> = (0..MAX_PARAMETERS).map(|i| (i.to_string(), String::new())).collect();
        assert_eq!(parameters(&many), Ok(()));
        let mut too_many = many;
        too_many.insert("one more".into(), String::new());
        assert_eq!(arg_of(parameters(&too_many)), bad("connect_options.parameters"));

        // 32 values of 1000 bytes + short keys: over the total even though each entry is fine.
        let big: BTreeMap<String, String> = (0..33).map(|i| (format!("{i:02}"), "v".repeat(1000))).collect();
        let e = parameters(&big).unwrap_err();
        assert!(e.message().contains("total"), "{e}");
        let fits: BTreeMap<String, String> = (0..32).map(|i| (format!("{i:02}"), "v".repeat(1000))).collect();
        assert_eq!(parameters(&fits), Ok(()));
    }

    #[test]
    fn background_start_and_stream_flags_are_system_only() {
        let user = app();
        let system = app().system(true);
        let bg = ConnectOptions { start_options: StartOptionParams::StartInBackground, ..Default::default() };
        let send = ConnectOptions { need_send_stream: true, ..Default::default() };
        let recv = ConnectOptions { need_receive_stream: true, ..Default::default() };
        for o in [&bg, &send, &recv] {
            assert_eq!(connect_options_system(o, &user).unwrap_err().code(), 202);
            assert_eq!(connect_options_system(o, &system), Ok(()));
        }
        assert_eq!(connect_options_system(&ConnectOptions::default(), &user), Ok(()));
        let data = ConnectOptions { need_send_data: true, ..Default::default() };
        assert_eq!(connect_options_system(&data, &user), Ok(()));
    }

    #[test]
    fn create_session_accepts_a_valid_call() {
        assert_eq!(create_session("svc", &peer(), &ConnectOptions::default(), &app()), Ok(()));
    }

    #[test]
    fn create_session_checks_permission_then_system_then_arguments() {
        let no_perm = Caller::new("com.example", "entry", "Main");
        let bg_both = ConnectOptions {
            start_options: StartOptionParams::StartInBackground,
            need_send_stream: true,
            need_receive_stream: true,
            ..Default::default()
        };
        let empty_peer = PeerInfo::default();
        // Everything wrong: the permission is reported first.
        assert_eq!(create_session("", &empty_peer, &bg_both, &no_perm).unwrap_err().code(), 201);
        // With the permission: the system check.
        assert_eq!(create_session("", &empty_peer, &bg_both, &app()).unwrap_err().code(), 202);
        // As a system app: the arguments in order.
        let sys = app().system(true);
        assert_eq!(arg_of(create_session("", &empty_peer, &bg_both, &sys)), bad("service_name"));
        let anon = Caller::new("", "entry", "Main").grant(Permission::DistributedDatasync).system(true);
        assert_eq!(arg_of(create_session("svc", &empty_peer, &bg_both, &anon)), bad("context.bundle_name"));
        assert_eq!(arg_of(create_session("svc", &empty_peer, &bg_both, &sys)), bad("peer_info.device_id"));
        assert_eq!(arg_of(create_session("svc", &peer(), &bg_both, &sys)), bad("connect_options.need_receive_stream"));
        let mut o = ConnectOptions::default();
        o.parameters.insert("k".into(), "v".repeat(1024));
        assert_eq!(arg_of(create_session("svc", &peer(), &o, &sys)), bad("connect_options.parameters"));
    }

    #[test]
    fn caller_identity_is_required() {
        for (c, arg) in [
            (Caller::new("", "m", "a"), "context.bundle_name"),
            (Caller::new("b", "", "a"), "context.module_name"),
            (Caller::new("b", "m", ""), "context.ability_name"),
            (Caller::new("b", "m", "a".repeat(1024)), "context.ability_name"),
        ] {
            assert_eq!(arg_of(caller_identity(&c)), bad(arg));
        }
        assert_eq!(caller_identity(&app()), Ok(()));
    }

    #[test]
    fn message_rules() {
        assert_eq!(message("hi"), Ok(()));
        assert_eq!(arg_of(message("")), bad("msg"));
        assert_eq!(message(&"m".repeat(1023)), Ok(()));
        assert_eq!(arg_of(message(&"m".repeat(1024))), bad("msg"));
        assert_eq!(arg_of(message(&"ü".repeat(512))), bad("msg"));
    }

    #[test]
    fn data_length_fits_u32() {
        assert_eq!(data_len(0), Ok(()));
        assert_eq!(data_len(u32::MAX as usize), Ok(()));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(arg_of(data_len(u32::MAX as usize + 1)), bad("data"));
    }

    #[test]
    fn token_and_reject_rules() {
        assert_eq!(token("t"), Ok(()));
        assert_eq!(arg_of(token("")), bad("token"));
        assert_eq!(arg_of(token(&"t".repeat(1024))), bad("token"));
        assert_eq!(reject("t", "busy"), Ok(()));
        assert_eq!(arg_of(reject("", "busy")), bad("token"));
        assert_eq!(arg_of(reject("t", "")), bad("reason"));
        assert_eq!(arg_of(reject("t", &"r".repeat(1024))), bad("reason"));
        assert_eq!(arg_of(reject("", "")), bad("token"));
    }

    #[test]
    fn surface_id_is_a_decimal_u64() {
        assert_eq!(surface_id("0"), Ok(0));
        assert_eq!(surface_id("18446744073709551615"), Ok(u64::MAX));
        for bad_id in ["", "-1", "+1", "1a", " 1", "0x10", "18446744073709551616"] {
            assert_eq!(arg_of(surface_id(bad_id)), bad("surface_id"), "{bad_id:?}");
        }
        assert_eq!(arg_of(surface_id(&"1".repeat(1024))), bad("surface_id"));
    }

    #[test]
    fn image_quality_is_0_to_100() {
        assert_eq!(image_quality(0), Ok(0));
        assert_eq!(image_quality(30), Ok(30));
        assert_eq!(image_quality(100), Ok(100));
        for q in [-1, 101, 256, i32::MIN] {
            assert_eq!(arg_of(image_quality(q)), bad("quality"));
        }
    }

    #[test]
    fn stream_roles_need_their_connect_option() {
        let send = ConnectOptions { need_send_stream: true, ..Default::default() };
        let recv = ConnectOptions { need_receive_stream: true, ..Default::default() };
        assert_eq!(stream_role(StreamRole::Source, &send), Ok(()));
        assert_eq!(stream_role(StreamRole::Sink, &recv), Ok(()));
        assert_eq!(arg_of(stream_role(StreamRole::Source, &recv)), bad("param.role"));
        assert_eq!(arg_of(stream_role(StreamRole::Sink, &send)), bad("param.role"));
        assert_eq!(arg_of(stream_role(StreamRole::Sink, &ConnectOptions::default())), bad("param.role"));
    }

    #[test]
    fn system_events_need_a_system_caller() {
        for kind in EventKind::ALL {
            let r = event_kind(kind, &app());
            if matches!(kind, EventKind::ReceiveImage | EventKind::CollaborateEvent) {
                assert_eq!(r.unwrap_err().code(), 202, "{kind}");
            } else {
                assert_eq!(r, Ok(()), "{kind}");
            }
            assert_eq!(event_kind(kind, &app().system(true)), Ok(()));
        }
    }
}
