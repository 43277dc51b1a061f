//! Encoding of the session layer's payloads: handshake, session control, acknowledgements, keep-alives.
//! docs/sessions.md is the normative description; every decoder here checks lengths before it
//! allocates and never panics on peer input.

use bytes::{BufMut, Bytes, BytesMut};
use colink_frame::varint;

use super::types::{ConnectErrorCode, ConnectOptions, DisconnectReason, MAX_STRING_LEN, PeerInfo, StartOptions};

/// Wire channel of the link handshake (HELLO, AUTH, CLOSE); unsequenced, retransmitted by timer.
pub(crate) const CH_HANDSHAKE: u32 = 0;
/// Wire channel of session control (CONNECT, ACCEPT, REJECT, DISCONNECT); reliable and ordered.
pub(crate) const CH_CONTROL: u32 = 1;
/// Wire channel of ACK frames.
pub(crate) const CH_ACK: u32 = 2;
/// Wire channel of KEEP_ALIVE frames.
pub(crate) const CH_KEEPALIVE: u32 = 3;

pub(crate) const T_HELLO: u8 = 0x01;
pub(crate) const T_AUTH: u8 = 0x02;
pub(crate) const T_CLOSE: u8 = 0x03;
pub(crate) const T_CONNECT: u8 = 0x10;
pub(crate) const T_ACCEPT: u8 = 0x11;
pub(crate) const T_REJECT: u8 = 0x12;
pub(crate) const T_DISCONNECT: u8 = 0x13;

/// HELLO flag: the sender already holds the receiver's hello (a reply; never answered).
pub(crate) const HELLO_SEEN: u8 = 0x01;
/// ACK entry flag: the receiver saw a gap; resend from this position.
pub(crate) const ACK_NACK: u8 = 0x01;
/// ACK entry flag (version 2): the receiver's app has read every message it was handed on this channel, so the
/// next message may be sent whatever its size (docs/sessions.md §4.5).
pub(crate) const ACK_EMPTY: u8 = 0x02;
/// ACK flag (version 3): SACK blocks follow the entry's credit.
pub(crate) const ACK_SACK: u8 = 0x04;
/// ACK flag (version 3): the receiver holds fragments beyond the last SACK block given (or beyond the position,
/// with no blocks): blocks were left out for want of room or number.
pub(crate) const ACK_MORE: u8 = 0x08;
/// Most SACK blocks in one ACK entry (version 3).
pub(crate) const MAX_SACK_BLOCKS: usize = 16;
/// HELLO extension type 3 (version 2): the sender's receive window per session channel (docs/sessions.md §4.5).
pub(crate) const EXT_RECEIVE_WINDOW: u32 = 3;

/// Most handshake extensions in one hello.
const MAX_EXTENSIONS: usize = 16;
/// Most connect parameters.
const MAX_PARAMETERS: usize = 256;

/// A malformed payload: which message type failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// One handshake extension: a type and opaque bytes (docs/sessions.md §3.1). Type 1 carries the
/// authenticator's first message; other types are ignored by this version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) kind: u32,
    pub(crate) data: Bytes,
}

