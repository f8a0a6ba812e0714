//! Reliable, ordered delivery of one node's flow changes to one peer over
//! datagrams, after conntrackd's FTFW: every data datagram has a sequence
//! number; the receiver acknowledges what it holds in order and names the
//! gaps; the sender resends the gaps from a bounded window of what is not
//! acknowledged yet. What falls out of the window cannot be resent: the
//! sender then copies its whole table again (a bulk copy), which repairs any
//! loss. Pure: no sockets, no clock but what is passed in.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

/// Datagrams the sender keeps for resending (about 1.4 kB each).
pub const WINDOW: usize = 8192;
/// Datagrams the receiver holds out of order, waiting for a gap to fill.
pub const REORDER: usize = 8192;
/// A gap is asked for again after this long without an answer.
pub const NACK_AGAIN: Duration = Duration::from_millis(50);

/// What a peer asked for that the sender cannot give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfWindow;

/// The sending half: sequences data bodies (`B`) and keeps them until
/// acknowledged.
#[derive(Debug)]
pub struct Sender<B> {
    /// The sequence of the next datagram (the first is 1).
    next: u64,
    /// Sent and not acknowledged, oldest first, with their sequences.
    window: VecDeque<(u64, B)>,
    /// Everything up to this the peer holds.
    acked: u64,
}

impl<B> Default for Sender<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> Sender<B> {
    pub fn new() -> Self {
        Self {
            next: 1,
            window: VecDeque::new(),
            acked: 0,
        }
    }

    /// Sequences `body` and keeps it for resending; returns its sequence. A
    /// full window forgets its oldest datagram: if the peer still lacks it,
    /// its gap report will say so and a bulk copy repairs it.
    pub fn push(&mut self, body: B) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back((seq, body));
        seq
    }

    /// The last sequence sent (0: none yet).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// The oldest sequence that can still be resent (`last + 1` when the
    /// window is empty).
    pub fn oldest(&self) -> u64 {
        self.window.front().map_or(self.next, |(seq, _)| *seq)
    }

    /// Datagrams sent and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.window.len()
    }

    /// The peer holds everything up to `upto`, and lacks `gaps` after it:
    /// returns what to send again, oldest first, or [`OutOfWindow`] when a
    /// gap reaches below what is kept.
    pub fn on_ack(
        &mut self,
        upto: u64,
        gaps: &[(u64, u64)],
    ) -> Result<Vec<(u64, &B)>, OutOfWindow> {
        if upto > self.acked && upto < self.next {
            self.acked = upto;
            while self.window.front().is_some_and(|(seq, _)| *seq <= upto) {
                self.window.pop_front();
            }
        }
        let oldest = self.oldest();
        let mut again = Vec::new();
        for &(first, last) in gaps {
            if first > last || last >= self.next {
                continue;
            }
            if first < oldest {
                return Err(OutOfWindow);
            }
            for (seq, body) in &self.window {
                if (first..=last).contains(seq) {
                    again.push((*seq, body));
                }
            }
        }
        again.sort_by_key(|(seq, _)| *seq);
        again.dedup_by_key(|(seq, _)| *seq);
        Ok(again)
    }
}

/// What the receiving half makes of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivered<B> {
    /// Bodies now in order, to apply in this order.
    pub bodies: Vec<B>,
    /// The receiver lost track (too much out of order, or the sender says
    /// what is missing cannot be resent): only a bulk copy repairs its copy.
    pub lost: bool,
}

impl<B> Default for Delivered<B> {
    fn default() -> Self {
        Self {
            bodies: Vec::new(),
            lost: false,
        }
    }
}

/// The receiving half: puts data bodies (`B`) back in order and reports what
/// it lacks.
#[derive(Debug)]
pub struct Receiver<B> {
    /// The next sequence to apply; `None` until the first datagram, whose
    /// sequence the stream is taken up at (what came before is the bulk
    /// copy's to bring).
    next: Option<u64>,
    /// Received out of order, waiting for the gap before them.
    held: BTreeMap<u64, B>,
    /// The highest sequence the sender said it sent.
    highest: u64,
    /// When each gap (by its first sequence) was last asked for.
    asked: BTreeMap<u64, Instant>,
    /// Something arrived since the last report.
    dirty: bool,
}

impl<B> Default for Receiver<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> Receiver<B> {
    pub fn new() -> Self {
        Self {
            next: None,
            held: BTreeMap::new(),
            highest: 0,
            asked: BTreeMap::new(),
            dirty: false,
        }
    }

