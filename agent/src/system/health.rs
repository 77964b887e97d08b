//! Whether the appliance is healthy, for `/check_health` (and, with the failover issue,
//! the vendor's `check_health` command and the peer's view). Pure: the caller gathers the
//! facts, [`assess`] decides.

use crate::model::DataMode;
use crate::settings::Settings;

/// Something that makes the appliance unhealthy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the settings file does not parse: the appliance runs on factory defaults")]
    SettingsNotInForce,
    #[error("the data partition is not mounted: nothing is kept across a reboot ({0})")]
    DataVolatile(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub problems: Vec<Problem>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Decides from the facts. Data in memory only counts against health when init said so
/// (an agent run outside the appliance has no record and is not unhealthy for it).
pub fn assess(data: DataMode, data_detail: &str, settings_unreadable: bool) -> Health {
    let mut problems = Vec::new();
    if settings_unreadable {
        problems.push(Problem::SettingsNotInForce);
    }
    if data == DataMode::Volatile {
        problems.push(Problem::DataVolatile(data_detail.to_string()));
    }
    Health { problems }
}

/// The appliance's health now.
pub fn health(settings: &Settings, settings_unreadable: bool) -> Health {
    let data = super::data_status(settings);
    assess(data.mode, &data.detail, settings_unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_unless_the_settings_are_not_in_force_or_data_is_in_memory() {
        assert!(assess(DataMode::Persistent, "clean", false).healthy());
        assert!(assess(DataMode::Unknown, "", false).healthy());
        assert_eq!(
            assess(DataMode::Persistent, "", true).problems,
            vec![Problem::SettingsNotInForce]
        );
        let h = assess(DataMode::Volatile, "no data disk", false);
        assert!(!h.healthy());
        assert!(h.problems[0].to_string().contains("no data disk"));
    }
}