/// A receive position on one channel: every message before `seq` and fragments `0..frag` of message `seq`
/// are held by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Position {
    pub(crate) seq: u32,
    pub(crate) frag: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) flags: u8,
    pub(crate) min_version: u8,
    pub(crate) max_version: u8,
    pub(crate) device_id: String,
    pub(crate) max_frame: u32,
    pub(crate) keep_alive_ms: u32,
    pub(crate) idle_timeout_ms: u32,
    pub(crate) link_token: u64,
    pub(crate) resume_token: u64,
    pub(crate) resume_state: Vec<(u32, Position)>,
    pub(crate) extensions: Vec<Extension>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeMsg {
    Hello(Hello),
    Auth(Bytes),
    Close { code: u8, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived: encoded or handled right away
pub(crate) enum ControlMsg {
    Connect { session: u32, from: PeerInfo, to: PeerInfo, options: ConnectOptions },
    Accept { session: u32 },
    Reject { session: u32, code: ConnectErrorCode, reason: String },
    Disconnect { session: u32, reason: DisconnectReason },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct AckEntry {
    pub(crate) channel: u32,
    pub(crate) pos: Position,
    pub(crate) nack: bool,
    /// Version 2 and later: the receive credit granted with this position (docs/sessions.md §4.5).
    pub(crate) credit: Credit,
    /// Version 3: fragments held beyond `pos`, as ranges `[from, to)` of positions, ascending, disjoint, each
    /// beyond `pos` and the one before it (at most [`MAX_SACK_BLOCKS`]; docs/sessions.md §4.6).
    pub(crate) sacks: Vec<(Position, Position)>,
    /// Version 3: the receiver holds more beyond the last block than the blocks say (some were left out).
    pub(crate) more: bool,
}

/// The receive credit an ACK entry grants (version 2, docs/sessions.md §4.5): the sender may start a message
/// when the payload bytes of the messages from the entry's `seq` up to and including it fit in `room`, or,
/// with `empty`, when it is message `seq` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Credit {
    /// Payload bytes the receiver still takes beyond the messages its app has not read.
    pub(crate) room: u32,
    /// The receiver's app has read every message handed to it on this channel.
    pub(crate) empty: bool,
}

impl Hello {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64 + self.device_id.len());
        b.put_u8(T_HELLO);
        b.put_u8(self.flags);
        b.put_u8(self.min_version);
        b.put_u8(self.max_version);
        put_str(&mut b, &self.device_id);
        varint::put(&mut b, self.max_frame);
        varint::put(&mut b, self.keep_alive_ms);
        varint::put(&mut b, self.idle_timeout_ms);
        b.put_u64(self.link_token);
        b.put_u64(self.resume_token);
        varint::put(&mut b, self.resume_state.len() as u32);
        for (channel, pos) in &self.resume_state {
            varint::put(&mut b, *channel);
            varint::put(&mut b, pos.seq);
            varint::put(&mut b, pos.frag);
        }
        varint::put(&mut b, self.extensions.len() as u32);
        for e in &self.extensions {
            varint::put(&mut b, e.kind);
            varint::put(&mut b, e.data.len() as u32);
            b.extend_from_slice(&e.data);
        }
        b.freeze()
    }
}

impl HandshakeMsg {
    pub(crate) fn decode(payload: &Bytes) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "handshake message");
        match r.u8()? {
            T_HELLO => {
                r.what = "HELLO";
                let flags = r.u8()?;
                let min_version = r.u8()?;
                let max_version = r.u8()?;
                let device_id = r.string()?;
                let max_frame = r.varint()?;
                let keep_alive_ms = r.varint()?;
                let idle_timeout_ms = r.varint()?;
                let link_token = r.u64()?;
                let resume_token = r.u64()?;
                let n = r.count(3)?;
                let mut resume_state = Vec::with_capacity(n);
                for _ in 0..n {
                    let channel = r.varint()?;
                    let pos = Position { seq: r.varint()?, frag: r.varint()? };
                    resume_state.push((channel, pos));
                }
                let n = r.count(2)?;
                if n > MAX_EXTENSIONS {
                    return Err(Malformed("HELLO"));
                }
                let mut extensions = Vec::with_capacity(n);
                for _ in 0..n {
                    let kind = r.varint()?;
                    let len = r.varint()? as usize;
                    extensions.push(Extension { kind, data: r.bytes(len)? });
                }
                r.end()?;
                Ok(Self::Hello(Hello {
                    flags,
                    min_version,
                    max_version,
                    device_id,
                    max_frame,
                    keep_alive_ms,
                    idle_timeout_ms,
                    link_token,
                    resume_token,
                    resume_state,
                    extensions,
                }))
            }
            T_AUTH => Ok(Self::Auth(payload.slice(1..))),
            T_CLOSE => {
                r.what = "CLOSE";
                let code = r.u8()?;
                let message = r.string()?;
                r.end()?;
                Ok(Self::Close { code, message })
            }
            _ => Err(Malformed("handshake message type")),
        }
    }

    pub(crate) fn encode_auth(data: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(1 + data.len());
        b.put_u8(T_AUTH);
        b.extend_from_slice(data);
        b.freeze()
    }

    pub(crate) fn encode_close(code: u8, message: &str) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(T_CLOSE);
        b.put_u8(code);
        put_str(&mut b, truncate(message));
        b.freeze()
    }
}

