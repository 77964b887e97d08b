//! A one-shot RFC 5227 probe for a static IPv4 address.
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

/// Probes `addr` on interface `index`.
pub async fn probe_ipv4(
    nl: &Netlink,
    index: u32,
    addr: Ipv4Addr,
) -> Result<ProbeOutcome, NetError> {
    let link = nl
        .link(index)
        .await?
        .ok_or_else(|| NetError::NoSuchNic(format!("index {index}")))?;
    if !link.running {
        return Ok(ProbeOutcome::NoLink);
    }
    let mac = link.mac.ok_or_else(|| NetError::NoMac(link.name.clone()))?;
    let sock = ArpSocket::open(index).map_err(NetError::Arp)?;
    let mut rng = XorShift::for_host(&mac, u64::from(u32::from(addr)));
    let mut acd = Acd::new(addr, mac, Timing::FAST, DefendPolicy::GiveUp, false);
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
