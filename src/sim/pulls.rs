//! The KV pulls a prefill worker serves at once share it: each progresses at 1/n of the rate
//! it would have alone (processor sharing), as the real source's pulls share its core and its
//! link (the KV socket serves each pull on a thread of its own; NIXL reads share the NIC).

/// One source worker's pulls in progress.
#[derive(Debug, Default)]
pub(super) struct PullService {
    /// (request, seconds of work left, as if alone).
    active: Vec<(usize, f64)>,
    /// When `active` was last brought up to date, ns.
    at: u64,
    /// Bumped on every change: an end event of an older version is stale.
    pub version: u64,
}

const NS: f64 = 1e9;

impl PullService {
    /// Brings every pull's work left up to `now`.
    fn advance(&mut self, now: u64) {
        let n = self.active.len();
        if n > 0 && now > self.at {
            let done = (now - self.at) as f64 / NS / n as f64;
            for (_, left) in &mut self.active {
                *left -= done;
            }
        }
        self.at = now;
    }

    /// A pull of `work` seconds (alone) starts at `now`. Returns the next end: (time,
    /// version).
    pub fn start(&mut self, id: usize, work: f64, now: u64) -> (u64, u64) {
        self.advance(now);
        self.active.push((id, work.max(0.0)));
        self.version += 1;
        self.next_end().expect("a pull is active")
    }

    /// At `now`, the pulls that have finished, and the next end if any pull is left.
    pub fn finish(&mut self, now: u64) -> (Vec<usize>, Option<(u64, u64)>) {
        self.advance(now);
        // Within a nanosecond of done is done: the event's time was rounded to one.
        let (done, left): (Vec<_>, Vec<_>) = self.active.iter().partition(|(_, w)| *w <= 1.0 / NS);
        self.active = left;
        self.version += 1;
        (
            done.into_iter().map(|(id, _)| id).collect(),
            self.next_end(),
        )
    }

    /// When the pull with the least work left ends, if nothing joins before.
    fn next_end(&self) -> Option<(u64, u64)> {
        let n = self.active.len() as f64;
        let least = self.active.iter().map(|&(_, w)| w).min_by(f64::total_cmp)?;
        Some((self.at + (least * n * NS).ceil() as u64, self.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_at_once_share_the_source() {
        let mut s = PullService::default();
        // Two pulls of 10 ms at once: both end at 20 ms.
        s.start(1, 0.010, 0);
        let (end, v) = s.start(2, 0.010, 0);
        assert_eq!((end, v), (20_000_000, 2));
        let (done, next) = s.finish(end);
        assert_eq!((done, next), (vec![1, 2], None));
        // A pull of 10 ms, joined at 5 ms by one of 2.5 ms: the short one ends at 10 ms
        // (shared), the long one at 12.5 ms (5 ms alone, 2.5 of it shared over 5 ms, the last
        // 2.5 alone).
        s.start(3, 0.010, 30_000_000);
        let (end, _) = s.start(4, 0.0025, 35_000_000);
        assert_eq!(end, 40_000_000);
        let (done, next) = s.finish(end);
        assert_eq!(done, vec![4]);
        let (end, _) = next.unwrap();
        assert_eq!(end, 42_500_000);
        assert_eq!(s.finish(end).0, vec![3]);
    }
}
