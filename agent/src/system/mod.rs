//! The system: status, and power actions carried out by init.

pub mod basics;
mod health;
pub mod init_client;

pub use health::{health, Health, Problem};

use crate::model;
use crate::settings::Settings;
use appliance_proto::control::{
    PowerAction, Request, ResetLevel, API_REASON_PREFIX, CANCELLED, MAX_API_REASON, NOTHING_PENDING,
};
use appliance_proto::state::{DataState, EraseReport, LastShutdown};
use init_client::{InitClient, InitError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest delay a power request may ask for.
pub const MAX_DELAY_SECONDS: u32 = 3600;
/// The API answers before init starts the shutdown; this is the head start it gets.
const ANSWER_HEAD_START: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("a {0} is already scheduled")]
    AlreadyScheduled(PowerAction),
    #[error("delay_seconds must be at most {MAX_DELAY_SECONDS}")]
    DelayTooLong,
    #[error("reason must be at most {MAX_API_REASON} bytes of UTF-8")]
    ReasonTooLong,
    #[error("no factory reset is waiting to be carried out")]
    NoResetPending,
    #[error("the factory reset cannot be cancelled: {0}")]
    CannotCancel(String),
    #[error(transparent)]
    Init(#[from] InitError),
}

/// A validated power request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerCommand {
    pub action: PowerAction,
    pub reason: String,
    pub delay: Duration,
}

impl PowerCommand {
    pub fn from_request(
        action: PowerAction,
        req: &model::PowerRequest,
    ) -> Result<PowerCommand, PowerError> {
        let delay = req.delay_seconds.unwrap_or(0);
        if delay > MAX_DELAY_SECONDS {
            return Err(PowerError::DelayTooLong);
        }
        let given = req.reason.as_deref().unwrap_or("").trim();
        // Bytes, as init counts them (a multi-byte character counts for each of its bytes).
        if given.len() > MAX_API_REASON {
            return Err(PowerError::ReasonTooLong);
        }
        let reason = if given.is_empty() {
            "api request".to_string()
        } else {
            format!("{API_REASON_PREFIX}{given}")
        };
        Ok(PowerCommand {
            action,
            reason,
            delay: Duration::from_secs(delay.into()),
        })
    }
}

/// Has init record a factory reset (a marker on the data disk) and reboot into it, in one
/// request. The request runs on a task of its own: a client that goes away (which drops
/// the handler at its next await) does not stop it half way. While it is under way, or
/// once init has taken it, power requests are refused.
pub async fn factory_reset(
    power: &Power,
    level: ResetLevel,
    delay_seconds: u32,
) -> Result<(), PowerError> {
    if delay_seconds > MAX_DELAY_SECONDS {
        return Err(PowerError::DelayTooLong);
    }
    power.claim(PowerAction::Reboot)?;
    let this = power.clone();
    let task = tokio::spawn(async move {
        let request = Request::Reset {
            level,
            delay_seconds,
        };
        let result = this.init.request(&request).await;
        match &result {
            Ok(_) => tracing::warn!(%level, "factory reset recorded; init reboots to carry it out"),
            Err(e) => {
                tracing::error!(error = %e, %level, "init did not take the factory reset");
                this.release();
            }
        }
        result
    });
    match task.await {
        Ok(result) => result.map(drop).map_err(PowerError::from),
        Err(e) => Err(PowerError::Init(InitError::Io(std::io::Error::other(e)))),
    }
}

/// Clears a factory reset whose reboot has not begun; returns its level.
pub async fn cancel_reset(power: &Power) -> Result<ResetLevel, PowerError> {
    let answer = match power.init.request(&Request::CancelReset).await {
        Ok(answer) => answer,
        Err(InitError::Refused(m)) => return Err(PowerError::CannotCancel(m)),
        Err(e) => return Err(e.into()),
    };
    let answer = answer.trim();
    if answer == NOTHING_PENDING {
        return Err(PowerError::NoResetPending);
    }
    let level = answer
        .strip_prefix(CANCELLED)
        .and_then(|l| ResetLevel::parse(l.trim()))
        .ok_or(PowerError::Init(InitError::Protocol))?;
    // The reboot that would have carried it out is off too.
    power.release_if(PowerAction::Reboot);
    tracing::warn!(%level, "factory reset cancelled");
    Ok(level)
}

/// Carries out power commands through init, once.
#[derive(Clone)]
pub struct Power {
    init: InitClient,
    scheduled: Arc<Mutex<Option<PowerAction>>>,
}

