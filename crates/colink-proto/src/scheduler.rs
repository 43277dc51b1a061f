//! The send scheduler: every channel's send lane, which fragment goes out next (priority classes with
//! per-class window limits, round robin within a class), how large it may be (bulk frames grow while they
//! run alone, see [`sizing`]), and the bytes in flight.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
#[cfg(test)]
use colink_frame::Mtu;
use colink_frame::{FrameKind, LinkMode};

mod lane;
mod sizing;

use super::error::{ProtocolError, SendError};
use super::types::{SendId, SessionKey};
use super::wire::{CH_CONTROL, Credit, Position};
pub(crate) use lane::lane_nonce;
use lane::{Lost, SendLane};
pub(crate) use sizing::FrameSizes;
use sizing::{FrameSizer, LossEstimate};

use crate::secure::LinkCipher;

/// Priority classes, highest first: control, message, stream media, image, bulk (data and files).
const CLASSES: [FrameKind; 5] =
    [FrameKind::Control, FrameKind::Message, FrameKind::StreamMedia, FrameKind::Image, FrameKind::Data];

/// The priority class of a lane carrying `kind`: file lanes take turns with bulk-data lanes.
fn class_of(kind: FrameKind) -> FrameKind {
    if kind == FrameKind::File { FrameKind::Data } else { kind }
}

/// One fragment handed out by [`Scheduler::next_fragment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// Its size on the wire.
    pub(crate) len: usize,
    /// It was sent before (a gap report, a retransmission timeout or a resume rewound its lane).
    pub(crate) resent: bool,
    /// Nothing was in flight before it (the retransmission timer starts now).
    pub(crate) first_in_flight: bool,
}

/// A message the peer now wholly holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completed {
    /// Its sequence number on the channel.
    pub(crate) seq: u32,
    /// Its send id (`None` for internal control messages).
    pub(crate) id: Option<SendId>,
}

/// What an acknowledgement did to one lane.
#[derive(Debug)]
pub(crate) struct Acked {
    /// Messages now wholly held by the peer, in order.
    pub(crate) done: Vec<Completed>,
    /// The acknowledged position moved forward.
    pub(crate) advanced: bool,
    /// A sender told `WouldBlock` may send again.
    pub(crate) writable: bool,
}

/// Every send lane of one link and the window they share.
#[derive(Debug)]
pub(crate) struct Scheduler {
    lanes: BTreeMap<u32, SendLane>,
    /// Per class, the channel that sent last (round robin resumes after it).
    rr: [u32; CLASSES.len()],
    /// Unacknowledged bytes on the wire, all lanes together.
    inflight: u64,
    /// Bytes a channel may hold queued before `send` answers `WouldBlock`.
    channel_buffer: u64,
    /// On an authenticated link: the epoch cipher that seals every lane message.
    epoch: Option<LinkCipher>,
    /// Sizes each fragment by what the classes above it sent lately.
    sizer: FrameSizer,
    /// The peer's receive window per session channel (version 2); `None`: the peer grants no credit.
    peer_window: Option<u32>,
    /// Credit each message takes beyond its payload bytes (version 3).
    message_charge: u64,
    /// The peer keeps fragments beyond a gap and reports them (version 3): lost fragments are resent by
    /// themselves; otherwise a loss sends the lane back to its acknowledged position.
    selective: bool,
    /// Transmission number of the next fragment.
    tx: u64,
    /// The frame loss seen lately, which caps the frame size.
    loss: LossEstimate,
    /// The largest transmission number the peer acknowledged or reported holding, any lane.
    delivered_tx: u64,
    /// Version 3, loss across lanes: once the instant passes, fragments sent before the transmission number
    /// and still missing are lost (a later-sent fragment on another lane arrived; the wait leaves room for the
    /// rest of an acknowledgement split over several frames). Ascending in both.
    suspects: VecDeque<(u64, Instant)>,
}

impl Scheduler {
    /// An empty scheduler (no lanes; see [`reset`](Self::reset)) with `channel_buffer` bytes per channel.
    pub(crate) fn new(channel_buffer: u64) -> Self {
        Self {
            lanes: BTreeMap::new(),
            rr: [0; CLASSES.len()],
            inflight: 0,
            channel_buffer,
            epoch: None,
            sizer: FrameSizer::default(),
            peer_window: None,
            message_charge: 0,
            selective: false,
            tx: 1,
            loss: LossEstimate::default(),
            delivered_tx: 0,
            suspects: VecDeque::new(),
        }
    }

