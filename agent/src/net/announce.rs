//! Telling the neighbours that an address is here now: after it is added, and after a
//! failover takeover (the new active node must pull the shared addresses' traffic over).
//!
//! - IPv4: gratuitous ARP in both forms, since neighbours differ in which they act on: a
//!   request (RFC 5227 announcement: sender and target IP the address, target MAC zero)
//!   and a reply (sender and target IP the address, to broadcast). Both are sent now and
//!   once more after `ANNOUNCE_INTERVAL` (2 s; Linux ignores a second update within 1 s).
//! - IPv6: an unsolicited neighbour advertisement (RFC 4861 §7.2.6: ICMPv6 type 136,
//!   override flag, to ff02::1, hop limit 255, with the target link-layer address),
//!   sent once the kernel's duplicate address detection is done (the address is no
//!   longer tentative), waiting at most [`DAD_WAIT`]; a second one follows after 1 s.
//!
//! [`neighbour_advertisement`] is pure; the socket is a raw ICMPv6 one bound to the
//! interface (the kernel fills in the checksum of raw ICMPv6 sockets).

use super::acd::{Mac, Timing};
use super::arp::{ArpFrame, ArpSocket};
use super::netlink::Netlink;
use super::NetError;
use nix::sys::socket::{
    sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrIn6,
};
use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// The longest wait for IPv6 duplicate address detection before giving up on the
/// advertisement (the kernel's default takes about 1 s; a tentative address cannot be
/// advertised).
pub const DAD_WAIT: Duration = Duration::from_secs(5);
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const NA_OVERRIDE: u8 = 0x20;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Announces `address` on interface `index` (see the module doc). IPv4 returns after
/// the first pair of frames; IPv6 after the advertisement, which waits for DAD.
pub async fn announce(nl: &Netlink, index: u32, address: IpAddr) -> Result<(), NetError> {
    let link = nl
        .link(index)
        .await?
        .ok_or_else(|| NetError::NoSuchNic(format!("index {index}")))?;
    let mac = link.mac.ok_or_else(|| NetError::NoMac(link.name.clone()))?;
    match address {
        IpAddr::V4(v4) => announce_ipv4(index, mac, v4).await,
        IpAddr::V6(v6) => {
            if !dad_done(nl, index, v6).await? {
                tracing::warn!(nic = %link.name, address = %v6, "not advertising: duplicate address detection did not finish in time (or failed)");
                return Ok(());
            }
            let sock = NaSocket::open(&link.name, index).map_err(NetError::Announce)?;
            let packet = neighbour_advertisement(v6, mac);
            sock.send(&packet).map_err(NetError::Announce)?;
            tracing::debug!(nic = %link.name, address = %v6, "sent an unsolicited neighbour advertisement");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = sock.send(&packet);
            });
            Ok(())
        }
    }
}

async fn announce_ipv4(index: u32, mac: Mac, addr: Ipv4Addr) -> Result<(), NetError> {
    let sock = ArpSocket::open(index).map_err(NetError::Arp)?;
    let frames = [
        ArpFrame::announcement(mac, addr),
        ArpFrame::gratuitous_reply(mac, addr),
    ];
    for f in &frames {
        if let Err(e) = sock.send(f).await {
            tracing::debug!(error = %e, "cannot send gratuitous ARP");
        }
    }
    tokio::spawn(async move {
        tokio::time::sleep(Timing::FAST.announce_interval).await;
        for f in &frames {
            let _ = sock.send(f).await;
        }
    });
    Ok(())
}

