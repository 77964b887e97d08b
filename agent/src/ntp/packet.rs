//! NTP packets (RFC 5905, section 7.3) and the on-wire arithmetic (section 8), without I/O.
//!
//! The client sends a 48-byte mode-3 request whose transmit timestamp is a random nonce
//! (as RFC 9109 suggests: it tells nothing of our clock, and an answer must echo it in
//! its origin field to be believed); it keeps its own send time apart. An answer is
//! checked ([`check_answer`]) before any arithmetic: a short packet, a mode other than
//! server, an origin that is not our nonce (stale or spoofed), a kiss-of-death, a stratum
//! of 0 or 16 and over, an unsynchronised server (leap indicator 3) and a zero transmit
//! timestamp are refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The length of an NTP header without extensions or MAC.
pub const HEADER_LEN: usize = 48;

/// Seconds from 1900-01-01 (NTP's epoch) to 1970-01-01.
const UNIX_TO_NTP: u64 = 2_208_988_800;

/// An NTP timestamp: seconds since 1900 in the high 32 bits (era 0, and era 1 after
/// 2036 by wrapping), the fraction of a second in the low 32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_system(t: SystemTime) -> Timestamp {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs().wrapping_add(UNIX_TO_NTP) & 0xffff_ffff;
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    /// `self - earlier` in seconds. Per RFC 5905 the difference is taken modulo 2^64 and
    /// read as signed, so it is right across an era boundary for spans under 68 years.
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        let d = self.0.wrapping_sub(earlier.0) as i64;
        d as f64 / 4_294_967_296.0
    }

    /// `self + seconds`, wrapping like the difference does.
    pub fn add_seconds(self, seconds: f64) -> Timestamp {
        let d = (seconds * 4_294_967_296.0) as i64;
        Timestamp(self.0.wrapping_add(d as u64))
    }

    /// The Unix time this stands for in era 0 (1900-2036) or, below 1968, era 1.
    pub fn to_system(self) -> SystemTime {
        let secs = self.0 >> 32;
        let frac = self.0 & 0xffff_ffff;
        let nanos = (frac * 1_000_000_000) >> 32;
        let unix = if secs >= UNIX_TO_NTP {
            secs - UNIX_TO_NTP
        } else {
            secs + (1 << 32) - UNIX_TO_NTP
        };
        UNIX_EPOCH + Duration::new(unix, nanos as u32)
    }
}

/// The association modes a client meets.
pub const MODE_CLIENT: u8 = 3;
pub const MODE_SERVER: u8 = 4;
/// The leap indicator that says the server's clock is not synchronised.
pub const LEAP_ALARM: u8 = 3;

/// The fields of an NTP header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub root_delay: u32,
    pub root_dispersion: u32,
    /// The reference id; for stratum 0, the kiss code in ASCII.
    pub reference_id: [u8; 4],
    pub reference: Timestamp,
    pub origin: Timestamp,
    pub receive: Timestamp,
    pub transmit: Timestamp,
}

impl Packet {
    /// A client request (version 4) carrying `nonce` as its transmit timestamp.
    pub fn request(nonce: Timestamp, poll: i8) -> Packet {
        Packet {
            version: 4,
            mode: MODE_CLIENT,
            poll,
            transmit: nonce,
            ..Packet::default()
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.0.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.0.to_be_bytes());
        b
    }

    /// Reads the header of `bytes` (extension fields and a MAC after it are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Packet, Refusal> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Refusal::TooShort(bytes.len()))?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let ts_at = |i: usize| Timestamp((u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4)));
        Ok(Packet {
            leap: h[0] >> 6,
            version: (h[0] >> 3) & 7,
            mode: h[0] & 7,
            stratum: h[1],
            poll: h[2] as i8,
            precision: h[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [h[12], h[13], h[14], h[15]],
            reference: ts_at(16),
            origin: ts_at(24),
            receive: ts_at(32),
            transmit: ts_at(40),
        })
    }

    /// The kiss code of a stratum-0 answer, if it is printable.
    pub fn kiss_code(&self) -> String {
        self.reference_id
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| {
                if b.is_ascii_graphic() {
                    *b as char
                } else {
                    '?'
                }
            })
            .collect()
    }
}

/// Why an answer is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a packet of {0} bytes, shorter than an NTP header (48)")]
    TooShort(usize),
    #[error("a packet in mode {0}, not a server's answer (mode 4)")]
    NotServerMode(u8),
    #[error("an answer of NTP version {0}, not 1 to 4")]
    BadVersion(u8),
    #[error("an answer whose origin timestamp is not that of our request (stale or spoofed)")]
    OriginMismatch,
    #[error("kiss-of-death {0:?}: the server asks not to be used now")]
    KissOfDeath(String),
    #[error("the server's stratum is {0} (unsynchronised)")]
    BadStratum(u8),
    #[error("the server says its clock is not synchronised (leap indicator 3)")]
    Unsynchronised,
    #[error("the answer has a zero transmit timestamp")]
    ZeroTransmit,
}