    /// Whether the peer keeps and reports fragments beyond a gap (version 3).
    pub(crate) fn set_selective(&mut self, selective: bool) {
        self.selective = selective;
    }

    /// Whether lost fragments are resent by themselves (version 3).
    pub(crate) fn is_selective(&self) -> bool {
        self.selective
    }

    /// The peer grants receive credit (version 2) with `window` bytes per session channel to begin with; lanes
    /// opened from now on wait for it. `None`: no credit (version 1).
    pub(crate) fn set_peer_window(&mut self, window: Option<u32>) {
        self.peer_window = window;
    }

    /// What each message costs in the peer's credit beyond its payload bytes (version 3), on every lane.
    pub(crate) fn set_message_charge(&mut self, charge: u64) {
        self.message_charge = charge;
        for lane in self.lanes.values_mut() {
            lane.charge = charge;
        }
    }

    /// Seals lane messages that go on the wire from now on with `epoch`.
    pub(crate) fn set_epoch(&mut self, epoch: LinkCipher) {
        self.epoch = Some(epoch);
    }

    /// Fresh numbering on the link: only the control lane, nothing in flight.
    pub(crate) fn reset(&mut self) {
        self.lanes.clear();
        self.lanes.insert(CH_CONTROL, SendLane::new(CH_CONTROL, FrameKind::Control));
        self.inflight = 0;
        self.sizer.reset();
        self.loss = LossEstimate::default();
        self.delivered_tx = 0;
        self.suspects.clear();
    }

    /// Opens the lane of `channel` for frames of `kind`.
    pub(crate) fn open(&mut self, channel: u32, kind: FrameKind) {
        let mut lane = SendLane::new(channel, kind);
        lane.charge = self.message_charge;
        if let Some(room) = self.peer_window {
            lane.set_credit(0, Credit { room, empty: true });
        }
        self.lanes.insert(channel, lane);
    }

    /// Whether `channel` has a lane.
    pub(crate) fn has_lane(&self, channel: u32) -> bool {
        self.lanes.contains_key(&channel)
    }

    /// Closes the lane of `channel`; returns the ids of its sends that will never complete.
    pub(crate) fn close(&mut self, channel: u32) -> Option<Vec<SendId>> {
        let mut lane = self.lanes.remove(&channel)?;
        let (ids, freed) = lane.fail_all();
        self.inflight -= freed.min(self.inflight);
        Some(ids)
    }

    /// Empties the control lane (its messages are internal: nobody waits for them).
    pub(crate) fn fail_control(&mut self) {
        if let Some(l) = self.lanes.get_mut(&CH_CONTROL) {
            l.fail_all();
        }
    }

    /// Queues an application payload with `id` on `channel` of `session`. A channel holding more than the
    /// channel buffer refuses with `WouldBlock` (and reports `Writable` once an acknowledgement makes room); an
    /// empty channel takes any size.
    pub(crate) fn send(
        &mut self,
        session: SessionKey,
        channel: u32,
        id: SendId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let lane = self.lanes.get_mut(&channel).ok_or(SendError::NotConnected(session))?;
        if lane.queued_bytes > 0 && lane.queued_bytes + payload.len() as u64 > self.channel_buffer {
            lane.blocked = true;
            return Err(SendError::WouldBlock);
        }
        lane.push(Some(id), payload).map(|_| ())
    }

    /// Queues an internal message on the reliable control lane.
    pub(crate) fn send_control(&mut self, payload: Bytes) {
        if let Some(l) = self.lanes.get_mut(&CH_CONTROL) {
            // The control lane's 2^32 sequence numbers cannot run out in practice; if they did, the message is
            // dropped and the connect/disconnect timers report the failure.
            let _ = l.push(None, payload);
        }
    }

    /// Bytes [`send`](Self::send) would accept on `channel` now (0 without a lane; an empty lane takes any).
    pub(crate) fn capacity(&self, channel: u32) -> u64 {
        match self.lanes.get(&channel) {
            Some(l) if l.queued_bytes == 0 => u64::MAX,
            Some(l) => self.channel_buffer.saturating_sub(l.queued_bytes),
            None => 0,
        }
    }

    /// Unacknowledged bytes on the wire.
    pub(crate) fn inflight(&self) -> u64 {
        self.inflight
    }

    /// The channels with a lane, in order.
    pub(crate) fn channels(&self) -> Vec<u32> {
        self.lanes.keys().copied().collect()
    }