impl ControlMsg {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Self::Connect { session, from, to, options } => {
                b.put_u8(T_CONNECT);
                varint::put(&mut b, *session);
                put_peer(&mut b, from);
                put_peer(&mut b, to);
                let flags = u8::from(options.need_send_data)
                    | u8::from(options.need_send_stream) << 1
                    | u8::from(options.need_receive_stream) << 2;
                b.put_u8(flags);
                b.put_u8(options.start_options as u8);
                varint::put(&mut b, options.parameters.len() as u32);
                for (k, v) in &options.parameters {
                    put_str(&mut b, k);
                    put_str(&mut b, v);
                }
            }
            Self::Accept { session } => {
                b.put_u8(T_ACCEPT);
                varint::put(&mut b, *session);
            }
            Self::Reject { session, code, reason } => {
                b.put_u8(T_REJECT);
                varint::put(&mut b, *session);
                b.put_u8(*code as u8);
                put_str(&mut b, truncate(reason));
            }
            Self::Disconnect { session, reason } => {
                b.put_u8(T_DISCONNECT);
                varint::put(&mut b, *session);
                b.put_u8(*reason as u8);
            }
        }
        b.freeze()
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "control message");
        let msg = match r.u8()? {
            T_CONNECT => {
                r.what = "CONNECT";
                let session = r.varint()?;
                let from = r.peer()?;
                let to = r.peer()?;
                let flags = r.u8()?;
                if flags & !0x07 != 0 {
                    return Err(Malformed("CONNECT flags"));
                }
                let start_options = StartOptions::from_u8(r.u8()?).ok_or(Malformed("CONNECT start options"))?;
                let n = r.count(2)?;
                if n > MAX_PARAMETERS {
                    return Err(Malformed("CONNECT parameters"));
                }
                let mut parameters = std::collections::BTreeMap::new();
                for _ in 0..n {
                    let k = r.string()?;
                    let v = r.string()?;
                    parameters.insert(k, v);
                }
                let options = ConnectOptions {
                    need_send_data: flags & 1 != 0,
                    need_send_stream: flags & 2 != 0,
                    need_receive_stream: flags & 4 != 0,
                    start_options,
                    parameters,
                };
                Self::Connect { session, from, to, options }
            }
            T_ACCEPT => Self::Accept { session: r.varint()? },
            T_REJECT => {
                r.what = "REJECT";
                let session = r.varint()?;
                let code = ConnectErrorCode::from_u8(r.u8()?).ok_or(Malformed("REJECT code"))?;
                Self::Reject { session, code, reason: r.string()? }
            }
            T_DISCONNECT => {
                r.what = "DISCONNECT";
                let session = r.varint()?;
                let reason = DisconnectReason::from_u8(r.u8()?).ok_or(Malformed("DISCONNECT reason"))?;
                Self::Disconnect { session, reason }
            }
            _ => return Err(Malformed("control message type")),
        };
        r.end()?;
        Ok(msg)
    }
}

/// The SACK blocks of `e` as the wire carries them: `(start seq − entry seq, start frag, end seq − start seq,
/// end frag)`; blocks that do not follow the rules are left out (they never are, as the receiver builds them).
fn sack_fields(e: &AckEntry) -> Vec<[u32; 4]> {
    e.sacks
        .iter()
        .take(MAX_SACK_BLOCKS)
        .filter_map(|(from, to)| {
            Some([from.seq.checked_sub(e.pos.seq)?, from.frag, to.seq.checked_sub(from.seq)?, to.frag])
        })
        .collect()
}

