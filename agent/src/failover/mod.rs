//! Failover: two appliances serving one site, one primary and one backup, a shared IP only
//! the primary holds, and automatic failover when the primary goes silent (issue 10).
//!
//! This module is the pure core: no I/O, no clock, no tasks. Everything here is driven by
//! events with the time passed in and answers with values, so its tests run in
//! microseconds and cover every transition.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`role`] | the role machine: roles and epochs, silence counting, test IPs, takeover, give-up and take-back, pending primary, manual swaps, conflicts, alerts, history entries |
//! | [`conflict`] | who keeps the role when both appliances claim the same one, and the conflict message status shows |
//! | [`proof`] | proving knowledge of the inter-appliance key over one TLS session without sending it; the key's fingerprint |
//! | [`settings`] | the backup settings (per appliance, never synchronised) and their partial update |
//!
//! # What the next step wires (the seams)
//! - **Persistence.** [`role::Action::Persist`] comes first in every batch that changes
//!   the role; the driver writes `{role, epoch}` with `store::Document` (atomic, fsynced)
//!   and only then carries out the rest of the batch. On start it rebuilds the machine
//!   with [`role::Machine::restore`]: a persisted primary comes back *pending*.
//! - **The peer link.** A monitor task under `runtime::Tasks` keeps one authenticated
//!   HTTPS connection to the peer (`client.rs`, pinned certificate), sends a heartbeat
//!   every [`settings::Settings::heartbeat_interval`] and reports each outcome as
//!   [`role::Machine::peer_answered`] or [`role::Machine::peer_missed`]; it calls
//!   [`role::Machine::tick`] no later than [`role::Machine::deadline`]. The same task
//!   carries out [`role::Action::AskPeer`] and reports [`role::Machine::peer_replied`].
//! - **`/peer/v1`** (`agent/src/api/peer.rs`): the routes the peer calls. Each side proves
//!   the key with [`proof::proof`] over [`proof::exporter`] of that very TLS session
//!   (TLS 1.3 only); a command from the peer goes to [`role::Machine::peer_command`].
//! - **The shared IPs.** [`role::Action::HoldSharedIps`]: ARP-probe each address (IPv6:
//!   the agent's own DAD), report [`role::Machine::address_in_use`] if anyone answers,
//!   else hold it through the address overlay (`net/overlay.rs`) with `Probe::Skip`,
//!   since the probe is done. [`role::Action::WithholdSharedIps`] withholds them;
//!   [`role::Action::ReleaseSharedIps`] writes the current enabled state into the
//!   configuration and takes the overlay entries away (breaking the relationship leaves
//!   the addresses as they are). [`role::Action::Announce`]: one burst of gratuitous ARP
//!   (request and reply form) and IPv6 unsolicited neighbour advertisements; the machine
//!   asks for the second burst itself, [`role::ANNOUNCE_AGAIN`] later. Another host
//!   claiming a shared IP this appliance holds (the ARP watcher of `net/defence.rs` does
//!   not defend overlay addresses) goes to [`role::Machine::address_claimed`].
//! - **Settings.** A `PUT .../failover/settings` or a change of the selected shared IPs
//!   calls [`role::Machine::set_params`] with [`role::Params::new`]; a new list of shared
//!   IPs is re-stated to the overlay from [`role::Status::holding`].
//! - **Test IPs.** [`role::Action::PingTestIps`] pings every test IP in parallel until the
//!   given time and reports [`role::Machine::test_ips_result`].
//! - **Alerts** go out by e-mail through the site's SMTP settings; **history entries** are
//!   stamped with the wall clock and kept in a bounded log for `GET .../history`.
//! - **Status** reads [`role::Machine::status`]; the conflict text is
//!   [`conflict::message`].
//! - `data_sync_first` on a manual role change waits on the data-sync hook before the
//!   driver calls [`role::Machine::become_primary`] / [`role::Machine::become_backup`].
//!
//! Current limits: the machine knows one peer; whether the peer "holds the shared IP and
//! answers on it" is what the peer reports and the driver checks, not something the
//! machine can see.

pub mod conflict;
pub mod driver;
pub mod link;
pub mod proof;
pub mod role;
pub mod service;
pub mod settings;
pub mod testips;
pub mod wire;

pub use service::{FailoverError, FailoverService, Notifier, RoleRequest, Snapshot};
pub use settings::{PrimaryTimeout, Settings, SettingsUpdate, TestIps};
