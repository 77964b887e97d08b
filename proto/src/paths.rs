//! Run-time paths shared by init and the agent.

/// Tmpfs directory init creates at boot for run-time state.
pub const RUN_DIR: &str = "/run/appliance";
/// Init's control socket (Unix stream, one request line, one response).
pub const CONTROL_SOCKET: &str = "/run/appliance/init.sock";
/// Boot milestones, one line each, appended by init and the agent.
pub const TIMELINE: &str = "/run/appliance/timeline";
/// What init found and did about the data disk (see [`crate::state::DataState`]).
pub const DATA_STATE: &str = "/run/appliance/data";
/// How the previous boot ended (see [`crate::state::LastShutdown`]).
pub const LAST_SHUTDOWN: &str = "/run/appliance/last-shutdown";
/// The report of the last secure erase (see [`crate::state::EraseReport`]).
pub const ERASE_REPORT: &str = "/run/appliance/erase-report";
/// Mount point of the persistent data partition.
pub const DATA_DIR: &str = "/data";
/// Init's private state on the data partition (shutdown record).
pub const DATA_INIT_DIR: &str = "/data/.init";
/// The shutdown record init writes just before unmounting `/data`.
pub const SHUTDOWN_RECORD: &str = "/data/.init/shutdown";
/// Filesystem label of the data partition.
pub const DATA_LABEL: &str = "APPLIANCE_DATA";
/// The agent binary init starts and supervises.
pub const AGENT_BIN: &str = "/bin/appliance-agent";