impl Power {
    pub fn new(init: InitClient) -> Power {
        Power {
            init,
            scheduled: Arc::new(Mutex::new(None)),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<PowerAction>> {
        self.scheduled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the one slot for a power action, or says which action holds it.
    fn claim(&self, action: PowerAction) -> Result<(), PowerError> {
        let mut slot = self.slot();
        if let Some(existing) = *slot {
            return Err(PowerError::AlreadyScheduled(existing));
        }
        *slot = Some(action);
        Ok(())
    }

    fn release(&self) {
        *self.slot() = None;
    }

    fn release_if(&self, action: PowerAction) {
        let mut slot = self.slot();
        if *slot == Some(action) {
            *slot = None;
        }
    }

    /// The power action under way, if any.
    pub fn scheduled(&self) -> Option<PowerAction> {
        *self.slot()
    }

    /// Checks init is there, then schedules the command; returns at once.
    pub async fn schedule(&self, cmd: PowerCommand) -> Result<(), PowerError> {
        self.init.request(&Request::Ping).await?;
        self.claim(cmd.action)?;
        tracing::warn!(action = %cmd.action, reason = %cmd.reason, delay_s = cmd.delay.as_secs(), "power action scheduled");
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(cmd.delay + ANSWER_HEAD_START).await;
            if let Err(e) = this
                .init
                .request(&Request::power(cmd.action, &cmd.reason))
                .await
            {
                tracing::error!(error = %e, action = %cmd.action, "init did not take the power request");
                this.release();
            }
        });
        Ok(())
    }
}

fn read_small(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn uptime_seconds() -> f64 {
    read_small(std::path::Path::new("/proc/uptime"))
        .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
}

/// VmRSS of a process from `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: &str) -> Option<u64> {
    let text = read_small(&std::path::Path::new("/proc").join(pid).join("status"))?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's host name now.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The build identity, set by the image build (`APPLIANCE_BUILD`), else `dev`.
pub fn build_id() -> &'static str {
    option_env!("APPLIANCE_BUILD").unwrap_or("dev")
}

/// The software this agent runs as one string, `version+build` (the vendor API's
/// `<version>`).
pub fn version_string() -> String {
    format!("{}+{}", env!("CARGO_PKG_VERSION"), build_id())
}

/// This appliance's id (the vendor API's `GUID`), worked out once per process: the SMBIOS
/// system UUID, else the one kept in `config_dir` (see [`crate::config::appliance_id`]).
/// Reads firmware tables and maybe writes a file: call it off the async workers.
pub fn appliance_id(config_dir: &std::path::Path) -> Result<String, crate::config::IdError> {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(id.clone());
    }
    let smbios = basics::identity().uuid;
    let id = crate::config::appliance_id(config_dir, smbios.as_deref())?;
    Ok(ID.get_or_init(|| id).clone())
}

/// Where `/data` is this boot, from init's record.
pub fn data_status(settings: &Settings) -> model::DataStatus {
    match read_small(&settings.data_state()).and_then(|t| DataState::parse(&t)) {
        Some(DataState::Persistent {
            device,
            formatted,
            check,
        }) => model::DataStatus {
            mode: model::DataMode::Persistent,
            device: Some(device),
            formatted_this_boot: formatted,
            detail: check,
        },
        Some(DataState::Volatile { reason }) => model::DataStatus {
            mode: model::DataMode::Volatile,
            device: None,
            formatted_this_boot: false,
            detail: reason,
        },
        None => model::DataStatus {
            mode: model::DataMode::Unknown,
            device: None,
            formatted_this_boot: false,
            detail: "init left no record of the data partition".into(),
        },
    }
}

