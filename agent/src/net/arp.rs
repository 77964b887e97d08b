//! ARP frames and a raw AF_PACKET socket to send and receive them on one interface.
//!
//! The frame functions are pure; [`ArpSocket`] is the only place with `unsafe` (the
//! socket, bind, sendto and recvfrom calls libc offers no safe wrapper for).

use super::acd::{ArpSeen, Mac};
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

pub const FRAME_LEN: usize = 42;
const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: Mac = [0xff; 6];

/// A whole ARP frame (Ethernet header included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub request: bool,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// RFC 5227 probe: who has `target`? (sender IP all zeros).
    pub fn probe(ours: Mac, target: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            request: true,
            sender_mac: ours,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: [0; 6],
            target_ip: target,
        }
    }

    /// RFC 5227 announcement: a request with sender and target IP both `addr`.
    pub fn announcement(ours: Mac, addr: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            request: true,
            sender_mac: ours,
            sender_ip: addr,
            target_mac: [0; 6],
            target_ip: addr,
        }
    }

    /// Gratuitous ARP in reply form (some neighbours only update on replies).
    pub fn gratuitous_reply(ours: Mac, addr: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            request: false,
            sender_mac: ours,
            sender_ip: addr,
            target_mac: BROADCAST,
            target_ip: addr,
        }
    }

    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&BROADCAST);
        f[6..12].copy_from_slice(&self.sender_mac);
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
        f[18] = 6;
        f[19] = 4;
        f[20..22].copy_from_slice(&(if self.request { 1u16 } else { 2 }).to_be_bytes());
        f[22..28].copy_from_slice(&self.sender_mac);
        f[28..32].copy_from_slice(&self.sender_ip.octets());
        f[32..38].copy_from_slice(&self.target_mac);
        f[38..42].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Parses an Ethernet/IPv4 ARP frame; anything else is `None`.
    pub fn parse(f: &[u8]) -> Option<ArpFrame> {
        let f: &[u8; FRAME_LEN] = f.get(..FRAME_LEN)?.try_into().ok()?;
        if f[12..14] != ETH_P_ARP.to_be_bytes()
            || f[14..16] != [0, 1]
            || f[16..18] != [8, 0]
            || f[18] != 6
            || f[19] != 4
        {
            return None;
        }
        let request = match u16::from_be_bytes([f[20], f[21]]) {
            1 => true,
            2 => false,
            _ => return None,
        };
        let mac =
            |at: usize| -> Mac { [f[at], f[at + 1], f[at + 2], f[at + 3], f[at + 4], f[at + 5]] };
        let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        Some(ArpFrame {
            request,
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        })
    }

    pub fn seen(&self) -> ArpSeen {
        ArpSeen {
            request: self.request,
            sender_mac: self.sender_mac,
            sender_ip: self.sender_ip,
            target_ip: self.target_ip,
        }
    }
}

pub fn format_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A raw ARP socket bound to one interface. Frames this host sent are not returned.
pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

fn sockaddr(ifindex: i32, dest: Option<Mac>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ARP.to_be();
    sa.sll_ifindex = ifindex;
    if let Some(mac) = dest {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&mac);
    }
    sa
}

impl ArpSocket {
    /// Opens the socket on interface `ifindex` (needs CAP_NET_RAW).
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw: RawFd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sa = sockaddr(ifindex, None);
        // SAFETY: `sa` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd is a valid descriptor that the AsyncFd owns from here on and
        // that nothing replaces or closes while it is registered.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(ArpSocket { fd, ifindex })
    }

    /// Broadcasts one frame.
    pub async fn send(&self, frame: &ArpFrame) -> io::Result<()> {
        let bytes = frame.encode();
        let sa = sockaddr(self.ifindex, Some(BROADCAST));
        loop {
            let mut guard = self.fd.writable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: the buffer and the address are valid for the lengths passed.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        bytes.as_ptr().cast(),
                        bytes.len(),
                        0,
                        (&sa as *const libc::sockaddr_ll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next ARP frame another host sent (frames we sent ourselves are skipped).
    pub async fn recv(&self) -> io::Result<ArpFrame> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                let mut buf = [0u8; 128];
                let mut sa = sockaddr(0, None);
                let mut len = size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: the buffer, address and length pointers are valid for the call.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut sa as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let outgoing = sa.sll_pkttype == libc::PACKET_OUTGOING;
                Ok((!outgoing)
                    .then(|| ArpFrame::parse(&buf[..n as usize]))
                    .flatten())
            });
            match result {
                Ok(Ok(Some(frame))) => return Ok(frame),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x52, 0x54, 0, 0xa0, 0, 1];

    #[test]
    fn probe_has_zero_sender_ip_and_round_trips() {
        let p = ArpFrame::probe(MAC, Ipv4Addr::new(169, 254, 1, 1));
        let bytes = p.encode();
        assert_eq!(&bytes[0..6], &[0xff; 6]);
        assert_eq!(&bytes[12..14], &[0x08, 0x06]);
        assert_eq!(&bytes[28..32], &[0, 0, 0, 0]);
        assert_eq!(ArpFrame::parse(&bytes), Some(p));
        assert!(p.seen().is_probe());
    }

    #[test]
    fn announcement_and_reply_round_trip() {
        let addr = Ipv4Addr::new(169, 254, 1, 2);
        for f in [
            ArpFrame::announcement(MAC, addr),
            ArpFrame::gratuitous_reply(MAC, addr),
        ] {
            assert_eq!(ArpFrame::parse(&f.encode()), Some(f));
            assert!(!f.seen().is_probe());
        }
    }

    #[test]
    fn junk_is_not_arp() {
        assert_eq!(ArpFrame::parse(&[0u8; 10]), None);
        let mut bytes = ArpFrame::probe(MAC, Ipv4Addr::LOCALHOST).encode();
        bytes[21] = 9; // unknown opcode
        assert_eq!(ArpFrame::parse(&bytes), None);
        let mut bytes = ArpFrame::probe(MAC, Ipv4Addr::LOCALHOST).encode();
        bytes[13] = 0; // IPv4 ethertype
        assert_eq!(ArpFrame::parse(&bytes), None);
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac(&MAC), "52:54:00:a0:00:01");
    }
}