/// Encodes ACK entries in the format of `version`, as many as fit in `room` bytes; returns the payload and how
/// many were taken. From version 2 every entry carries its receive credit; in version 3 an entry carries as
/// many of its SACK blocks as fit.
pub(crate) fn encode_ack(entries: &[AckEntry], room: usize, version: u8) -> (Bytes, usize) {
    let credit = version >= 2;
    let mut body = BytesMut::new();
    let mut taken = 0;
    for e in entries {
        let extra = if credit { varint::len(e.credit.room) } else { 0 };
        let len = varint::len(e.channel) + varint::len(e.pos.seq) + varint::len(e.pos.frag) + 1 + extra;
        if taken > 0 && 5 + body.len() + len > room {
            break;
        }
        let mut blocks = if version >= 3 { sack_fields(e) } else { Vec::new() };
        let all = blocks.len();
        let blocks_len = |b: &[[u32; 4]]| {
            if b.is_empty() { 0 } else { 1 + b.iter().flatten().map(|v| varint::len(*v)).sum::<usize>() }
        };
        while !blocks.is_empty() && 5 + body.len() + len + blocks_len(&blocks) > room {
            blocks.pop();
        }
        varint::put(&mut body, e.channel);
        varint::put(&mut body, e.pos.seq);
        varint::put(&mut body, e.pos.frag);
        let mut flags = if e.nack { ACK_NACK } else { 0 };
        if credit {
            if e.credit.empty {
                flags |= ACK_EMPTY;
            }
            if !blocks.is_empty() {
                flags |= ACK_SACK;
            }
            if version >= 3 && (e.more || blocks.len() < all || e.sacks.len() > all) {
                flags |= ACK_MORE;
            }
            body.put_u8(flags);
            varint::put(&mut body, e.credit.room);
            if !blocks.is_empty() {
                body.put_u8(blocks.len() as u8);
                for v in blocks.iter().flatten() {
                    varint::put(&mut body, *v);
                }
            }
        } else {
            body.put_u8(flags);
        }
        taken += 1;
    }
    let mut b = BytesMut::with_capacity(5 + body.len());
    varint::put(&mut b, taken as u32);
    b.extend_from_slice(&body);
    (b.freeze(), taken)
}

/// Decodes ACK entries in the format of `version`: from version 2 each carries its receive credit (in version 1
/// the EMPTY flag is malformed), in version 3 SACK blocks may follow (in earlier versions the SACK flag is
/// malformed). Blocks must lie beyond the entry's position, ascending and disjoint, at most
/// [`MAX_SACK_BLOCKS`].
pub(crate) fn decode_ack(payload: &Bytes, version: u8) -> Result<Vec<AckEntry>, Malformed> {
    let credit = version >= 2;
    let mut r = Reader::new(payload, "ACK");
    let n = r.count(if credit { 5 } else { 4 })?;
    let known = match version {
        0 | 1 => ACK_NACK,
        2 => ACK_NACK | ACK_EMPTY,
        _ => ACK_NACK | ACK_EMPTY | ACK_SACK | ACK_MORE,
    };
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = r.varint()?;
        let pos = Position { seq: r.varint()?, frag: r.varint()? };
        let flags = r.u8()?;
        if flags & !known != 0 {
            return Err(Malformed("ACK flags"));
        }
        let credit =
            if credit { Credit { room: r.varint()?, empty: flags & ACK_EMPTY != 0 } } else { Credit::default() };
        let mut sacks = Vec::new();
        if flags & ACK_SACK != 0 {
            let k = usize::from(r.u8()?);
            if k == 0 || k > MAX_SACK_BLOCKS {
                return Err(Malformed("ACK SACK block count"));
            }
            let mut after = pos;
            for _ in 0..k {
                let from_seq = pos.seq.checked_add(r.varint()?).ok_or(Malformed("ACK SACK block"))?;
                let from = Position { seq: from_seq, frag: r.varint()? };
                let to = Position {
                    seq: from_seq.checked_add(r.varint()?).ok_or(Malformed("ACK SACK block"))?,
                    frag: r.varint()?,
                };
                if from <= after || to <= from {
                    return Err(Malformed("ACK SACK block"));
                }
                sacks.push((from, to));
                after = to;
            }
        }
        v.push(AckEntry { channel, pos, nack: flags & ACK_NACK != 0, credit, sacks, more: flags & ACK_MORE != 0 });
    }
    r.end()?;
    Ok(v)
}

