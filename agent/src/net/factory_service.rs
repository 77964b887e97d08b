//! The factory address at run time: drives [`Factory`] with real time, a raw ARP socket,
//! link events and netlink, and publishes its status.

use super::acd::{Action, XorShift};
use super::arp::{format_mac, ArpFrame, ArpSocket};
use super::factory::{in_factory_range, Factory, Phase};
use super::netlink::{LinkEvent, LinkEvents, Netlink};
use super::{pick_factory_nic, NetError, FACTORY_PREFIX};
use crate::config::{Config, FactoryAddressConfig};
use crate::model::unix_now;
use crate::model::{FactoryAddress, FactoryConflict, FactoryState};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long to wait before trying again after an error (NIC missing, socket failed).
const RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct FactoryService {
    pub nl: Netlink,
    /// The NIC to use; `None` picks the first Ethernet NIC.
    pub nic: Option<String>,
    pub status: Arc<watch::Sender<FactoryAddress>>,
    pub config: watch::Receiver<Config>,
    pub timeline: PathBuf,
}

impl FactoryService {
    fn publish(&self, update: impl FnOnce(&mut FactoryAddress)) {
        self.status.send_modify(update);
    }

    /// Runs for the agent's lifetime.
    pub async fn run(mut self) {
        let mut marked = false;
        loop {
            let cfg = self.config.borrow_and_update().factory_address.clone();
            let result = if cfg.enabled {
                self.session(&cfg, &mut marked).await
            } else {
                self.disabled(&cfg).await
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "factory address: retrying in {RETRY:?}");
                self.publish(|s| {
                    s.state = FactoryState::Failed;
                    s.error = Some(e.to_string());
                    s.address = None;
                    s.probing = None;
                });
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = self.config.changed() => {}
                }
            }
        }
    }

    /// Removes every factory-range address and waits for the config to change.
    async fn disabled(&mut self, cfg: &FactoryAddressConfig) -> Result<(), NetError> {
        let links = self.nl.links().await?;
        let nic = pick_factory_nic(&links, self.nic.as_deref())?.clone();
        for a in self.nl.addresses(nic.index).await? {
            if matches!(a.ip, IpAddr::V4(v4) if in_factory_range(v4)) {
                self.nl.del_address(&a).await?;
                tracing::info!(nic = %nic.name, address = %a.ip, "factory address removed (disabled in config)");
            }
        }
        self.publish(|s| {
            *s = FactoryAddress {
                enabled: false,
                timing: cfg.timing,
                nic: Some(nic.name.clone()),
                state: FactoryState::Disabled,
                conflicts: std::mem::take(&mut s.conflicts),
                ..Default::default()
            }
        });
        let _ = self.config.changed().await;
        Ok(())
    }

    /// Claims and holds the address until the configuration changes (`Ok`) or something
    /// fails (`Err`).
    async fn session(
        &mut self,
        cfg: &FactoryAddressConfig,
        marked: &mut bool,
    ) -> Result<(), NetError> {
        let mut events = LinkEvents::subscribe()?;
        let links = self.nl.links().await?;
        let nic = pick_factory_nic(&links, self.nic.as_deref())?.clone();
        let mac = nic.mac.ok_or_else(|| NetError::NoMac(nic.name.clone()))?;
        self.nl.set_up(nic.index).await?;
        // Keep a factory address the NIC already has (the agent restarted); drop the rest.
        let mut held = None;
        for a in self.nl.addresses(nic.index).await? {
            if let IpAddr::V4(v4) = a.ip {
                if in_factory_range(v4) {
                    if held.is_none() {
                        held = Some(v4);
                    } else {
                        self.nl.del_address(&a).await?;
                    }
                }
            }
        }
        let sock = ArpSocket::open(nic.index).map_err(NetError::Arp)?;
        let running = self.nl.link(nic.index).await?.is_some_and(|l| l.running);

        let origin = Instant::now();
        let now = || origin.elapsed();
        let mut rng = XorShift::for_host(&mac, 0);
        let mut factory = Factory::new(mac, crate::net::acd::Timing::of(cfg.timing), held);
        let mut link_up_at = running.then(Instant::now);
        let mut usable_after: Option<Duration> = None;
        let mut conflicts_seen = 0u64;
        self.publish(|s| {
            s.enabled = true;
            s.timing = cfg.timing;
            s.nic = Some(nic.name.clone());
            s.mac = Some(format_mac(&mac));
            s.error = None;
        });
        tracing::info!(nic = %nic.name, timing = cfg.timing.as_str(), link = running, "factory address: starting conflict detection");
        let mut steps = factory.start(now(), running, &mut rng);
        loop {
            for (addr, action) in std::mem::take(&mut steps) {
                match action {
                    Action::SendProbe => send(&sock, &ArpFrame::probe(mac, addr)).await,
                    Action::SendAnnouncement => {
                        send(&sock, &ArpFrame::announcement(mac, addr)).await
                    }
                    Action::Claim => {
                        self.nl
                            .add_address(nic.index, addr.into(), FACTORY_PREFIX)
                            .await?;
                        usable_after = link_up_at.map(|t| t.elapsed());
                        tracing::info!(nic = %nic.name, address = %addr, after_ms = usable_after.map(|d| d.as_secs_f64() * 1000.0), "factory address added");
                        if !*marked {
                            crate::boot::mark(&self.timeline, "factory-address-up");
                            *marked = true;
                        }
                    }
                    Action::Release => {
                        release(&self.nl, nic.index, addr).await?;
                        tracing::warn!(nic = %nic.name, address = %addr, "factory address removed: another host claims it");
                    }
                    Action::Conflict(c) => {
                        tracing::warn!(address = %addr, other_mac = %format_mac(&c.mac), kind = c.kind.as_str(), "address conflict");
                    }
                }
            }
            let phase = factory.phase();
            let (new_conflicts, seen) = factory.conflicts_since(conflicts_seen);
            let new_conflicts: Vec<FactoryConflict> = new_conflicts
                .map(|h| FactoryConflict {
                    address: h.address.to_string(),
                    mac: format_mac(&h.mac),
                    kind: h.kind,
                    unix_time: unix_now(),
                })
                .collect();
            conflicts_seen = seen;
            self.publish(|s| {
                s.state = phase.into();
                s.exhausted = factory.exhausted;
                s.address = (phase == Phase::Held).then(|| {
                    format!(
                        "{}/{FACTORY_PREFIX}",
                        factory.address().unwrap_or(Ipv4Addr::UNSPECIFIED)
                    )
                });
                s.probing = (phase == Phase::Probing)
                    .then(|| factory.address().map(|a| a.to_string()))
                    .flatten();
                s.usable_after_ms = usable_after.map(|d| d.as_secs_f64() * 1000.0);
                s.conflicts.extend(new_conflicts);
                let excess = s.conflicts.len().saturating_sub(32);
                s.conflicts.drain(..excess);
            });

            let deadline = factory
                .deadline()
                .map(|d| tokio::time::Instant::from_std(origin + d));
            tokio::select! {
                _ = sleep_until(deadline) => {
                    steps = factory.on_timer(now(), &mut rng);
                }
                frame = sock.recv() => {
                    let frame = frame.map_err(NetError::Arp)?;
                    steps = factory.on_arp(now(), &frame.seen(), &mut rng);
                }
                event = events.next() => match event {
                    Some(LinkEvent::Changed(l)) if l.index == nic.index => {
                        if l.running && link_up_at.is_none() {
                            link_up_at = Some(Instant::now());
                            tracing::info!(nic = %nic.name, "link up: checking the factory address again");
                        }
                        if !l.running && link_up_at.is_some() {
                            link_up_at = None;
                            tracing::info!(nic = %nic.name, "link down");
                        }
                        steps = factory.on_link(now(), l.running, &mut rng);
                    }
                    Some(LinkEvent::Removed(i)) if i == nic.index => return Err(NetError::NoSuchNic(nic.name.clone())),
                    Some(_) => {}
                    None => return Err(NetError::EventsEnded),
                },
                changed = self.config.changed() => {
                    if changed.is_err() || self.config.borrow().factory_address != *cfg {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn send(sock: &ArpSocket, frame: &ArpFrame) {
    if let Err(e) = sock.send(frame).await {
        tracing::debug!(error = %e, "cannot send ARP (link down?)");
    }
}

async fn release(nl: &Netlink, index: u32, addr: Ipv4Addr) -> Result<(), NetError> {
    for a in nl.addresses(index).await? {
        if a.ip == IpAddr::V4(addr) {
            nl.del_address(&a).await?;
        }
    }
    Ok(())
}
