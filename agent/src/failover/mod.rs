//! Failover: two appliances serving one site, one primary and one backup, a shared IP only
//! the primary holds, and automatic failover when the primary goes silent (issue 10).
//!
//! The core is pure ([`role`], [`conflict`], [`proof`], [`settings`]): no I/O, no clock,
//! driven by events with the time passed in, so its tests run in microseconds and cover
//! every transition. Around it, the driver carries out what the core decides.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`role`] | the role machine: roles and epochs, silence counting, test IPs, takeover, give-up and take-back, pending primary, manual swaps, conflicts, alerts, history entries |
//! | [`conflict`] | who keeps the role when both appliances claim the same one, and the conflict message status shows |
//! | [`proof`] | proving knowledge of the inter-appliance key over one TLS session without sending it; the key's fingerprint |
//! | [`settings`] | the backup settings (per appliance, never synchronised) and their partial update |
//! | [`wire`] | what the two appliances say on `/peer/v1`, and the proof on every request and answer |
//! | [`link`] | the client end of the peer channel: one kept-alive TLS 1.3 connection, proofs checked both ways |
//! | [`driver`] | the task that owns the machine: persists role and epoch before any network change, probes, holds and announces the shared IPs, heartbeats, test IPs, alerts, history |
//! | [`service`] | the handle the API uses: snapshot, status, commands (establish, break, become primary or backup, fix), the notifier seam |
//! | [`testips`] | pinging the test IPs, in a round and on demand |
//!
//! # How the pieces meet
//! - **Persistence.** [`role::Action::Persist`] comes first in every batch that changes the
//!   role; the driver writes `{role, epoch, peer}` (`failover-state.toml`, atomic, fsynced)
//!   and only then carries out the rest. On start it restores the machine: a persisted
//!   primary comes back *pending* unless its shared IPs are still on the NICs and its peer
//!   has not taken over (an agent restart, not a reboot); a backup withholds its shared
//!   IPs before the network's first pass.
//! - **The peer link.** A monitor task asks the peer for its state every heartbeat
//!   interval (`GET /peer/v1/state`) and reports answers and misses to the driver, which
//!   ticks the machine no later than [`role::Machine::deadline`].
//! - **The shared IPs** are held and withheld through the address overlay
//!   (`net/overlay.rs`), after an ARP probe (started ahead of a takeover so it is done
//!   when the timeout runs out); a withdrawal finishes when the addresses are off the NICs,
//!   so the peer's probe that follows cannot find them here.
//! - **Alerts** go to the [`service::Notifier`] (the site's e-mail).
//! - `data_sync_first` is the sync service's (`crate::sync::SyncService::change_role`):
//!   final sync first, then this role change.
//!
//! Current limits: one peer; IPv6 shared IPs are added with the kernel's own duplicate
//! address detection (about a second before they answer), not an agent probe; another
//! host claiming a held shared IP after it is taken is not watched (the probe before every
//! take and the conflict rules between the peers cover a peer); the history lives in
//! memory.

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
