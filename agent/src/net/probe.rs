//! One-shot probes: RFC 5227 for a static IPv4 address, and for an IPv6 address the
//! question duplicate address detection asks (neighbour solicitations for it), so that a
//! holder that asked can add it without the kernel's DAD ([`probe_ipv6`]).
//!
//! Runs the [`Acd`] state machine with the `fast` timing (three probes, about 0.3 s) on a
//! raw ARP socket until it either would claim the address (nobody answered: free) or
//! reports a conflict (another host has it). Once added, static addresses are announced
//! ([`super::announce`]) and defended ([`super::defence`]).

use super::acd::{Acd, Action, DefendPolicy, Timing, XorShift};
use super::arp::{ArpFrame, ArpSocket};
use super::netlink::Netlink;
use super::reconcile::ProbeOutcome;
use super::NetError;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Longer than the fast profile ever takes; a guard against a machine that never settles.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Interface `index` and its MAC when it has carrier (`None` without: nothing can be
/// probed).
async fn carrier(
    nl: &Netlink,
    index: u32,
) -> Result<Option<(super::netlink::Link, super::acd::Mac)>, NetError> {
    let link = nl
        .link(index)
        .await?
        .ok_or_else(|| NetError::NoSuchNic(format!("index {index}")))?;
    if !link.running {
        return Ok(None);
    }
    let mac = link.mac.ok_or_else(|| NetError::NoMac(link.name.clone()))?;
    Ok(Some((link, mac)))
}

/// Probes `addr` on interface `index` with `timing` ([`Timing::FAST`] for a configured
/// address, [`Timing::TAKEOVER`] for a failover takeover).
pub async fn probe_ipv4(
    nl: &Netlink,
    index: u32,
    addr: Ipv4Addr,
    timing: Timing,
) -> Result<ProbeOutcome, NetError> {
    let Some((link, mac)) = carrier(nl, index).await? else {
        return Ok(ProbeOutcome::NoLink);
    };
    let sock = ArpSocket::open(index).map_err(NetError::Arp)?;
    let mut rng = XorShift::for_host(&mac, u64::from(u32::from(addr)));
    let mut acd = Acd::new(addr, mac, timing, DefendPolicy::GiveUp, false);
    let origin = Instant::now();
    let mut actions = acd.start(Duration::ZERO, true, &mut rng);
    let give_up = tokio::time::sleep(GIVE_UP);
    tokio::pin!(give_up);
    loop {
        for a in std::mem::take(&mut actions) {
            match a {
                Action::SendProbe => {
                    if let Err(e) = sock.send(&ArpFrame::probe(mac, addr)).await {
                        tracing::debug!(error = %e, "cannot send an ARP probe");
                    }
                }
                Action::Claim => {
                    tracing::debug!(address = %addr, nic = %link.name, "probe: nobody answered");
                    return Ok(ProbeOutcome::Free);
                }
                Action::Conflict(c) => return Ok(ProbeOutcome::InUse { mac: c.mac }),
                Action::SendAnnouncement | Action::Release => {}
            }
        }
        let deadline = acd
            .deadline()
            .map(|d| tokio::time::Instant::from_std(origin + d));
        tokio::select! {
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => actions = acd.on_timer(origin.elapsed(), &mut rng),
            frame = sock.recv() => {
                let frame = frame.map_err(NetError::Arp)?;
                actions = acd.on_arp(origin.elapsed(), &frame.seen());
            }
            _ = &mut give_up => {
                return Err(NetError::Arp(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "conflict detection did not finish",
                )))
            }
        }
    }
}

/// Neighbour solicitations an IPv6 probe sends, this far apart, then how long it waits.
const NS_COUNT: u32 = 2;
const NS_SPACING: Duration = Duration::from_millis(30);
const NS_WAIT: Duration = Duration::from_millis(70);

/// Asks the link whether another host has `addr`: neighbour solicitations for it to its
/// solicited-node group; a neighbour advertisement for it from another MAC means in use.
/// About 0.1 s.
pub async fn probe_ipv6(
    nl: &Netlink,
    index: u32,
    addr: std::net::Ipv6Addr,
) -> Result<ProbeOutcome, NetError> {
    use super::announce::{neighbour_solicitation, parse_neighbour_advertisement, solicited_node};
    let Some((link, mac)) = carrier(nl, index).await? else {
        return Ok(ProbeOutcome::NoLink);
    };
    let sock = NdSocket::open(&link.name).map_err(NetError::Announce)?;
    let ns = neighbour_solicitation(addr, mac);
    let to = std::net::SocketAddrV6::new(solicited_node(addr), 0, 0, index);
    let start = tokio::time::Instant::now();
    let end = start + NS_SPACING * (NS_COUNT - 1) + NS_WAIT;
    let mut sent = 0;
    loop {
        let next_send = start + NS_SPACING * sent;
        if sent < NS_COUNT && tokio::time::Instant::now() >= next_send {
            sock.send_to(&ns, to).await.map_err(NetError::Announce)?;
            sent += 1;
            continue;
        }
        let until = if sent < NS_COUNT {
            next_send.min(end)
        } else {
            end
        };
        match tokio::time::timeout_at(until, sock.recv()).await {
            Ok(Ok(message)) => {
                if let Some((target, _, their_mac)) = parse_neighbour_advertisement(&message) {
                    if target == addr && their_mac != Some(mac) {
                        return Ok(ProbeOutcome::InUse {
                            mac: their_mac.unwrap_or_default(),
                        });
                    }
                }
            }
            Ok(Err(e)) => return Err(NetError::Announce(e)),
            Err(_) if tokio::time::Instant::now() >= end => return Ok(ProbeOutcome::Free),
            Err(_) => {}
        }
    }
}

/// A raw ICMPv6 socket bound to one interface for neighbour discovery, hop limit 255 (our
/// own kernel's answers are told apart by their link-layer address).
struct NdSocket {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl NdSocket {
    fn open(nic: &str) -> std::io::Result<NdSocket> {
        use nix::sys::socket::{
            setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType,
        };
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::IcmpV6,
        )?;
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(nic))?;
        setsockopt(&fd, sockopt::Ipv6MulticastHops, &255)?;
        setsockopt(&fd, sockopt::Ipv6Ttl, &255)?;
        // SAFETY: the OwnedFd is a valid descriptor that the AsyncFd owns from here on and
        // that nothing replaces or closes while it is registered.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd)? };
        Ok(NdSocket { fd })
    }

    async fn send_to(&self, packet: &[u8], to: std::net::SocketAddrV6) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let to = nix::sys::socket::SockaddrIn6::from(to);
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                nix::sys::socket::sendto(
                    fd.get_ref().as_raw_fd(),
                    packet,
                    &to,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .map(|_| ())
                .map_err(std::io::Error::from)
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next ICMPv6 message (a raw IPv6 socket gets no IP header).
    async fn recv(&self) -> std::io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                let mut buf = [0u8; 1500];
                nix::sys::socket::recv(
                    fd.get_ref().as_raw_fd(),
                    &mut buf,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .map(|n| buf.get(..n).unwrap_or(&[]).to_vec())
                .map_err(std::io::Error::from)
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}