    /// The position up to which the peer acknowledged `channel`.
    pub(crate) fn acked(&self, channel: u32) -> Option<Position> {
        self.lanes.get(&channel).map(|l| l.acked)
    }

    /// The peer holds everything before `pos` on `channel`. `None` for a channel without a lane (a session
    /// that ended meanwhile); an error for a position beyond anything sent.
    /// With `credit` (version 2, not on the control lane) the lane's credit follows the entry unless the entry
    /// is older than what the lane already holds.
    pub(crate) fn ack(
        &mut self,
        channel: u32,
        pos: Position,
        credit: Option<Credit>,
    ) -> Result<Option<Acked>, ProtocolError> {
        let Some(lane) = self.lanes.get_mut(&channel) else { return Ok(None) };
        if pos.seq > lane.next_seq() || (pos.seq == lane.next_seq() && pos.frag > 0) {
            return Err(ProtocolError::BogusAck { channel });
        }
        let (done, freed, advanced) = lane.ack(pos);
        let delivered = std::mem::take(&mut lane.delivered);
        self.loss.on_delivered(delivered);
        if let Some(credit) = credit
            && channel != CH_CONTROL
            && pos >= lane.acked
        {
            lane.set_credit(pos.seq, credit);
        }
        let done = done.into_iter().map(|m| Completed { seq: m.seq, id: m.id }).collect();
        self.inflight -= freed.min(self.inflight);
        let writable = lane.blocked && lane.queued_bytes < self.channel_buffer;
        if writable {
            lane.blocked = false;
        }
        Ok(Some(Acked { done, advanced, writable }))
    }

    /// Version 3: the peer holds the fragments of `channel` in each `[from, to)` of `blocks` beyond its receive
    /// position. Fragments sent before any the peer holds or acknowledged and still missing are lost: they are
    /// queued to be resent by themselves. Returns the fragments declared lost.
    /// With `more`, the peer holds more beyond the last block than the blocks say: fragments beyond it are
    /// not judged until a later entry tells.
    pub(crate) fn sack(&mut self, channel: u32, blocks: &[(Position, Position)], more: bool) -> u64 {
        let Some(lane) = self.lanes.get_mut(&channel) else { return 0 };
        for (from, to) in blocks {
            lane.sack(*from, *to);
        }
        lane.reported(blocks.last().map(|(_, to)| *to), more);
        let lost = lane.infer_losses();
        self.account(lost)
    }

    /// Version 3, a gap report at `pos` on `channel` with nothing held beyond it: every fragment from `pos` on
    /// still in flight is resent by itself, cut as before. Returns the fragments declared lost.
    pub(crate) fn resend_from(&mut self, channel: u32, pos: Position) -> u64 {
        let Some(lane) = self.lanes.get_mut(&channel) else { return 0 };
        let lost = lane.resend_from(pos);
        self.account(lost)
    }

    /// Version 3: an acknowledgement was handled at `now`. If it covered a fragment sent later than what some
    /// lane still misses, those missing fragments are suspected lost: unless acknowledged by `now + wait`
    /// (room for the rest of an acknowledgement split over several frames), they are resent (see
    /// [`poll_suspects`](Self::poll_suspects)). The link delivers frames in order, so a later-sent fragment
    /// arriving first means the earlier one was lost, whichever lane it was on.
    pub(crate) fn acknowledged(&mut self, now: Instant, wait: Duration) {
        if !self.selective {
            return;
        }
        let high = self.lanes.values().map(SendLane::delivered_tx).max().unwrap_or(0);
        if high > self.delivered_tx {
            self.delivered_tx = high;
            let suspect = self.lanes.values().any(|l| l.missing_before(high));
            if suspect {
                self.suspects.push_back((high, now + wait));
            }
        }
    }

    /// When suspected losses are next decided.
    pub(crate) fn suspects_deadline(&self) -> Option<Instant> {
        self.suspects.front().map(|(_, at)| *at)
    }

    /// Decides the suspected losses due at `now`; returns the fragments declared lost.
    pub(crate) fn poll_suspects(&mut self, now: Instant) -> u64 {
        let mut tx = 0;
        while let Some((t, _)) = self.suspects.front().filter(|(_, at)| *at <= now) {
            tx = tx.max(*t);
            self.suspects.pop_front();
        }
        if tx == 0 {
            return 0;
        }
        let mut total = Lost::default();
        for lane in self.lanes.values_mut() {
            let lost = lane.lose_before(tx);
            total.fragments += lost.fragments;
            total.freed += lost.freed;
        }
        self.account(total)
    }