fn put_str(b: &mut BytesMut, s: &str) {
    varint::put(b, s.len() as u32);
    b.extend_from_slice(s.as_bytes());
}

fn put_peer(b: &mut BytesMut, p: &PeerInfo) {
    for s in [&p.device_id, &p.bundle_name, &p.module_name, &p.ability_name, &p.service_name] {
        put_str(b, s);
    }
}

/// Cuts `s` to at most [`MAX_STRING_LEN`] bytes on a character boundary.
fn truncate(s: &str) -> &str {
    if s.len() <= MAX_STRING_LEN {
        return s;
    }
    let mut end = MAX_STRING_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes, what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn err(&self) -> Malformed {
        Malformed(self.what)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        let b = *self.buf.get(self.pos).ok_or(self.err())?;
        self.pos += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let s = self.buf.get(self.pos..self.pos + 8).ok_or(self.err())?;
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }

    /// An unsigned LEB128 value of at most 32 bits, minimally encoded (as in docs/protocol.md §2.4).
    fn varint(&mut self) -> Result<u32, Malformed> {
        varint::get(self.buf, &mut self.pos).map_err(|_| self.err())
    }

    /// A count of items each at least `min_item` bytes long, checked against the bytes left.
    fn count(&mut self, min_item: usize) -> Result<usize, Malformed> {
        let n = self.varint()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() - self.pos {
            return Err(self.err());
        }
        Ok(n)
    }

    fn bytes(&mut self, len: usize) -> Result<Bytes, Malformed> {
        let end = self.pos.checked_add(len).ok_or(self.err())?;
        if end > self.buf.len() {
            return Err(self.err());
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let len = self.varint()? as usize;
        if len > MAX_STRING_LEN {
            return Err(self.err());
        }
        let b = self.bytes(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err())
    }

    fn peer(&mut self) -> Result<PeerInfo, Malformed> {
        Ok(PeerInfo {
            device_id: self.string()?,
            bundle_name: self.string()?,
            module_name: self.string()?,
            ability_name: self.string()?,
            service_name: self.string()?,
        })
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.pos == self.buf.len() { Ok(()) } else { Err(self.err()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: &str) -> PeerInfo {
        PeerInfo {
            device_id: format!("dev-{n}"),
            bundle_name: "com.example".into(),
            module_name: "entry".into(),
            ability_name: "Main".into(),
            service_name: String::new(),
        }
    }

    #[test]
    fn hello_round_trip() {
        let h = Hello {
            flags: HELLO_SEEN,
            min_version: 1,
            max_version: 3,
            device_id: "phone".into(),
            max_frame: 672,
            keep_alive_ms: 5000,
            idle_timeout_ms: 30000,
            link_token: 0x0102_0304_0506_0708,
            resume_token: 9,
            resume_state: vec![(1, Position { seq: 4, frag: 0 }), (9, Position { seq: 300, frag: 17 })],
            extensions: vec![Extension { kind: 1, data: Bytes::from_static(b"noise") }],
        };
        assert_eq!(HandshakeMsg::decode(&h.encode()), Ok(HandshakeMsg::Hello(h)));
    }

    #[test]
    fn control_round_trips() {
        let mut options = ConnectOptions { need_send_data: true, ..ConnectOptions::default() };
        options.parameters.insert("k".into(), "v".into());
        for m in [
            ControlMsg::Connect { session: 3, from: peer("a"), to: peer("b"), options },
            ControlMsg::Accept { session: 300 },
            ControlMsg::Reject { session: 5, code: ConnectErrorCode::PeerAppRejected, reason: "busy".into() },
            ControlMsg::Disconnect { session: 7, reason: DisconnectReason::PeerAppExit },
        ] {
            assert_eq!(ControlMsg::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn ack_round_trip_and_room() {
        let entries: Vec<AckEntry> = (0..100)
            .map(|i| AckEntry {
                channel: 4 + i,
                pos: Position { seq: i * 1000, frag: i },
                nack: i % 2 == 0,
                credit: Credit::default(),
                sacks: Vec::new(),
                more: false,
            })
            .collect();
        let (payload, taken) = encode_ack(&entries, 64, 1);
        assert!(payload.len() <= 64 && taken > 0 && taken < 100);
        assert_eq!(decode_ack(&payload, 1).unwrap(), entries[..taken]);
    }

    #[test]
    fn version_2_acks_carry_credit_and_version_1_refuses_the_empty_flag() {
        let entries: Vec<AckEntry> = (0..40)
            .map(|i| AckEntry {
                channel: 4 + i,
                pos: Position { seq: i * 7, frag: i % 3 },
                nack: i % 5 == 0,
                credit: Credit { room: i * 100_000, empty: i % 2 == 0 },
                sacks: Vec::new(),
                more: false,
            })
            .collect();
        let (payload, taken) = encode_ack(&entries, 120, 2);
        assert!(payload.len() <= 120 && taken > 0 && taken < 40);
        assert_eq!(decode_ack(&payload, 2).unwrap(), entries[..taken]);
        // Read as version 1 the credit bytes are trailing garbage or unknown flags: malformed, never misread.
        assert!(decode_ack(&payload, 1).is_err());
    }

    #[test]
    fn version_3_acks_carry_sack_blocks_and_earlier_versions_refuse_them() {
        let p = |seq, frag| Position { seq, frag };
        let entry = AckEntry {
            channel: 5,
            pos: p(10, 3),
            nack: true,
            credit: Credit { room: 1000, empty: false },
            sacks: vec![(p(10, 5), p(11, 0)), (p(11, 2), p(11, 7)), (p(14, 0), p(16, 1))],
            more: false,
        };
        let plain = AckEntry { channel: 9, pos: p(1, 0), ..AckEntry::default() };
        let entries = vec![entry.clone(), plain];
        let (payload, taken) = encode_ack(&entries, 1000, 3);
        assert_eq!(taken, 2);
        assert_eq!(decode_ack(&payload, 3).unwrap(), entries);
        assert!(decode_ack(&payload, 2).is_err() && decode_ack(&payload, 1).is_err());
        // Encoded for version 2 the blocks are left out.
        let (v2, _) = encode_ack(&entries, 1000, 2);
        assert!(decode_ack(&v2, 2).unwrap().iter().all(|e| e.sacks.is_empty()));
        // Short of room, an entry drops blocks from the end before being left out.
        let (short, taken) = encode_ack(std::slice::from_ref(&entry), 20, 3);
        assert_eq!(taken, 1);
        let got = decode_ack(&short, 3).unwrap();
        assert!(got[0].sacks.len() < 3 && entry.sacks.starts_with(&got[0].sacks));
        // ... and says so.
        assert!(got[0].more);
        // Blocks out of order, overlapping, empty or not beyond the position are malformed.
        for bad in
            [vec![(p(10, 2), p(10, 4))], vec![(p(10, 5), p(10, 5))], vec![(p(10, 5), p(10, 8)), (p(10, 7), p(10, 9))]]
        {
            let mut b = BytesMut::new();
            varint::put(&mut b, 1);
            for v in [5, 10, 3] {
                varint::put(&mut b, v);
            }
            b.put_u8(ACK_SACK);
            varint::put(&mut b, 0);
            b.put_u8(bad.len() as u8);
            for (from, to) in &bad {
                for v in [from.seq.wrapping_sub(10), from.frag, to.seq.wrapping_sub(from.seq), to.frag] {
                    varint::put(&mut b, v);
                }
            }
            assert!(decode_ack(&b.freeze(), 3).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn truncated_and_trailing_bytes_are_malformed() {
        let b = ControlMsg::Accept { session: 1 }.encode();
        assert!(ControlMsg::decode(&b.slice(..1)).is_err());
        let mut long = BytesMut::from(&b[..]);
        long.put_u8(0);
        assert!(ControlMsg::decode(&long.freeze()).is_err());
        // A huge announced count with no bytes behind it is refused before allocating.
        let bogus = Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        assert!(decode_ack(&bogus, 1).is_err());
        assert!(decode_ack(&bogus, 2).is_err());
    }
}