/// Collects `GET /status` from the run-time records and the kernel.
pub fn status(
    settings: &Settings,
    factory: &model::FactoryAddress,
    started: Instant,
) -> model::Status {
    let data = data_status(settings);
    let last_shutdown = read_small(&settings.last_shutdown())
        .and_then(|t| LastShutdown::parse(&t))
        .map(|s| model::LastShutdown {
            kind: s.kind,
            reason: s.reason,
            unix_time: s.unix_time,
        });
    model::Status {
        product: "B Series appliance".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        build: build_id().into(),
        hostname: host_name(),
        uptime_seconds: uptime_seconds(),
        boot_timeline: crate::boot::read(&settings.timeline())
            .into_iter()
            .map(|m| model::Milestone {
                ms: m.millis(),
                name: m.name,
            })
            .collect(),
        data,
        last_shutdown,
        factory_address: factory.clone(),
        agent: model::AgentStatus {
            pid: std::process::id(),
            running_seconds: started.elapsed().as_secs_f64(),
            debug_hooks: settings.boot.debug,
            rss_kib: rss_kib("self"),
            init_rss_kib: (nix::unistd::getppid().as_raw() == 1)
                .then(|| rss_kib("1"))
                .flatten(),
            tasks: Vec::new(),
            log_dropped: crate::logging::dropped(),
        },
        basics: basics::basics(&settings.data_dir.join("config")),
        erase_report: read_small(&settings.run_dir.join("erase-report"))
            .and_then(|t| EraseReport::parse(&t)),
        config_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_requests_are_validated() {
        let ok = PowerCommand::from_request(PowerAction::Reboot, &model::PowerRequest::default())
            .unwrap();
        assert_eq!(ok.reason, "api request");
        assert_eq!(ok.delay, Duration::ZERO);
        let req = model::PowerRequest {
            reason: Some(" upgrade ".into()),
            delay_seconds: Some(10),
        };
        let ok = PowerCommand::from_request(PowerAction::PowerOff, &req).unwrap();
        assert_eq!(
            (ok.reason.as_str(), ok.delay),
            ("api: upgrade", Duration::from_secs(10))
        );
        let req = model::PowerRequest {
            reason: None,
            delay_seconds: Some(MAX_DELAY_SECONDS + 1),
        };
        assert!(matches!(
            PowerCommand::from_request(PowerAction::Halt, &req),
            Err(PowerError::DelayTooLong)
        ));
        let req = model::PowerRequest {
            reason: Some("x".repeat(201)),
            delay_seconds: None,
        };
        assert!(matches!(
            PowerCommand::from_request(PowerAction::Halt, &req),
            Err(PowerError::ReasonTooLong)
        ));
    }

    #[test]
    fn a_reason_is_counted_in_bytes_as_init_counts_them() {
        let req = |r: String| model::PowerRequest {
            reason: Some(r),
            delay_seconds: None,
        };
        // 101 two-byte characters: 101 characters, 202 bytes.
        assert!(matches!(
            PowerCommand::from_request(PowerAction::Reboot, &req("é".repeat(101))),
            Err(PowerError::ReasonTooLong)
        ));
        let ok = PowerCommand::from_request(PowerAction::Reboot, &req("é".repeat(100))).unwrap();
        // What init receives parses, reason and all.
        let line = Request::power(ok.action, &ok.reason).encode();
        assert_eq!(
            Request::parse(line.as_bytes()),
            Ok(Request::power(ok.action, &ok.reason))
        );
    }

    /// A stand-in for init's control socket: answers each request with `answer` after
    /// `delay`, and records the request lines.
    fn fake_init(
        dir: &std::path::Path,
        answer: &'static str,
        delay: Duration,
    ) -> (Power, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let path = dir.join("init.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::time::sleep(delay).await;
                let mut line = String::new();
                let _ = s.read_to_string(&mut line).await;
                log.lock().unwrap().push(line.trim().to_string());
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (Power::new(InitClient::new(path)), seen)
    }

    #[tokio::test]
    async fn a_reset_whose_client_goes_away_still_reaches_init_and_holds_the_power_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (power, seen) = fake_init(dir.path(), "ok\n", Duration::from_millis(200));
        // The client goes away while init has not answered yet: the handler is dropped.
        let dropped = tokio::time::timeout(
            Duration::from_millis(20),
            factory_reset(&power, ResetLevel::Rma, 0),
        )
        .await;
        assert!(dropped.is_err(), "the handler was cut short");
        tokio::time::sleep(Duration::from_millis(400)).await;
        // One request, which init carries out whole: the marker and the reboot.
        assert_eq!(*seen.lock().unwrap(), ["reset rma"]);
        assert_eq!(power.scheduled(), Some(PowerAction::Reboot));
        assert!(matches!(
            factory_reset(&power, ResetLevel::Config, 0).await,
            Err(PowerError::AlreadyScheduled(PowerAction::Reboot))
        ));
    }

    #[tokio::test]
    async fn a_refused_reset_frees_the_power_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (power, _) = fake_init(dir.path(), "err no data disk\n", Duration::ZERO);
        assert!(matches!(
            factory_reset(&power, ResetLevel::Config, 60).await,
            Err(PowerError::Init(InitError::Refused(_)))
        ));
        assert_eq!(power.scheduled(), None);
        assert!(matches!(
            factory_reset(&power, ResetLevel::Config, MAX_DELAY_SECONDS + 1).await,
            Err(PowerError::DelayTooLong)
        ));
    }

    #[tokio::test]
    async fn cancelling_says_what_was_cleared_or_that_nothing_was_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (power, seen) = fake_init(dir.path(), "ok\ncancelled rma\n", Duration::ZERO);
        power.claim(PowerAction::Reboot).unwrap();
        assert_eq!(cancel_reset(&power).await.unwrap(), ResetLevel::Rma);
        assert_eq!(power.scheduled(), None, "the reboot is off too");
        assert_eq!(*seen.lock().unwrap(), ["reset cancel"]);

        let dir = tempfile::tempdir().unwrap();
        let (power, _) = fake_init(dir.path(), "ok\nnone\n", Duration::ZERO);
        assert!(matches!(
            cancel_reset(&power).await,
            Err(PowerError::NoResetPending)
        ));
        let dir = tempfile::tempdir().unwrap();
        let (power, _) = fake_init(
            dir.path(),
            "err shutdown already under way\n",
            Duration::ZERO,
        );
        assert!(matches!(
            cancel_reset(&power).await,
            Err(PowerError::CannotCancel(_))
        ));
    }
}
