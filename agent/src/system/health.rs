//! Whether the appliance is healthy, for `/check_health` and the vendor's `check_health`
//! command (one assessment for both). Pure: the caller gathers the facts, [`assess`]
//! decides. Failover's part is the problem its service reports (a conflict, a role not
//! carried out): a healthy backup is healthy.

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
    /// Failover is not in the state its role asks for (the failover service's words).
    #[error("{0}")]
    Failover(String),
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
    /// What the failover service reports wrong, if anything.
    pub failover_problem: Option<&'a str>,
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
    if let Some(p) = f.failover_problem {
        problems.push(Problem::Failover(p.to_string()));
    }
    Health { problems }
}

/// The appliance's health now.
pub fn health(
    settings: &Settings,
    settings_unreadable: bool,
    admin_unusable: bool,
    failover_problem: Option<&str>,
) -> Health {
    let data = super::data_status(settings);
    assess(Facts {
        data: data.mode,
        data_detail: &data.detail,
        settings_unreadable,
        admin_unusable,
        failover_problem,
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
            failover_problem: None,
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

    #[test]
    fn a_failover_problem_makes_the_appliance_unhealthy_with_its_words() {
        let facts = |failover_problem| Facts {
            data: DataMode::Persistent,
            data_detail: "clean",
            settings_unreadable: false,
            admin_unusable: false,
            failover_problem,
        };
        assert!(assess(facts(None)).healthy());
        let h = assess(facts(Some("the primary does not hold its shared IPs yet")));
        assert_eq!(
            h.problems,
            vec![Problem::Failover(
                "the primary does not hold its shared IPs yet".into()
            )]
        );
        assert_eq!(
            h.problems[0].to_string(),
            "the primary does not hold its shared IPs yet"
        );
    }
}
