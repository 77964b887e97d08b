//! Watching a lab host's cable: every frame its `eth0` receives, through an AF_PACKET
//! socket opened inside its namespace, sorted into what the tests look for (ARP frames
//! and IPv6 neighbour advertisements).

use crate::netns::enter_and_run;
use appliance_agent::net::announce::parse_neighbour_advertisement;
use appliance_agent::net::arp::ArpFrame;
use nix::sys::socket::{
    recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A neighbour advertisement as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub source_mac: [u8; 6],
    pub destination: Ipv6Addr,
    pub hop_limit: u8,
    pub target: Ipv6Addr,
    pub override_flag: bool,
    pub link_layer: Option<[u8; 6]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Arp(ArpFrame),
    Advertisement(Advertisement),
}

/// Sorts one Ethernet frame.
pub fn classify(frame: &[u8]) -> Option<Seen> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        0x0806 => ArpFrame::parse(frame).map(Seen::Arp),
        0x86dd => {
            let ip = frame.get(14..54)?;
            if ip[6] != 58 {
                return None;
            }
            let destination: [u8; 16] = ip[24..40].try_into().ok()?;
            let (target, override_flag, link_layer) =
                parse_neighbour_advertisement(frame.get(54..)?)?;
            Some(Seen::Advertisement(Advertisement {
                source_mac: frame[6..12].try_into().ok()?,
                destination: Ipv6Addr::from(destination),
                hop_limit: ip[7],
                target,
                override_flag,
                link_layer,
            }))
        }
        _ => None,
    }
}

/// A packet socket on every interface of a namespace, open from creation on (so nothing
/// sent after [`Capture::open`] returns is missed).
pub struct Capture {
    fd: OwnedFd,
    ns: String,
}

impl Capture {
    pub fn open(ns: &str) -> Capture {
        let fd = enter_and_run(ns, || {
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::EthAll,
            )
            .expect("packet socket");
            setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))
                .expect("SO_RCVTIMEO");
            fd
        });
        Capture {
            fd,
            ns: ns.to_string(),
        }
    }

    /// Receives until `done` says so (with everything seen so far) or `timeout` passes;
    /// the frames seen either way.
    pub fn until(&self, timeout: Duration, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        while start.elapsed() < timeout && !done(&seen) {
            match recvfrom::<LinkAddr>(self.fd.as_raw_fd(), &mut buf) {
                Ok((n, from)) => {
                    // Only what arrives from the cable (not what the host sends itself).
                    if from.is_some_and(|a| a.pkttype() == 4) {
                        continue; // PACKET_OUTGOING
                    }
                    if let Some(s) = classify(&buf[..n]) {
                        seen.push(s);
                    }
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("receive in {}: {e}", self.ns),
            }
        }
        seen
    }
}
