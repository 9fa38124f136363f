//! How a member receives its room's messages: as sent (plain), or numbered in the
//! `wsbroker.v1` envelope with a welcome first and, on request, what it missed
//! (README, "Delivery contract"). The types here are what a connection asks for at
//! the door; the broker decides on them in `Rooms::join` and `Rooms::publish`.

use std::hash::{BuildHasher, Hasher};

/// How a member receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Each message as its sender sent it.
    Plain,
    /// Each message in the `wsbroker.v1` envelope, numbered by its room; `Since`
    /// is where the client asked to resume.
    Sequenced(Since),
}

/// Where a `wsbroker.v1` client asked to resume (`?since=<epoch>:<seq>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// No `since`: a fresh start, welcomed with the room's last seq.
    Start,
    /// Everything after message `seq` of the room's epoch `epoch`.
    After { epoch: u64, seq: u64 },
    /// A `since` that does not parse (or overflows): answered with a reset.
    Unusable,
}

impl Since {
    /// Reads `since` from a request's query string: the first `since=` parameter,
    /// two decimal u64s separated by `:`. Never fails: anything else is `Unusable`.
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        let Some(value) =
            query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| pair.strip_prefix("since="))
        else {
            return Self::Start;
        };
        let parsed = value.split_once(':').and_then(|(epoch, seq)| {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(epoch) || !digits(seq) {
                return None;
            }
            Some(Self::After { epoch: epoch.parse().ok()?, seq: seq.parse().ok()? })
        });
        parsed.unwrap_or(Self::Unusable)
    }
}

/// Where rooms' epochs come from: SplitMix64 over a counter, seeded once per process
/// from the standard library's per-process random keys. The counter makes every
/// epoch of a process different (the mix is a bijection), so a room created again
/// never gets an epoch it had; the seed makes them differ across restarts. Plain
/// wrapping arithmetic, so the proof covers it.
#[derive(Debug, Clone)]
pub(crate) struct Epochs {
    state: u64,
}

impl Epochs {
    /// Seeded from `RandomState`, which the OS's randomness keys once per process.
    pub(crate) fn seeded() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x7773_6272_6f6b_6572); // "wsbroker"
        Self { state: hasher.finish() }
    }

    /// The next epoch.
    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_two_decimal_numbers_and_nothing_else() {
        assert_eq!(Since::from_query(None), Since::Start);
        assert_eq!(Since::from_query(Some("token=abc")), Since::Start);
        assert_eq!(Since::from_query(Some("since=12:34")), Since::After { epoch: 12, seq: 34 });
        assert_eq!(
            Since::from_query(Some("token=x&since=18446744073709551615:0")),
            Since::After { epoch: u64::MAX, seq: 0 }
        );
        for bad in [
            "since=",
            "since=1",
            "since=1:",
            ":1",
            "since=:1",
            "since=1:2:3",
            "since=-1:2",
            "since=+1:2",
            "since=1:18446744073709551616",
            "since=0x10:1",
            "since=1%3A2",
            "since= 1:2",
        ] {
            let expected = if bad.starts_with("since=") { Since::Unusable } else { Since::Start };
            assert_eq!(Since::from_query(Some(bad)), expected, "{bad}");
        }
    }

    #[test]
    fn epochs_differ() {
        let mut epochs = Epochs::seeded();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(epochs.next()));
        }
    }
}