    /// A gap report sent `channel` back to `pos` (versions 1 and 2): one fragment was lost.
    pub(crate) fn gap_reported(&mut self) {
        self.loss.on_lost(1);
    }

    /// The largest fragment in flight, in bytes on the wire (resends keep their first size, which may exceed
    /// the frame size of now).
    pub(crate) fn largest_in_flight(&self) -> usize {
        self.lanes.values().map(SendLane::largest_in_flight).max().unwrap_or(0)
    }

    /// When the oldest fragment in flight that the peer does not hold was sent.
    pub(crate) fn oldest_unacked(&self) -> Option<Instant> {
        self.lanes.values().filter_map(SendLane::oldest_unacked).min()
    }

    /// A retransmission timeout at `now`: fragments sent `timeout` or longer ago and still missing are lost.
    /// Selective (version 3): each is resent by itself; otherwise its lane goes back to its acknowledged
    /// position. Other fragments, on the same lane or others, keep their own timers. Returns the fragments
    /// declared lost.
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) -> u64 {
        let Some(deadline) = now.checked_sub(timeout) else { return 0 };
        let mut total = Lost::default();
        for lane in self.lanes.values_mut() {
            let lost = if self.selective { lane.expire_selectively(deadline) } else { lane.expire_go_back(deadline) };
            total.fragments += lost.fragments;
            total.freed += lost.freed;
        }
        self.account(total)
    }

    /// The frame size that best survives the loss seen lately, if loss was seen (see [`sizing`]).
    pub(crate) fn loss_cap(&self) -> Option<usize> {
        self.loss.best_frame()
    }

    fn account(&mut self, lost: Lost) -> u64 {
        self.inflight -= lost.freed.min(self.inflight);
        self.loss.on_lost(lost.fragments);
        lost.fragments
    }

    /// Resends `channel` from `pos` (a gap report, a resume). Resent fragments are framed when they go out;
    /// with `recut` (a resume: the peer holds nothing beyond `pos`) they are cut afresh for the link of that
    /// moment, otherwise each keeps the cut it first went out with.
    pub(crate) fn rewind(&mut self, channel: u32, pos: Position, recut: bool) {
        if let Some(lane) = self.lanes.get_mut(&channel) {
            let freed = lane.rewind(pos, recut);
            self.inflight -= freed.min(self.inflight);
        }
    }

    /// Every lane with data in flight resends from its acknowledged position (`_mode` and `_mtu` unused).
    #[cfg(test)]
    pub(crate) fn rewind_all_to_acked(&mut self, _mode: LinkMode, _mtu: Mtu) {
        for lane in self.lanes.values_mut() {
            if lane.inflight_bytes > 0 {
                let acked = lane.acked;
                lane.rewind(acked, false);
            }
        }
        self.inflight = 0;
    }

    /// The transport is gone: whatever was in flight is lost with it (resume decides what to resend).
    pub(crate) fn forget_inflight(&mut self) {
        self.inflight = 0;
        self.suspects.clear();
        for lane in self.lanes.values_mut() {
            lane.clear_inflight();
        }
    }

    /// Appends the next payload fragment's frame to `out`: by priority class, each class limited to a share of
    /// `window` (control none, messages all of it, stream media 7/8, images and data 3/4, so higher classes
    /// always find room), round robin between the channels of a class. The frame is `sizes.small` bytes at
    /// most, or `sizes.large` for bulk while the classes above it have been silent (see [`sizing`]).
    pub(crate) fn next_fragment(
        &mut self,
        now: Instant,
        window: u64,
        mode: LinkMode,
        sizes: FrameSizes,
        out: &mut BytesMut,
    ) -> Option<Fragment> {
        for (ci, class) in CLASSES.iter().enumerate() {
            let limit = match class {
                FrameKind::Control => u64::MAX,
                FrameKind::Message => window,
                FrameKind::StreamMedia => window / 8 * 7,
                _ => window / 4 * 3,
            };
            if self.inflight >= limit {
                continue;
            }
            let after = self.rr[ci];
            let pick = self
                .lanes
                .range(after + 1..)
                .chain(self.lanes.range(..=after))
                .find(|(_, l)| class_of(l.kind) == *class && l.can_send())
                .map(|(ch, _)| *ch);
            let Some(ch) = pick else { continue };
            self.rr[ci] = ch;
            let lane = self.lanes.get_mut(&ch)?;
            let sizes = if self.loss.allows_growth() { sizes } else { FrameSizes { large: sizes.small, ..sizes } };
            let mtu = self.sizer.mtu(ci, now, sizes);
            let mtu = match self.loss.best_frame() {
                Some(cap) if *class != FrameKind::Control => sizing::capped(mtu, cap),
                _ => mtu,
            };
            out.reserve(mtu.get().max(sizes.largest().get()));
            let tx = self.tx;
            let Some((len, resent)) = lane.next_frame(mode, mtu, out, self.epoch.as_ref(), now, tx) else {
                continue;
            };
            self.tx += 1;
            self.loss.on_sent(len);
            self.sizer.sent(ci, now);
            let first_in_flight = self.inflight == 0;
            self.inflight += len as u64;
            return Some(Fragment { len, resent, first_in_flight });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use colink_frame::decode_packet;

    use super::*;

    const MTU: usize = 100;

    fn mtu() -> Mtu {
        Mtu::new(MTU).unwrap()
    }

    fn scheduler() -> Scheduler {
        let mut s = Scheduler::new(10_000);
        s.reset();
        // Session 1: message lane 4, data lane 5; session 2: data lane 9.
        s.open(4, FrameKind::Message);
        s.open(5, FrameKind::Data);
        s.open(9, FrameKind::Data);
        s
    }

    /// The channel of each fragment handed out, until none is or `n` were.
    fn order(s: &mut Scheduler, window: u64, n: usize) -> Vec<u32> {
        let mut out = BytesMut::new();
        let mut v = Vec::new();
        while v.len() < n
            && s.next_fragment(Instant::now(), window, LinkMode::Packet, FrameSizes::fixed(mtu()), &mut out).is_some()
        {
            v.push(decode_packet(out.split().freeze()).unwrap().header.channel);
        }
        v
    }

    #[test]
    fn higher_classes_go_first() {
        let mut s = scheduler();
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 50])).unwrap();
        s.send(SessionKey(1), 4, SendId(1), Bytes::from(vec![0; 50])).unwrap();
        s.send_control(Bytes::from_static(b"c"));
        assert_eq!(order(&mut s, u64::MAX, 10), vec![CH_CONTROL, 4, 5]);
    }

    #[test]
    fn channels_of_one_class_take_turns() {
        let mut s = scheduler();
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 500])).unwrap();
        s.send(SessionKey(1), 9, SendId(1), Bytes::from(vec![0; 500])).unwrap();
        assert_eq!(order(&mut s, u64::MAX, 6), vec![5, 9, 5, 9, 5, 9]);
    }

    #[test]
    fn bulk_data_leaves_a_quarter_of_the_window_to_messages() {
        let mut s = scheduler();
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 5000])).unwrap();
        let window = 4 * MTU as u64;
        // Data stops at 3/4 of the window ...
        let data = order(&mut s, window, 100);
        assert_eq!(data, vec![5; 3]);
        assert!(s.inflight() >= window / 4 * 3);
        // ... so a message still goes out.
        s.send(SessionKey(1), 4, SendId(1), Bytes::from_static(b"hi")).unwrap();
        assert_eq!(order(&mut s, window, 100), vec![4]);
        let first =
            s.next_fragment(Instant::now(), window, LinkMode::Packet, FrameSizes::fixed(mtu()), &mut BytesMut::new());
        assert_eq!(first, None);
    }

    #[test]
    fn acknowledgements_free_the_window_and_complete_sends() {
        let mut s = scheduler();
        s.send(SessionKey(1), 4, SendId(7), Bytes::from_static(b"hello")).unwrap();
        let mut out = BytesMut::new();
        let f =
            s.next_fragment(Instant::now(), u64::MAX, LinkMode::Packet, FrameSizes::fixed(mtu()), &mut out).unwrap();
        assert!(f.first_in_flight && !f.resent);
        assert_eq!(s.inflight(), f.len as u64);
        let acked = s.ack(4, Position { seq: 1, frag: 0 }, None).unwrap().unwrap();
        assert!(acked.advanced);
        assert_eq!(acked.done.iter().map(|m| m.id).collect::<Vec<_>>(), vec![Some(SendId(7))]);
        assert_eq!(s.inflight(), 0);
        // A lane that is gone ignores acknowledgements; one beyond anything sent is a protocol error.
        assert!(s.ack(13, Position { seq: 1, frag: 0 }, None).unwrap().is_none());
        assert!(matches!(s.ack(4, Position { seq: 2, frag: 0 }, None), Err(ProtocolError::BogusAck { channel: 4 })));
        assert!(matches!(s.ack(4, Position { seq: 1, frag: 1 }, None), Err(ProtocolError::BogusAck { channel: 4 })));
    }

    #[test]
    fn a_full_channel_blocks_until_acknowledged() {
        let mut s = Scheduler::new(100);
        s.reset();
        s.open(5, FrameKind::Data);
        // An empty channel takes any size.
        assert_eq!(s.capacity(5), u64::MAX);
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 150])).unwrap();
        assert_eq!(s.capacity(5), 0);
        assert!(matches!(s.send(SessionKey(1), 5, SendId(1), Bytes::from_static(b"x")), Err(SendError::WouldBlock)));
        order(&mut s, u64::MAX, 10);
        let acked = s.ack(5, Position { seq: 1, frag: 0 }, None).unwrap().unwrap();
        assert!(acked.writable);
        assert_eq!(s.capacity(5), u64::MAX);
    }

    #[test]
    fn bulk_frames_stay_small_until_the_link_showed_itself_clean() {
        let mut s = scheduler();
        let sizes =
            FrameSizes { small: mtu(), large: Mtu::new(4 * MTU).unwrap(), grow_after: Duration::from_millis(200) };
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 100_000])).unwrap();
        let mut out = BytesMut::new();
        let t0 = Instant::now();
        assert_eq!(s.next_fragment(t0, u64::MAX, LinkMode::Packet, sizes, &mut out).unwrap().len, MTU);
        s.loss.on_delivered(64);
        assert_eq!(s.next_fragment(t0, u64::MAX, LinkMode::Packet, sizes, &mut out).unwrap().len, 4 * MTU);
        s.loss.on_lost(1);
        assert!(s.next_fragment(t0, u64::MAX, LinkMode::Packet, sizes, &mut out).unwrap().len <= MTU);
    }

    #[test]
    fn rewinds_resend_and_release_the_window() {
        let mut s = scheduler();
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 300])).unwrap();
        let first = order(&mut s, u64::MAX, 100).len();
        assert!(s.inflight() > 0);
        s.rewind_all_to_acked(LinkMode::Packet, mtu());
        assert_eq!(s.inflight(), 0);
        let mut out = BytesMut::new();
        let again =
            s.next_fragment(Instant::now(), u64::MAX, LinkMode::Packet, FrameSizes::fixed(mtu()), &mut out).unwrap();
        assert!(again.resent && again.first_in_flight);
        assert_eq!(order(&mut s, u64::MAX, 100).len(), first - 1);
        s.forget_inflight();
        assert_eq!(s.inflight(), 0);
        // Closing a lane fails its sends.
        assert_eq!(s.close(5), Some(vec![SendId(0)]));
        assert_eq!(s.close(5), None);
    }

    #[test]
    fn bulk_frames_grow_alone_and_shrink_the_moment_a_message_goes_out() {
        let mut s = scheduler();
        // Frames grow only once the link has shown itself clean.
        s.loss.on_delivered(64);
        let sizes =
            FrameSizes { small: mtu(), large: Mtu::new(4 * MTU).unwrap(), grow_after: Duration::from_millis(200) };
        let t0 = Instant::now();
        let mut out = BytesMut::new();
        let mut next = |s: &mut Scheduler, at: u64| {
            let now = t0 + Duration::from_millis(at);
            s.next_fragment(now, u64::MAX, LinkMode::Stream, sizes, &mut out)?;
            let len = out.len();
            let frame = colink_frame::StreamCodec::default().decode(&mut out).unwrap().unwrap();
            Some((frame.header.channel, len))
        };
        s.send(SessionKey(1), 5, SendId(0), Bytes::from(vec![0; 100_000])).unwrap();
        assert_eq!(next(&mut s, 0), Some((5, 4 * MTU)));
        // A message goes first, and the bulk frames after it are small ...
        s.send(SessionKey(1), 4, SendId(1), Bytes::from_static(b"hi")).unwrap();
        assert_eq!(next(&mut s, 10).map(|(ch, _)| ch), Some(4));
        assert_eq!(next(&mut s, 10), Some((5, MTU)));
        assert_eq!(next(&mut s, 209), Some((5, MTU)));
        // ... until messages have been quiet for `grow_after`.
        assert_eq!(next(&mut s, 210), Some((5, 4 * MTU)));
    }
}
