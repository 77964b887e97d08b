//! The `appliance.*` keys of the kernel command line.
//!
//! | key | value | default |
//! | --- | --- | --- |
//! | `appliance.data` | data device: a path under `/dev` or `LABEL=<label>` | the filesystem labelled `APPLIANCE_DATA`, else the blank GPT data partition (never a whole disk) |
//! | `appliance.debug` | `0` or `1`: enables the debug API hooks used by the tests | `0` |
//! | `appliance.log` | `error`, `warn`, `info`, `debug` or `trace` | `info` |
//! | `appliance.nic` | interface for the factory address | the first Ethernet NIC |
//! | `appliance.rma_hold` | seconds the appliance stays up after an RMA erase, showing the report, before it powers off (0 to 3600) | `60` |
//!
//! Other kernel parameters are ignored. An unknown `appliance.*` key or a bad value is
//! reported as a warning and leaves the default in place: a typo on the command line must
//! never stop the appliance from booting.

/// Where the data partition is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Find the filesystem labelled `APPLIANCE_DATA`, else format the first blank disk.
    Auto,
    /// This device (`/dev/vdb`); formatted if blank.
    Device(String),
    /// The filesystem with this label.
    Label(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    pub data: DataSource,
    pub debug: bool,
    pub log: LogLevel,
    pub nic: Option<String>,
    /// Seconds to stay up after an RMA erase before powering off.
    pub rma_hold_seconds: u32,
    /// One line per ignored key or value, for the console.
    pub warnings: Vec<String>,
}

impl Default for BootParams {
    fn default() -> Self {
        BootParams {
            data: DataSource::Auto,
            debug: false,
            log: LogLevel::Info,
            nic: None,
            rma_hold_seconds: 60,
            warnings: Vec::new(),
        }
    }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_device(path: &str) -> bool {
    path.strip_prefix("/dev/").is_some_and(|rest| {
        !rest.is_empty()
            && !rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            && rest.bytes().all(|b| b.is_ascii_graphic())
    })
}

impl BootParams {
    /// Parses the text of `/proc/cmdline`.
    pub fn parse(cmdline: &str) -> BootParams {
        let mut p = BootParams::default();
        for word in cmdline.split_whitespace() {
            let Some(key_value) = word.strip_prefix("appliance.") else {
                continue;
            };
            let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
            let ok = match key {
                "data" => {
                    if let Some(label) = value.strip_prefix("LABEL=") {
                        let ok = !label.is_empty() && label.len() <= 16;
                        if ok {
                            p.data = DataSource::Label(label.to_string());
                        }
                        ok
                    } else if valid_device(value) {
                        p.data = DataSource::Device(value.to_string());
                        true
                    } else {
                        false
                    }
                }
                "debug" => match value {
                    "1" | "" => {
                        p.debug = true;
                        true
                    }
                    "0" => {
                        p.debug = false;
                        true
                    }
                    _ => false,
                },
                "log" => {
                    let level = match value {
                        "error" => Some(LogLevel::Error),
                        "warn" => Some(LogLevel::Warn),
                        "info" => Some(LogLevel::Info),
                        "debug" => Some(LogLevel::Debug),
                        "trace" => Some(LogLevel::Trace),
                        _ => None,
                    };
                    if let Some(level) = level {
                        p.log = level;
                    }
                    level.is_some()
                }
                "rma_hold" => match value.parse::<u32>() {
                    Ok(n) if n <= 3600 => {
                        p.rma_hold_seconds = n;
                        true
                    }
                    _ => false,
                },
                "nic" => {
                    let ok = valid_ifname(value);
                    if ok {
                        p.nic = Some(value.to_string());
                    }
                    ok
                }
                _ => {
                    p.warnings
                        .push(format!("ignoring unknown kernel parameter {word:?}"));
                    continue;
                }
            };
            if !ok {
                p.warnings.push(format!(
                    "ignoring kernel parameter {word:?}: bad value (see README for appliance.* keys)"
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_appliance_keys() {
        let p = BootParams::parse("console=ttyS0 quiet root=/dev/ram0");
        assert_eq!(p, BootParams::default());
    }

    #[test]
    fn every_key_parses() {
        let p = BootParams::parse(
            "console=ttyS0 appliance.data=/dev/vdb appliance.debug=1 appliance.log=debug appliance.nic=eth1 appliance.rma_hold=5",
        );
        assert_eq!(p.data, DataSource::Device("/dev/vdb".into()));
        assert!(p.debug);
        assert_eq!(p.log, LogLevel::Debug);
        assert_eq!(p.nic.as_deref(), Some("eth1"));
        assert_eq!(p.rma_hold_seconds, 5);
        assert!(p.warnings.is_empty());
        let p = BootParams::parse("appliance.data=LABEL=MYDATA");
        assert_eq!(p.data, DataSource::Label("MYDATA".into()));
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let p = BootParams::parse(
            "appliance.data=/dev/../etc/passwd appliance.debug=yes appliance.log=loud \
             appliance.nic=this-name-is-far-too-long appliance.colour=blue appliance.data=sda appliance.rma_hold=9999",
        );
        assert_eq!(p.data, DataSource::Auto);
        assert!(!p.debug);
        assert_eq!(p.log, LogLevel::Info);
        assert_eq!(p.nic, None);
        assert_eq!(p.rma_hold_seconds, 60);
        assert_eq!(p.warnings.len(), 7, "{:?}", p.warnings);
        assert!(p.warnings[4].contains("unknown"));
    }
}