    /// A data datagram.
    pub fn on_data(&mut self, seq: u64, body: B) -> Delivered<B> {
        self.dirty = true;
        let next = *self.next.get_or_insert(seq);
        self.highest = self.highest.max(seq);
        if seq < next || self.held.contains_key(&seq) {
            return Delivered::default();
        }
        if self.held.len() >= REORDER {
            // Too far behind to catch up by resending: start over.
            self.held.clear();
            self.asked.clear();
            self.next = Some(seq + 1);
            return Delivered {
                bodies: vec![body],
                lost: true,
            };
        }
        self.held.insert(seq, body);
        self.release()
    }

    /// The sender's position: its last sequence, and the oldest it can still
    /// resend. A gap below that one will never fill.
    pub fn on_position(&mut self, last: u64, oldest: u64) -> Delivered<B> {
        self.highest = self.highest.max(last);
        // Answered with an acknowledgement even with nothing new: the last
        // one may have been lost, and a sender whose bulk copy waits for its
        // window to empty would wait for ever.
        self.dirty = true;
        let Some(next) = self.next else {
            // Nothing received yet: take the stream up after its last
            // datagram, and say so, so that the sender stops keeping what
            // came before for this node (and a bulk copy waiting for its
            // window to empty goes on).
            self.next = Some(last + 1);
            return Delivered::default();
        };
        if next < oldest {
            // Lost for good: skip to what can still come, and say so.
            self.next = Some(oldest);
            self.asked.retain(|first, _| *first >= oldest);
            let mut out = self.release();
            out.lost = true;
            return out;
        }
        Delivered::default()
    }

    /// Applies what is now in order.
    fn release(&mut self) -> Delivered<B> {
        let mut out = Delivered::default();
        let Some(mut next) = self.next else {
            return out;
        };
        while let Some(body) = self.held.remove(&next) {
            out.bodies.push(body);
            next += 1;
        }
        self.next = Some(next);
        self.asked.retain(|first, _| *first >= next);
        out
    }

    /// Everything up to this was applied (0: nothing yet).
    pub fn upto(&self) -> u64 {
        self.next.map_or(0, |n| n - 1)
    }

