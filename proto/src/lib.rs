//! What PID 1 (`appliance-init`) and the management agent agree on.
//!
//! Everything here is plain data with text encodings and no I/O, so both sides parse and
//! emit the same bytes and the formats are covered by unit tests:
//! - [`paths`]: where things live at run time;
//! - [`control`]: requests to init over its control socket (power off, reboot, log);
//! - [`gpt`]: GUID partition tables and the appliance disk layout (image builder and init);
//! - [`timeline`]: boot milestones on the monotonic clock;
//! - [`cmdline`]: the `appliance.*` keys of the kernel command line;
//! - [`state`]: small key=value records init leaves for the agent (data disk, last shutdown).

pub mod cmdline;
pub mod control;
pub mod gpt;
pub mod paths;
pub mod state;
pub mod timeline;