/// Waits until `addr` on `index` is no longer tentative: `false` if DAD failed, the
/// address went away, or [`DAD_WAIT`] passed.
async fn dad_done(nl: &Netlink, index: u32, addr: Ipv6Addr) -> Result<bool, NetError> {
    let deadline = tokio::time::Instant::now() + DAD_WAIT;
    loop {
        let state = nl
            .addresses(index)
            .await?
            .into_iter()
            .find(|a| a.ip == IpAddr::V6(addr));
        match state {
            None => return Ok(false),
            Some(a) if a.dad_failed => return Ok(false),
            Some(a) if !a.tentative => return Ok(true),
            Some(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An unsolicited neighbour advertisement for `target` (ICMPv6 message only: the
/// checksum is left zero for the kernel to fill in).
pub fn neighbour_advertisement(target: Ipv6Addr, mac: Mac) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
    p[4] = NA_OVERRIDE;
    p[8..24].copy_from_slice(&target.octets());
    p[24] = OPTION_TARGET_LINK_LAYER;
    p[25] = 1; // in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;
const OPTION_SOURCE_LINK_LAYER: u8 = 1;

/// A neighbour solicitation for `target` (RFC 4861 §4.3) with our link-layer address, as
/// a probe asks whether anyone has the address (checksum left to the kernel).
pub fn neighbour_solicitation(target: Ipv6Addr, mac: Mac) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = ICMPV6_NEIGHBOUR_SOLICITATION;
    p[8..24].copy_from_slice(&target.octets());
    p[24] = OPTION_SOURCE_LINK_LAYER;
    p[25] = 1;
    p[26..32].copy_from_slice(&mac);
    p
}

/// The solicited-node multicast address of `target` (RFC 4291 §2.7.1): ff02::1:ffXX:XXXX
/// with its last 24 bits.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// What a received ICMPv6 message says, if it is a neighbour advertisement: the target
/// address, the override flag, and the target link-layer address option.
pub fn parse_neighbour_advertisement(icmp: &[u8]) -> Option<(Ipv6Addr, bool, Option<Mac>)> {
    if icmp.len() < 24 || icmp[0] != ICMPV6_NEIGHBOUR_ADVERTISEMENT || icmp[1] != 0 {
        return None;
    }
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let mut mac = None;
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            break;
        }
        if opts[0] == OPTION_TARGET_LINK_LAYER {
            mac = opts[2..8].try_into().ok();
        }
        opts = &opts[len..];
    }
    Some((Ipv6Addr::from(target), icmp[4] & NA_OVERRIDE != 0, mac))
}

/// A raw ICMPv6 socket bound to one interface, hop limit 255 (RFC 4861 requires it).
struct NaSocket {
    fd: OwnedFd,
    index: u32,
}

impl NaSocket {
    fn open(nic: &str, index: u32) -> io::Result<NaSocket> {
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::IcmpV6,
        )?;
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(nic))?;
        setsockopt(&fd, sockopt::Ipv6MulticastHops, &255)?;
        setsockopt(&fd, sockopt::Ipv6Ttl, &255)?;
        Ok(NaSocket { fd, index })
    }

    /// Sends `packet` to all nodes on the link (a blocking send of 32 bytes: the socket
    /// buffer never fills for this).
    fn send(&self, packet: &[u8]) -> io::Result<()> {
        let to = SockaddrIn6::from(SocketAddrV6::new(ALL_NODES, 0, 0, self.index));
        sendto(self.fd.as_raw_fd(), packet, &to, MsgFlags::empty())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertisement_has_the_override_flag_and_our_link_layer_address() {
        let target: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let mac = [0x52, 0x54, 0, 0xb0, 0, 0x10];
        let p = neighbour_advertisement(target, mac);
        assert_eq!(
            (p[0], p[1], p[2], p[3]),
            (136, 0, 0, 0),
            "the kernel sums it"
        );
        assert_eq!(p[4], 0x20, "override, not solicited, not a router");
        assert_eq!(&p[24..26], &[2, 1]);
        assert_eq!(
            parse_neighbour_advertisement(&p),
            Some((target, true, Some(mac)))
        );
        let mut solicitation = p;
        solicitation[0] = 135;
        assert_eq!(parse_neighbour_advertisement(&solicitation), None);
        let ns = neighbour_solicitation(target, mac);
        assert_eq!((ns[0], ns[24], ns[25]), (135, 1, 1));
        assert_eq!(&ns[8..24], &target.octets());
        assert_eq!(parse_neighbour_advertisement(&ns), None);
        assert_eq!(
            solicited_node("2001:db8::12:3456".parse().unwrap()),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(parse_neighbour_advertisement(&p[..10]), None);
    }
}
