//! Data sync: the failover backup keeps a copy of its primary's site (`<data>/site`: the
//! site settings and the file store), pulled over the peer channel, incrementally, within
//! a bandwidth limit, and swapped in whole so that a failover never serves a half-synced
//! site.
//!
//! - [`tree`]: the index (content-defined chunks named by BLAKE3, a hash over every
//!   directory) and the scan that keeps it current.
//! - [`local`]: this appliance's index, saved between starts.
//! - [`wire`]: the messages and chunk frames on `/peer/v1/sync/...`.
//! - [`serve`]: the primary's answers, paced by [`limit`].
//! - [`pull`]: the backup's pull: compare, fetch, build a staging generation, swap.
//! - [`schedule`]: when the backup pulls by itself.
//! - [`service`]: one pull at a time, progress, history, the schedule, the final sync of a
//!   planned swap, the site's gate, the primary's no-pull alert.

pub mod limit;
pub mod local;
pub mod pull;
pub mod schedule;
pub mod serve;
pub mod service;
pub mod tree;
pub mod wire;

pub use schedule::Schedule;
pub use service::{SyncError, SyncService};
