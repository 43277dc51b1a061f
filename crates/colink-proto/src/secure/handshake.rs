//! The secure handshake's state machine and its NOISE / CONFIRM messages (docs/security.md §2).

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use colink_frame::{Fragmenter, FrameKind, Limits, LinkMode, Mtu, Reassembler, StreamCodec, decode_packet};
use snow::{Builder, HandshakeState};

use super::cipher::{LinkCipher, TransportKeys};
use super::{
    EntropyResolver, NOISE_ACCOUNT, NOISE_PAIRING, PUBLIC_KEY_LEN, PeerIdentity, Proof, RefuseReason, SecureConfig,
    SecureError, TrustPolicy, Verdict, contributory, sas_of,
};
use crate::config::{Entropy, Transport};
use crate::error::CloseCode;
use crate::types::Role;
use crate::wire::{CH_HANDSHAKE, HandshakeMsg, T_CLOSE};

/// Handshake-channel message type of the secure handshake's messages.
pub(crate) const T_NOISE: u8 = 0x04;
const NOISE_1: u8 = 1;
const NOISE_2: u8 = 2;
const NOISE_3: u8 = 3;
const CONFIRM: u8 = 4;
const CONFIRM_ACCEPTED: u8 = 0;
const CONFIRM_REFUSED: u8 = 1;
/// The Noise prologue (followed by the mode byte): binds the mode and protocol version into the handshake hash.
const PROLOGUE: &[u8] = b"colink secure v1";
/// The most bytes a peer may send before the handshake completes.
pub const SECURE_INPUT_LIMIT: usize = 16 * 1024;
/// The largest NOISE or CONFIRM message accepted (the largest legitimate one is 98 bytes).
const MAX_MESSAGE: u32 = 1024;
/// The largest frame the handshake sends in stream mode.
const STREAM_FRAME: usize = 512;