impl Refusal {
    /// An answer that was not to our request: keep waiting for the right one.
    pub fn is_stray(&self) -> bool {
        matches!(
            self,
            Refusal::TooShort(_)
                | Refusal::NotServerMode(_)
                | Refusal::BadVersion(_)
                | Refusal::OriginMismatch
        )
    }
}

/// Checks that `answer` is a usable server answer to the request that carried `nonce`.
pub fn check_answer(answer: &Packet, nonce: Timestamp) -> Result<(), Refusal> {
    if answer.mode != MODE_SERVER {
        return Err(Refusal::NotServerMode(answer.mode));
    }
    if !(1..=4).contains(&answer.version) {
        return Err(Refusal::BadVersion(answer.version));
    }
    if answer.origin != nonce {
        return Err(Refusal::OriginMismatch);
    }
    if answer.stratum == 0 {
        return Err(Refusal::KissOfDeath(answer.kiss_code()));
    }
    if answer.stratum >= 16 {
        return Err(Refusal::BadStratum(answer.stratum));
    }
    if answer.leap == LEAP_ALARM {
        return Err(Refusal::Unsynchronised);
    }
    if answer.transmit == Timestamp::ZERO {
        return Err(Refusal::ZeroTransmit);
    }
    Ok(())
}

/// One exchange's measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The server's clock minus ours, in seconds.
    pub offset: f64,
    /// The round trip less the server's own time, in seconds (never below 0).
    pub delay: f64,
    pub stratum: u8,
}

/// Offset and delay of one exchange (RFC 5905 section 8): `t1` our send time, `t2` the
/// server's receive time, `t3` its transmit time, `t4` our receive time.
pub fn measure(t1: Timestamp, t2: Timestamp, t3: Timestamp, t4: Timestamp, stratum: u8) -> Sample {
    let offset = (t2.seconds_since(t1) + t3.seconds_since(t4)) / 2.0;
    let delay = t4.seconds_since(t1) - t3.seconds_since(t2);
    Sample {
        offset,
        delay: delay.max(0.0),
        stratum,
    }
}