    /// The gaps to ask for now (those not asked for within [`NACK_AGAIN`]),
    /// and whether a report is due at all (something arrived, or a gap is
    /// to be asked for).
    pub fn report(&mut self, now: Instant) -> Option<(u64, Vec<(u64, u64)>)> {
        let next = self.next?;
        let mut gaps = Vec::new();
        let mut expect = next;
        let mut ends: Vec<u64> = self.held.keys().copied().collect();
        ends.push(self.highest + 1);
        for seq in ends {
            if seq > expect {
                gaps.push((expect, seq - 1));
            }
            expect = expect.max(seq + 1);
        }
        let due: Vec<(u64, u64)> = gaps
            .into_iter()
            .filter(|(first, _)| {
                self.asked
                    .get(first)
                    .is_none_or(|at| now.duration_since(*at) >= NACK_AGAIN)
            })
            .collect();
        if due.is_empty() && !self.dirty {
            return None;
        }
        for (first, _) in &due {
            self.asked.insert(*first, now);
        }
        self.dirty = false;
        Some((self.upto(), due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u8) -> u8 {
        n
    }

    fn seqs(d: &Delivered<u8>) -> Vec<u8> {
        d.bodies.clone()
    }

    #[test]
    fn a_receiver_that_joins_mid_stream_acknowledges_what_it_skipped() {
        let mut tx = Sender::<u8>::new();
        for n in 0..100 {
            tx.push(body(n));
        }
        assert_eq!(tx.unacked(), 100, "nobody listened");
        let mut rx = Receiver::<u8>::new();
        assert!(rx.on_position(tx.last(), tx.oldest()).bodies.is_empty());
        let (upto, gaps) = rx.report(Instant::now()).expect("a report is due");
        assert_eq!((upto, gaps.len()), (100, 0));
        assert!(tx.on_ack(upto, &gaps).unwrap().is_empty());
        assert_eq!(tx.unacked(), 0);
    }

    #[test]
    fn in_order_data_is_applied_at_once_and_acknowledged() {
        let mut tx = Sender::<u8>::new();
        let mut rx = Receiver::<u8>::new();
        for n in 1..=3 {
            let seq = tx.push(body(n));
            assert_eq!(seqs(&rx.on_data(seq, body(n))), vec![n]);
        }
        let now = Instant::now();
        let (upto, gaps) = rx.report(now).unwrap();
        assert_eq!((upto, gaps.as_slice()), (3, &[][..]));
        assert!(tx.on_ack(upto, &gaps).unwrap().is_empty());
        assert_eq!(tx.unacked(), 0);
        assert_eq!(rx.report(now), None, "nothing new to say");
    }

    #[test]
    fn a_lost_datagram_is_named_resent_and_applied_in_order() {
        let mut tx = Sender::<u8>::new();
        let mut rx = Receiver::<u8>::new();
        let sent: Vec<u64> = (1..=5).map(|n| tx.push(body(n))).collect();
        assert_eq!(seqs(&rx.on_data(sent[0], body(1))), vec![1]);
        // 2 and 3 are lost; 4 and 5 wait for them.
        assert!(seqs(&rx.on_data(sent[3], body(4))).is_empty());
        assert!(seqs(&rx.on_data(sent[4], body(5))).is_empty());
        let now = Instant::now();
        let (upto, gaps) = rx.report(now).unwrap();
        assert_eq!((upto, gaps.clone()), (1, vec![(2, 3)]));
        let again: Vec<u64> = tx
            .on_ack(upto, &gaps)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(again, vec![2, 3]);
        assert!(seqs(&rx.on_data(2, body(2))) == vec![2]);
        assert_eq!(seqs(&rx.on_data(3, body(3))), vec![3, 4, 5]);
        assert_eq!(rx.upto(), 5);
    }

    #[test]
    fn a_lost_tail_shows_in_the_senders_position() {
        let mut tx = Sender::<u8>::new();
        let mut rx = Receiver::<u8>::new();
        tx.push(body(1));
        tx.push(body(2));
        rx.on_data(1, body(1));
        assert!(!rx.on_position(tx.last(), tx.oldest()).lost);
        let (upto, gaps) = rx.report(Instant::now()).unwrap();
        assert_eq!((upto, gaps), (1, vec![(2, 2)]));
    }

    #[test]
    fn gaps_are_asked_for_again_only_after_a_while() {
        let mut rx = Receiver::<u8>::new();
        rx.on_data(1, body(1));
        rx.on_data(3, body(3));
        let t0 = Instant::now();
        assert_eq!(rx.report(t0).unwrap().1, vec![(2, 2)]);
        assert_eq!(rx.report(t0 + Duration::from_millis(10)), None);
        assert_eq!(
            rx.report(t0 + NACK_AGAIN).unwrap().1,
            vec![(2, 2)],
            "asked again"
        );
    }

    #[test]
    fn what_left_the_window_cannot_be_resent() {
        let mut tx = Sender::<u8>::new();
        for n in 0..(WINDOW + 10) {
            tx.push(body(n as u8));
        }
        assert_eq!(tx.oldest(), 11);
        assert_eq!(tx.on_ack(0, &[(5, 12)]), Err(OutOfWindow));
        let mut rx = Receiver::<u8>::new();
        rx.on_data(3, body(3));
        let d = rx.on_position(tx.last(), tx.oldest());
        assert!(d.lost, "the receiver learns its copy has a hole");
        assert_eq!(rx.upto(), 10);
    }

    #[test]
    fn duplicates_and_old_data_change_nothing() {
        let mut rx = Receiver::<u8>::new();
        assert_eq!(seqs(&rx.on_data(7, body(7))), vec![7], "taken up at 7");
        assert!(rx.on_data(7, body(7)).bodies.is_empty());
        assert!(rx.on_data(6, body(6)).bodies.is_empty());
        assert!(rx.on_data(9, body(9)).bodies.is_empty());
        assert!(rx.on_data(9, body(9)).bodies.is_empty());
        assert_eq!(seqs(&rx.on_data(8, body(8))), vec![8, 9]);
    }

    #[test]
    fn ten_percent_loss_still_delivers_everything_in_order() {
        let mut tx = Sender::<u32>::new();
        let mut rx = Receiver::<u32>::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut lossy = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.is_multiple_of(10)
        };
        let mut got = Vec::new();
        let mut now = Instant::now();
        // One round of repair: the sender's position, the receiver's report,
        // and the resends it asks for (as lossy as the first sending).
        let mut repair = |tx: &mut Sender<u32>,
                          rx: &mut Receiver<u32>,
                          got: &mut Vec<u32>,
                          lossy: &mut dyn FnMut() -> bool| {
            now += NACK_AGAIN;
            rx.on_position(tx.last(), tx.oldest());
            if let Some((upto, gaps)) = rx.report(now) {
                let again: Vec<(u64, u32)> = tx
                    .on_ack(upto, &gaps)
                    .unwrap()
                    .into_iter()
                    .map(|(s, b)| (s, *b))
                    .collect();
                for (s, b) in again {
                    if !lossy() {
                        got.extend(rx.on_data(s, b).bodies);
                    }
                }
            }
        };
        for n in 0..2000u32 {
            let b = n;
            let seq = tx.push(b);
            // The stream is taken up at the first datagram that arrives
            // (what came before is a bulk copy's to bring): let it be the first.
            if n == 0 || !lossy() {
                got.extend(rx.on_data(seq, b).bodies);
            }
            if n % 16 == 0 {
                repair(&mut tx, &mut rx, &mut got, &mut lossy);
            }
        }
        // Keep repairing until nothing is missing.
        for _ in 0..50 {
            repair(&mut tx, &mut rx, &mut got, &mut lossy);
        }
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
    }
}
