//! ICMP echo (ping) over a raw socket, for the support utilities.
//!
//! The agent runs as root, so it uses a raw ICMP socket (datagram "ping sockets" are
//! governed by `net.ipv4.ping_group_range`, which excludes every group by default, root
//! included). Packet building and parsing are pure functions; the socket goes through
//! `nix`'s safe wrappers; the one `unsafe` is tokio's registration of the descriptor.
//!
//! Current limits: IPv6 link-local targets (which need a scope) are not supported.

use nix::sys::socket::{
    recvfrom, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrIn, SockaddrIn6,
};
use std::io;
use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8] = b"appliance-agent ping";

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = match pair {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request. For IPv6 the kernel fills in the checksum (it covers a pseudo-header).
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The sequence number of an echo reply with identifier `id`, if `packet` is one. IPv4
/// raw sockets deliver the IP header first; IPv6 ones do not.
pub fn echo_reply_seq(v6: bool, packet: &[u8], id: u16) -> Option<u16> {
    let icmp = if v6 {
        packet
    } else {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// A raw ICMP socket for echoes to one address.
pub struct Pinger {
    fd: AsyncFd<OwnedFd>,
    target: IpAddr,
    id: u16,
}

impl Pinger {
    pub fn open(target: IpAddr) -> io::Result<Pinger> {
        let (family, proto) = match target {
            IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp),
            IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6),
        };
        let fd = socket(
            family,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            proto,
        )?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = (std::process::id() as u16) ^ (nanos as u16);
        // SAFETY: the OwnedFd is a valid descriptor that the AsyncFd owns from here on and
        // that nothing replaces or closes while it is registered.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Pinger { fd, target, id })
    }

    async fn send(&self, seq: u16) -> io::Result<()> {
        let packet = echo_request(self.target.is_ipv6(), self.id, seq);
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                let raw = fd.get_ref().as_raw_fd();
                let r = match self.target {
                    IpAddr::V4(v4) => sendto(
                        raw,
                        &packet,
                        &SockaddrIn::from(SocketAddrV4::new(v4, 0)),
                        MsgFlags::empty(),
                    ),
                    IpAddr::V6(v6) => sendto(
                        raw,
                        &packet,
                        &SockaddrIn6::from(SocketAddrV6::new(v6, 0, 0, 0)),
                        MsgFlags::empty(),
                    ),
                };
                r.map(|_| ()).map_err(io::Error::from)
            });
            match sent {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for the reply with sequence `seq` from the target.
    async fn reply(&self, seq: u16) -> io::Result<()> {
        let v6 = self.target.is_ipv6();
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| {
                let raw = fd.get_ref().as_raw_fd();
                let mut buf = [0u8; 1500];
                let (n, from) = match self.target {
                    IpAddr::V4(_) => {
                        let (n, a) = recvfrom::<SockaddrIn>(raw, &mut buf)?;
                        (n, a.map(|a| IpAddr::V4(a.ip())))
                    }
                    IpAddr::V6(_) => {
                        let (n, a) = recvfrom::<SockaddrIn6>(raw, &mut buf)?;
                        (n, a.map(|a| IpAddr::V6(a.ip())))
                    }
                };
                let ours = from == Some(self.target)
                    && echo_reply_seq(v6, buf.get(..n).unwrap_or(&[]), self.id) == Some(seq);
                Ok(ours)
            });
            match got {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one echo request and waits up to `timeout` for its reply: the round trip
    /// time, or `None` when no reply came.
    pub async fn ping(&self, seq: u16, timeout: Duration) -> io::Result<Option<Duration>> {
        let start = Instant::now();
        self.send(seq).await?;
        match tokio::time::timeout(timeout, self.reply(seq)).await {
            Ok(Ok(())) => Ok(Some(start.elapsed())),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_request_verifies_to_zero() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(p[0], 8);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        // RFC 1071's example words.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        let v6 = echo_request(true, 1, 2);
        assert_eq!((v6[0], v6[2], v6[3]), (128, 0, 0), "the kernel sums IPv6");
    }

    #[test]
    fn replies_are_matched_by_identifier_and_sequence() {
        // IPv4: a 20-byte IP header, then an echo reply.
        let mut reply = vec![0x45u8];
        reply.extend_from_slice(&[0; 19]);
        let mut icmp = echo_request(false, 0xbeef, 3);
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(echo_reply_seq(false, &reply, 0xbeef), Some(3));
        assert_eq!(echo_reply_seq(false, &reply, 0xbeee), None);
        // An echo request (someone pinging us) is not a reply.
        let mut req = vec![0x45u8];
        req.extend_from_slice(&[0; 19]);
        req.extend_from_slice(&echo_request(false, 0xbeef, 3));
        assert_eq!(echo_reply_seq(false, &req, 0xbeef), None);
        let mut v6 = echo_request(true, 9, 4);
        v6[0] = 129;
        assert_eq!(echo_reply_seq(true, &v6, 9), Some(4));
        assert_eq!(echo_reply_seq(true, &v6[..5], 9), None);
        assert_eq!(echo_reply_seq(false, &[], 9), None);
    }
}