/// The sample with the smallest round-trip delay: the one least disturbed by queues.
pub fn best(samples: &[Sample]) -> Option<Sample> {
    samples
        .iter()
        .copied()
        .min_by(|a, b| a.delay.total_cmp(&b.delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: f64) -> Timestamp {
        Timestamp(3_900_000_000u64 << 32).add_seconds(secs)
    }

    fn answer(nonce: Timestamp) -> Packet {
        Packet {
            leap: 0,
            version: 4,
            mode: MODE_SERVER,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: 0x0000_0100,
            root_dispersion: 0x0000_0200,
            reference_id: *b"GPS\0",
            reference: ts(-10.0),
            origin: nonce,
            receive: ts(1.0),
            transmit: ts(1.5),
        }
    }

    #[test]
    fn a_request_encodes_as_version_4_mode_3_with_the_nonce_in_transmit() {
        let nonce = Timestamp(0x0123_4567_89ab_cdef);
        let b = Packet::request(nonce, 6).encode();
        assert_eq!(b[0], 0b00_100_011);
        assert_eq!(b[2], 6);
        assert_eq!(&b[40..48], &nonce.0.to_be_bytes());
        assert!(b[1..40].iter().enumerate().all(|(i, x)| i == 1 || *x == 0));
    }

    #[test]
    fn a_packet_round_trips_and_extensions_are_ignored() {
        let p = answer(Timestamp(42));
        let mut bytes = p.encode().to_vec();
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
        bytes.extend_from_slice(&[0xaa; 20]);
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
        assert_eq!(Packet::decode(&bytes[..47]), Err(Refusal::TooShort(47)));
        assert_eq!(Packet::decode(&[]), Err(Refusal::TooShort(0)));
    }

    #[test]
    fn timestamps_convert_from_and_to_system_time_and_across_the_era() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
        let n = Timestamp::from_system(t);
        assert_eq!(n.0 >> 32, 1_700_000_000 + UNIX_TO_NTP);
        assert_eq!(n.0 & 0xffff_ffff, 1 << 30, "a quarter second");
        let back = n
            .to_system()
            .duration_since(t)
            .unwrap_or_else(|e| e.duration());
        assert!(back < Duration::from_nanos(2), "{back:?}");
        // 2036-02-07 06:28:16 UTC is the start of era 1: NTP seconds wrap to 0.
        let before = Timestamp((0xffff_ffffu64 << 32) | 0x8000_0000);
        let after = Timestamp(1 << 31);
        assert_eq!(after.seconds_since(before), 1.0);
        assert_eq!(before.seconds_since(after), -1.0);
        let era1 = UNIX_EPOCH + Duration::from_secs((1 << 32) - UNIX_TO_NTP + 5);
        assert_eq!(Timestamp::from_system(era1).0 >> 32, 5);
        assert_eq!(Timestamp::from_system(era1).to_system(), era1);
    }

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        // Our clock is 2 s behind; 0.1 s each way; the server holds the request 0.05 s.
        let t1 = ts(0.0);
        let t2 = ts(2.1);
        let t3 = ts(2.15);
        let t4 = ts(0.25);
        let s = measure(t1, t2, t3, t4, 3);
        assert!((s.offset - 2.0).abs() < 1e-9, "{s:?}");
        assert!((s.delay - 0.2).abs() < 1e-9, "{s:?}");
        // Ahead by 0.5 s with an asymmetric path (0.3 out, 0.1 back): the error is half
        // the asymmetry.
        let s = measure(ts(10.0), ts(9.8), ts(9.8), ts(10.4), 3);
        assert!((s.offset - -0.4).abs() < 1e-9, "{s:?}");
        assert!((s.delay - 0.4).abs() < 1e-9, "{s:?}");
        // A server whose own time exceeds the round trip gives delay 0, not negative.
        assert_eq!(measure(ts(0.0), ts(0.0), ts(1.0), ts(0.5), 3).delay, 0.0);
    }

    #[test]
    fn the_best_sample_has_the_smallest_delay() {
        let s = |offset, delay| Sample {
            offset,
            delay,
            stratum: 2,
        };
        let picked = best(&[s(0.3, 0.2), s(0.01, 0.02), s(-0.2, 0.5)]).unwrap();
        assert_eq!(picked.offset, 0.01);
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn a_good_answer_is_accepted() {
        let nonce = Timestamp(0xdead_beef_0bad_f00d);
        assert_eq!(check_answer(&answer(nonce), nonce), Ok(()));
        let v3 = Packet {
            version: 3,
            ..answer(nonce)
        };
        assert_eq!(check_answer(&v3, nonce), Ok(()));
    }

    #[test]
    fn every_bad_answer_is_refused_with_its_reason() {
        let nonce = Timestamp(0xdead_beef_0bad_f00d);
        let good = answer(nonce);
        let cases = [
            (
                Packet {
                    stratum: 0,
                    reference_id: *b"RATE",
                    ..good
                },
                Refusal::KissOfDeath("RATE".into()),
            ),
            (
                Packet {
                    stratum: 0,
                    reference_id: *b"DENY",
                    ..good
                },
                Refusal::KissOfDeath("DENY".into()),
            ),
            (
                Packet {
                    stratum: 16,
                    ..good
                },
                Refusal::BadStratum(16),
            ),
            (
                Packet {
                    stratum: 200,
                    ..good
                },
                Refusal::BadStratum(200),
            ),
            (
                Packet {
                    origin: Timestamp(nonce.0 + 1),
                    ..good
                },
                Refusal::OriginMismatch,
            ),
            (
                Packet {
                    origin: Timestamp::ZERO,
                    ..good
                },
                Refusal::OriginMismatch,
            ),
            (
                Packet {
                    transmit: Timestamp::ZERO,
                    ..good
                },
                Refusal::ZeroTransmit,
            ),
            (
                Packet {
                    leap: LEAP_ALARM,
                    ..good
                },
                Refusal::Unsynchronised,
            ),
            (
                Packet {
                    mode: MODE_CLIENT,
                    ..good
                },
                Refusal::NotServerMode(3),
            ),
            (Packet { version: 0, ..good }, Refusal::BadVersion(0)),
        ];
        for (packet, why) in cases {
            let decoded = Packet::decode(&packet.encode()).unwrap();
            assert_eq!(
                check_answer(&decoded, nonce),
                Err(why.clone()),
                "{packet:?}"
            );
        }
        assert!(Refusal::OriginMismatch.is_stray());
        assert!(Refusal::TooShort(3).is_stray());
        assert!(!Refusal::KissOfDeath("RATE".into()).is_stray());
        assert!(Refusal::KissOfDeath("RATE".into())
            .to_string()
            .contains("kiss-of-death \"RATE\""));
    }
}
