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
    #[error("the admin account's file cannot be used: every login is refused until it is fixed or the configuration is reset")]
    AdminStoreUnusable,
}

/// What health is decided from.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub data: DataMode,
    pub data_detail: &'a str,
    /// `appliance.toml` is there but does not parse.
    pub settings_unreadable: bool,
    /// `admin.toml` is there but cannot be used (logins are refused).
    pub admin_unusable: bool,
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
pub fn assess(f: Facts) -> Health {
    let mut problems = Vec::new();
    if f.settings_unreadable {
        problems.push(Problem::SettingsNotInForce);
    }
    if f.admin_unusable {
        problems.push(Problem::AdminStoreUnusable);
    }
    if f.data == DataMode::Volatile {
        problems.push(Problem::DataVolatile(f.data_detail.to_string()));
    }
    Health { problems }
}

/// The appliance's health now.
pub fn health(settings: &Settings, settings_unreadable: bool, admin_unusable: bool) -> Health {
    let data = super::data_status(settings);
    assess(Facts {
        data: data.mode,
        data_detail: &data.detail,
        settings_unreadable,
        admin_unusable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_unless_a_settings_file_is_not_in_force_or_data_is_in_memory() {
        let facts = |data, detail, settings_unreadable, admin_unusable| Facts {
            data,
            data_detail: detail,
            settings_unreadable,
            admin_unusable,
        };
        assert!(assess(facts(DataMode::Persistent, "clean", false, false)).healthy());
        assert!(assess(facts(DataMode::Unknown, "", false, false)).healthy());
        assert_eq!(
            assess(facts(DataMode::Persistent, "", true, false)).problems,
            vec![Problem::SettingsNotInForce]
        );
        assert_eq!(
            assess(facts(DataMode::Persistent, "", false, true)).problems,
            vec![Problem::AdminStoreUnusable]
        );
        let h = assess(facts(DataMode::Volatile, "no data disk", false, false));
        assert!(!h.healthy());
        assert!(h.problems[0].to_string().contains("no data disk"));
    }
}