/// Which Noise protocol an initiator runs: its caller's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeMode {
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s`: keys only; the peer's [`TrustPolicy`] decides (usually by asking).
    Pairing = 1,
    /// `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` with the account secret as PSK: membership proven.
    Account = 2,
}

impl HandshakeMode {
    const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Pairing),
            2 => Some(Self::Account),
            _ => None,
        }
    }

    const fn proof(self) -> Proof {
        match self {
            Self::Pairing => Proof::KeyOnly,
            Self::Account => Proof::Account,
        }
    }
}

/// What the handshake reports to its driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum SecureEvent {
    /// The policy answered [`Verdict::Ask`]: show `sas` (six digits, zero-padded) and the peer, then call
    /// [`SecureHandshake::approve`]. The peer's user sees the same number.
    NeedsApproval {
        /// The proven peer.
        peer: PeerIdentity,
        /// The short authentication string, `0..1_000_000`.
        sas: u32,
    },
    /// Both sides accepted: the transport is authenticated.
    Established(Box<Established>),
    /// The handshake failed; send what [`SecureHandshake::poll_transmit`] still returns, then close the transport.
    Failed(SecureError),
}

/// An authenticated transport.
#[derive(Debug)]
#[non_exhaustive]
pub struct Established {
    /// The peer whose key the handshake proved.
    pub peer: PeerIdentity,
    /// What else it proved.
    pub proof: Proof,
    /// The Noise protocol that ran.
    pub mode: HandshakeMode,
    /// The Noise handshake hash (unique per handshake; both sides hold the same).
    pub handshake_hash: [u8; 32],
    /// The transport's keys (nonce 0 of each direction was used by the CONFIRM): hand them to
    /// [`Connection::attach_secured`](crate::Connection::attach_secured).
    pub keys: TransportKeys,
    /// Bytes received after the handshake's last message (stream mode), to be fed to whatever runs next.
    pub leftover: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Initiator: NOISE_1 sent.
    AwaitNoise2,
    /// Responder: nothing received yet.
    AwaitNoise1,
    /// Responder: NOISE_2 sent.
    AwaitNoise3,
    /// Noise done; this side's decision and the peer's CONFIRM are outstanding.
    Confirming,
    /// Established was reported.
    Done,
    /// Failed was reported.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Pending,
    Asking,
    Accepted,
}

/// The secure handshake on one fresh transport (see the [module docs](super)).
pub struct SecureHandshake {
    role: Role,
    config: SecureConfig,
    mode: Option<HandshakeMode>,
    expected: Option<String>,
    resolver: Option<EntropyResolver>,
    noise: Option<HandshakeState>,
    cipher: Option<LinkCipher>,
    keys: Option<TransportKeys>,
    peer: Option<PeerIdentity>,
    hash: [u8; 32],
    stage: Stage,
    ours: Decision,
    asked: bool,
    peer_accepted: bool,
    deadline: Instant,
    link_mode: LinkMode,
    mtu: Mtu,
    codec: StreamCodec,
    buf: BytesMut,
    reassembler: Reassembler,
    seen: usize,
    hs_seq: u32,
    out: VecDeque<Bytes>,
    events: VecDeque<SecureEvent>,
}

impl fmt::Debug for SecureHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureHandshake")
            .field("role", &self.role)
            .field("mode", &self.mode)
            .field("stage", &self.stage)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl SecureHandshake {
    /// Starts the dialling side: runs `mode` and, when `expected` is given, refuses any peer whose proven device
    /// id differs. Fails at once with [`SecureError::NoAccount`] for account mode without an account secret.
    pub fn initiator(
        now: Instant,
        config: SecureConfig,
        mode: HandshakeMode,
        expected: Option<String>,
        transport: Transport,
        entropy: &mut dyn Entropy,
    ) -> Result<Self, SecureError> {
        if mode == HandshakeMode::Account && config.account.is_none() {
            return Err(SecureError::NoAccount);
        }
        let mut this = Self::new(now, Role::Initiator, config, transport, entropy);
        this.expected = expected;
        this.mode = Some(mode);
        let mut noise = this.build(mode)?;
        let mut msg = [0u8; MAX_MESSAGE as usize];
        let n = noise.write_message(&[], &mut msg).map_err(|_| SecureError::Crypto)?;
        this.noise = Some(noise);
        this.send_noise(NOISE_1, Some(mode as u8), &msg[..n]);
        this.stage = Stage::AwaitNoise2;
        Ok(this)
    }

    /// Starts the accepting side: waits for the dialler's first NOISE message.
    pub fn responder(now: Instant, config: SecureConfig, transport: Transport, entropy: &mut dyn Entropy) -> Self {
        let mut this = Self::new(now, Role::Responder, config, transport, entropy);
        this.stage = Stage::AwaitNoise1;
        this
    }

    fn new(now: Instant, role: Role, config: SecureConfig, transport: Transport, entropy: &mut dyn Entropy) -> Self {
        let mut limits = Limits::default();
        limits.set_max_message_len(FrameKind::Control, MAX_MESSAGE);
        let mtu = match transport.mode {
            LinkMode::Stream => Mtu::new(transport.mtu.get().min(STREAM_FRAME)).unwrap_or(Mtu::MIN),
            _ => transport.mtu,
        };
        Self {
            role,
            deadline: now + config.handshake_timeout,
            config,
            mode: None,
            expected: None,
            resolver: Some(EntropyResolver::new(entropy)),
            noise: None,
            cipher: None,
            keys: None,
            peer: None,
            hash: [0u8; 32],
            stage: Stage::AwaitNoise1,
            ours: Decision::Pending,
            asked: false,
            peer_accepted: false,
            link_mode: transport.mode,
            mtu,
            codec: StreamCodec::default(),
            buf: BytesMut::new(),
            reassembler: Reassembler::new(limits),
            seen: 0,
            hs_seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The proven peer, once the Noise messages are done.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// Whether the handshake ended (established or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done | Stage::Failed)
    }

    /// Feeds received data (one SDU in packet mode, any chunk in stream mode). Once the handshake is
    /// established, bytes after its last message are returned in [`Established::leftover`] and later data is
    /// not for this machine.
    pub fn handle_input(&mut self, now: Instant, data: &Bytes, policy: &mut dyn TrustPolicy) {
        if self.is_finished() {
            return;
        }
        self.seen = self.seen.saturating_add(data.len());
        if self.seen > SECURE_INPUT_LIMIT {
            return self.fail(SecureError::Malformed("too much data before the handshake completed"));
        }
        match self.link_mode {
            LinkMode::Stream => {
                self.buf.extend_from_slice(data);
                while !self.is_finished() {
                    match self.codec.decode(&mut self.buf) {
                        Ok(Some(frame)) => self.handle_frame(now, frame, policy),
                        Ok(None) => break,
                        Err(_) => return self.fail(SecureError::Malformed("corrupt byte stream")),
                    }
                }
            }
            _ => match decode_packet(data.clone()) {
                Ok(frame) => self.handle_frame(now, frame, policy),
                Err(_) => self.fail(SecureError::Malformed("undecodable frame")),
            },
        }
    }

    /// A person's answer to [`SecureEvent::NeedsApproval`]. Ignored unless an approval is pending.
    pub fn approve(&mut self, now: Instant, accept: bool, policy: &mut dyn TrustPolicy) {
        if self.stage != Stage::Confirming || self.ours != Decision::Asking {
            return;
        }
        if accept {
            self.accept(now, policy);
        } else {
            self.refuse(RefuseReason::UserRefused, SecureError::RefusedLocally(RefuseReason::UserRefused));
        }
    }

    /// Handles the deadline: a handshake (or approval) that did not finish in time fails.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_finished() && now >= self.deadline {
            self.refuse(RefuseReason::Timeout, SecureError::Timeout);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_finished()).then_some(self.deadline)
    }

    /// The next frame (an SDU in packet mode, length-prefixed bytes in stream mode) to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SecureEvent> {
        self.events.pop_front()
    }

    fn build(&mut self, mode: HandshakeMode) -> Result<HandshakeState, SecureError> {
        let resolver = self.resolver.take().ok_or(SecureError::Malformed("second handshake on one machine"))?;
        let name = match mode {
            HandshakeMode::Pairing => NOISE_PAIRING,
            HandshakeMode::Account => NOISE_ACCOUNT,
        };
        let params = name.parse().map_err(|_| SecureError::Crypto)?;
        let mut prologue = PROLOGUE.to_vec();
        prologue.push(mode as u8);
        let secret = self.config.keypair.secret_bytes();
        let mut builder = Builder::with_resolver(params, Box::new(resolver))
            .local_private_key(&secret)
            .and_then(|b| b.prologue(&prologue))
            .map_err(|_| SecureError::Crypto)?;
        let account = self.config.account;
        if mode == HandshakeMode::Account {
            let psk = account.as_ref().ok_or(SecureError::NoAccount)?;
            builder = builder.psk(3, psk).map_err(|_| SecureError::Crypto)?;
        }
        match self.role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(|_| SecureError::Crypto)
    }

    fn handle_frame(&mut self, now: Instant, frame: colink_frame::Frame, policy: &mut dyn TrustPolicy) {
        if frame.header.kind != FrameKind::Control || frame.header.channel != CH_HANDSHAKE {
            return self.fail(SecureError::Malformed("a non-handshake frame before the handshake completed"));
        }
        let message = match self.reassembler.push(now, frame) {
            Ok(Some(m)) => m.payload,
            Ok(None) => return,
            Err(_) => return self.fail(SecureError::Malformed("handshake message too large")),
        };
        match message.first().copied() {
            Some(T_NOISE) => self.handle_noise(now, &message[1..], policy),
            Some(T_CLOSE) => match HandshakeMsg::decode(&message) {
                Ok(HandshakeMsg::Close { code, .. }) => self.fail_closed_by_peer(code),
                _ => self.fail(SecureError::Malformed("CLOSE")),
            },
            _ => self.fail(SecureError::Malformed("not a NOISE message")),
        }
    }

    fn handle_noise(&mut self, now: Instant, body: &[u8], policy: &mut dyn TrustPolicy) {
        let Some((&kind, rest)) = body.split_first() else {
            return self.fail(SecureError::Malformed("empty NOISE message"));
        };
        match (kind, self.stage) {
            (NOISE_1, Stage::AwaitNoise1) => self.on_noise1(rest),
            (NOISE_2, Stage::AwaitNoise2) => self.on_noise2(now, rest, policy),
            (NOISE_3, Stage::AwaitNoise3) => self.on_noise3(now, rest, policy),
            (CONFIRM, Stage::Confirming) if !self.peer_accepted => self.on_confirm(now, rest, policy),
            _ => self.fail(SecureError::Malformed("NOISE message out of order")),
        }
    }

    fn on_noise1(&mut self, rest: &[u8]) {
        let Some((&mode, msg)) = rest.split_first() else {
            return self.fail(SecureError::Malformed("NOISE_1 without a mode"));
        };
        let Some(mode) = HandshakeMode::from_u8(mode) else {
            return self.fail(SecureError::Malformed("unknown handshake mode"));
        };
        self.mode = Some(mode);
        match mode {
            HandshakeMode::Account if self.config.account.is_none() => {
                return self
                    .refuse(RefuseReason::NotInAccount, SecureError::RefusedLocally(RefuseReason::NotInAccount));
            }
            HandshakeMode::Pairing if !self.config.accept_pairing => {
                return self.refuse(
                    RefuseReason::PairingNotAccepted,
                    SecureError::RefusedLocally(RefuseReason::PairingNotAccepted),
                );
            }
            _ => {}
        }
        let mut noise = match self.build(mode) {
            Ok(n) => n,
            Err(e) => return self.fail(e),
        };
        let mut payload = [0u8; MAX_MESSAGE as usize];
        if noise.read_message(msg, &mut payload).is_err() {
            return self.fail(SecureError::Malformed("NOISE_1"));
        }
        let mut out = [0u8; MAX_MESSAGE as usize];
        let Ok(n) = noise.write_message(&[], &mut out) else { return self.fail(SecureError::Crypto) };
        self.noise = Some(noise);
        self.send_noise(NOISE_2, None, &out[..n]);
        self.stage = Stage::AwaitNoise3;
    }

    fn on_noise2(&mut self, now: Instant, msg: &[u8], policy: &mut dyn TrustPolicy) {
        let Some(mut noise) = self.noise.take() else { return self.fail(SecureError::Malformed("NOISE_2")) };
        let mut payload = [0u8; MAX_MESSAGE as usize];
        if noise.read_message(msg, &mut payload).is_err() {
            return self.fail(SecureError::Crypto);
        }
        let Some(peer) = remote_identity(&noise) else { return self.fail(SecureError::Crypto) };
        if !contributory(&self.config.keypair, &peer.public_key) {
            return self.fail(SecureError::Crypto);
        }
        if let Some(expected) = self.expected.clone()
            && expected != peer.device_id
        {
            let proven = peer.device_id;
            return self.refuse(RefuseReason::UnexpectedPeer, SecureError::UnexpectedPeer { expected, proven });
        }
        let mut out = [0u8; MAX_MESSAGE as usize];
        let Ok(n) = noise.write_message(&[], &mut out) else { return self.fail(SecureError::Crypto) };
        self.send_noise(NOISE_3, None, &out[..n]);
        self.noise_done(now, noise, peer, policy);
    }

    fn on_noise3(&mut self, now: Instant, msg: &[u8], policy: &mut dyn TrustPolicy) {
        let Some(mut noise) = self.noise.take() else { return self.fail(SecureError::Malformed("NOISE_3")) };
        let mut payload = [0u8; MAX_MESSAGE as usize];
        if noise.read_message(msg, &mut payload).is_err() {
            // In account mode the PSK is mixed in before this message's tag: a different secret fails here.
            if self.mode == Some(HandshakeMode::Account) {
                let reason = RefuseReason::NotInAccount;
                self.refuse(reason, SecureError::RefusedLocally(reason));
            } else {
                self.fail(SecureError::Crypto);
            }
            return;
        }
        let Some(peer) = remote_identity(&noise) else { return self.fail(SecureError::Crypto) };
        if !contributory(&self.config.keypair, &peer.public_key) {
            return self.fail(SecureError::Crypto);
        }
        self.noise_done(now, noise, peer, policy);
    }

    fn noise_done(
        &mut self,
        now: Instant,
        mut noise: HandshakeState,
        peer: PeerIdentity,
        policy: &mut dyn TrustPolicy,
    ) {
        self.hash.copy_from_slice(&noise.get_handshake_hash()[..32]);
        let (i2r, r2i) = noise.dangerously_get_raw_split();
        let keys = match self.role {
            Role::Initiator => TransportKeys { send: i2r, recv: r2i },
            Role::Responder => TransportKeys { send: r2i, recv: i2r },
        };
        self.cipher = Some(keys.cipher());
        self.keys = Some(keys);
        self.peer = Some(peer.clone());
        self.stage = Stage::Confirming;
        // From here on the peer may be waiting for its user: allow the approval time.
        self.deadline = now + self.config.approval_timeout;
        let proof = self.mode.map_or(Proof::KeyOnly, HandshakeMode::proof);
        match policy.judge(&peer, proof) {
            Verdict::Trusted => self.accept(now, policy),
            Verdict::Refused(reason) => self.refuse(reason, SecureError::RefusedLocally(reason)),
            Verdict::Ask => {
                self.ours = Decision::Asking;
                self.asked = true;
                self.events.push_back(SecureEvent::NeedsApproval { peer, sas: sas_of(&self.hash) });
            }
        }
    }

    fn on_confirm(&mut self, now: Instant, sealed: &[u8], policy: &mut dyn TrustPolicy) {
        let Some(cipher) = &self.cipher else { return self.fail(SecureError::Malformed("CONFIRM")) };
        let Ok(body) = cipher.open(0, &[], sealed) else { return self.fail(SecureError::Crypto) };
        match body.as_slice() {
            [CONFIRM_ACCEPTED, 0] => {
                self.peer_accepted = true;
                self.complete_if_ready(now, policy);
            }
            [CONFIRM_REFUSED, code] => self.fail_closed_by_peer(*code),
            _ => self.fail(SecureError::Malformed("CONFIRM")),
        }
    }

    fn accept(&mut self, now: Instant, policy: &mut dyn TrustPolicy) {
        self.ours = Decision::Accepted;
        self.send_confirm(CONFIRM_ACCEPTED, 0);
        self.complete_if_ready(now, policy);
    }

    fn complete_if_ready(&mut self, _now: Instant, policy: &mut dyn TrustPolicy) {
        if self.ours != Decision::Accepted || !self.peer_accepted {
            return;
        }
        let (Some(keys), Some(peer), Some(mode)) = (self.keys.take(), self.peer.clone(), self.mode) else {
            return self.fail(SecureError::Malformed("incomplete handshake"));
        };
        if self.asked {
            policy.approved(&peer);
        }
        self.stage = Stage::Done;
        tracing::debug!(peer = %peer.device_id, ?mode, "secure handshake established");
        self.events.push_back(SecureEvent::Established(Box::new(Established {
            peer,
            proof: mode.proof(),
            mode,
            handshake_hash: self.hash,
            keys,
            leftover: self.buf.split().freeze(),
        })));
    }

    /// Refuses the peer: a sealed CONFIRM (once keys exist) and a CLOSE carrying the reason, then fails.
    fn refuse(&mut self, reason: RefuseReason, error: SecureError) {
        let code = reason.close_code() as u8;
        if self.cipher.is_some() {
            self.send_confirm(CONFIRM_REFUSED, code);
        }
        self.queue(HandshakeMsg::encode_close(code, &error.to_string()));
        self.fail(error);
    }

    fn fail_closed_by_peer(&mut self, code: u8) {
        let error = match RefuseReason::from_close_code(CloseCode::from_u8(code)) {
            Some(RefuseReason::NotInAccount) => SecureError::NotInAccount,
            Some(RefuseReason::UserRefused) => SecureError::RefusedByPeer,
            Some(RefuseReason::UnknownDevice) => SecureError::UnknownDeviceRefused,
            Some(RefuseReason::PairingNotAccepted) => SecureError::PairingNotAccepted,
            Some(RefuseReason::UnexpectedPeer) => SecureError::NotExpectedByPeer,
            Some(RefuseReason::Timeout) => SecureError::Timeout,
            Some(RefuseReason::Busy) => SecureError::Busy,
            None => SecureError::PeerClosed(code),
        };
        self.fail(error);
    }

    fn fail(&mut self, error: SecureError) {
        if self.is_finished() {
            return;
        }
        tracing::debug!(role = ?self.role, %error, "secure handshake failed");
        self.stage = Stage::Failed;
        self.noise = None;
        self.cipher = None;
        self.keys = None;
        self.events.push_back(SecureEvent::Failed(error));
    }

    fn send_confirm(&mut self, status: u8, code: u8) {
        let Some(cipher) = &self.cipher else { return };
        let Ok(sealed) = cipher.seal(0, &[], &[status, code]) else { return };
        self.send_noise(CONFIRM, None, &sealed);
    }

    fn send_noise(&mut self, kind: u8, mode: Option<u8>, body: &[u8]) {
        let mut b = BytesMut::with_capacity(3 + body.len());
        b.put_u8(T_NOISE);
        b.put_u8(kind);
        if let Some(mode) = mode {
            b.put_u8(mode);
        }
        b.extend_from_slice(body);
        self.queue(b.freeze());
    }

    /// Frames a handshake-channel message into the send queue.
    fn queue(&mut self, payload: Bytes) {
        let seq = self.hs_seq;
        self.hs_seq = (self.hs_seq + 1) & 0x3FFF;
        let Ok(mut f) = Fragmenter::new(FrameKind::Control, CH_HANDSHAKE, seq, payload, self.link_mode, self.mtu)
        else {
            return;
        };
        let mut out = BytesMut::new();
        while f.next_frame(&mut out).is_some() {
            self.out.push_back(out.split().freeze());
        }
    }
}

/// The frames that refuse a transport before any of its handshake messages was read: a CLOSE with code 10
/// (busy), so that the dialler learns why and that a later retry may succeed, for a responder over its limits
/// on new transports (docs/security.md §2.2). Sent in clear, as every CLOSE before the keys exist.
pub fn busy_refusal(transport: Transport) -> Vec<Bytes> {
    let mtu = match transport.mode {
        LinkMode::Stream => Mtu::new(transport.mtu.get().min(STREAM_FRAME)).unwrap_or(Mtu::MIN),
        _ => transport.mtu,
    };
    let payload = HandshakeMsg::encode_close(CloseCode::Busy as u8, &SecureError::Busy.to_string());
    let Ok(mut f) = Fragmenter::new(FrameKind::Control, CH_HANDSHAKE, 0, payload, transport.mode, mtu) else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    let mut out = BytesMut::new();
    while f.next_frame(&mut out).is_some() {
        frames.push(out.split().freeze());
    }
    frames
}

fn remote_identity(noise: &HandshakeState) -> Option<PeerIdentity> {
    let key: [u8; PUBLIC_KEY_LEN] = noise.get_remote_static()?.try_into().ok()?;
    Some(PeerIdentity::of(key))
}
