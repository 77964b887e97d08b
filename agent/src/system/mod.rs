//! The system: status, and power actions carried out by init.

pub mod basics;
mod health;
pub mod init_client;

pub use health::{health, Health, Problem};

use crate::model;
use crate::settings::Settings;
use appliance_proto::control::{PowerAction, Request};
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
    #[error("reason must be at most 200 characters")]
    ReasonTooLong,
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
        if given.chars().count() > 200 {
            return Err(PowerError::ReasonTooLong);
        }
        let reason = if given.is_empty() {
            "api request".to_string()
        } else {
            format!("api: {given}")
        };
        Ok(PowerCommand {
            action,
            reason,
            delay: Duration::from_secs(delay.into()),
        })
    }
}

/// Records a factory reset with init (a marker on the data disk), then reboots into it.
pub async fn factory_reset(
    power: &Power,
    level: appliance_proto::control::ResetLevel,
) -> Result<(), PowerError> {
    if let Some(existing) = *power.scheduled.lock().unwrap_or_else(|p| p.into_inner()) {
        return Err(PowerError::AlreadyScheduled(existing));
    }
    power.init.request(&Request::Reset { level }).await?;
    tracing::warn!(%level, "factory reset recorded; rebooting to carry it out");
    power
        .schedule(PowerCommand {
            action: PowerAction::Reboot,
            reason: format!("factory reset ({level})"),
            delay: Duration::ZERO,
        })
        .await
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

    /// Checks init is there, then schedules the command; returns at once.
    pub async fn schedule(&self, cmd: PowerCommand) -> Result<(), PowerError> {
        self.init.request(&Request::Ping).await?;
        {
            let mut slot = self.scheduled.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = *slot {
                return Err(PowerError::AlreadyScheduled(existing));
            }
            *slot = Some(cmd.action);
        }
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
                *this.scheduled.lock().unwrap_or_else(|p| p.into_inner()) = None;
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

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The build identity, set by the image build (`APPLIANCE_BUILD`), else `dev`.
pub fn build_id() -> &'static str {
    option_env!("APPLIANCE_BUILD").unwrap_or("dev")
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
        hostname: hostname(),
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
}
