//! Init's control socket protocol.
//!
//! A client connects to [`crate::paths::CONTROL_SOCKET`], writes one request line and reads
//! the answer until end of stream. The first answer line is `ok` or `err <message>`; a `log`
//! request is followed by the console ring buffer, verbatim. Only root may connect (init
//! checks the peer's credentials).
//!
//! ```text
//! poweroff [reason]   ordered shutdown, then power off
//! reboot [reason]     ordered shutdown, then restart
//! halt [reason]       ordered shutdown, then halt (CPU stopped, power stays on)
//! log                 the last lines of init's and the agent's console output
//! ping                ok, if init is serving
//! reset config|rma [SECONDS]
//!                     record a factory-reset request on the data disk and reboot into it,
//!                     as one step: the reboot begins after SECONDS (at most
//!                     [`MAX_RESET_DELAY`]), and never sooner than [`RESET_HEAD_START`]
//!                     after the `ok` (so the client can pass the answer on); the reset
//!                     itself runs early in the next boot
//! reset cancel        clear a reset request whose reboot has not begun: `ok` then
//!                     `cancelled config|rma`, or `ok` then `none` when nothing is pending
//! ```
//!
//! A power reason is at most [`MAX_REASON`] bytes of UTF-8.

use std::fmt;

/// Longest request line init accepts, newline included.
pub const MAX_REQUEST: usize = 512;

/// Longest reason a power request carries, in bytes of UTF-8, as init records it.
pub const MAX_REASON: usize = 256;

/// What the agent puts before a reason an API client gave.
pub const API_REASON_PREFIX: &str = "api: ";

/// Longest reason an API client may give, in bytes of UTF-8 (the agent adds
/// [`API_REASON_PREFIX`], and the whole must fit in [`MAX_REASON`]).
pub const MAX_API_REASON: usize = 200;

const _: () = assert!(MAX_API_REASON + API_REASON_PREFIX.len() <= MAX_REASON);
// The longest verb, a space, the reason and the newline fit in a request line.
const _: () = assert!("poweroff ".len() + MAX_REASON < MAX_REQUEST);

/// Time between init's `ok` to a `reset` and the start of the reboot; a `reset cancel`
/// in between still clears the request.
pub const RESET_HEAD_START: std::time::Duration = std::time::Duration::from_millis(300);

/// Longest delay a `reset` may ask for before its reboot, in seconds.
pub const MAX_RESET_DELAY: u32 = 3600;

/// What init answers after `ok` to `reset cancel` when no request was pending.
pub const NOTHING_PENDING: &str = "none";
/// What init answers after `ok` to `reset cancel` before the level it cleared.
pub const CANCELLED: &str = "cancelled";

/// How the machine ends after the ordered shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
    Halt,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "poweroff",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        }
    }

    pub fn parse(word: &str) -> Option<PowerAction> {
        match word {
            "poweroff" => Some(PowerAction::PowerOff),
            "reboot" => Some(PowerAction::Reboot),
            "halt" => Some(PowerAction::Halt),
            _ => None,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How thoroughly a factory reset wipes the data disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetLevel {
    /// A new, empty file system: settings, keys, certificates, site data and logs are gone.
    Config,
    /// Return for repair (RMA): every byte of the data disk overwritten with zeros and read
    /// back, no file system left, then power off.
    Rma,
}

impl ResetLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetLevel::Config => "config",
            ResetLevel::Rma => "rma",
        }
    }

    pub fn parse(word: &str) -> Option<ResetLevel> {
        match word {
            "config" => Some(ResetLevel::Config),
            "rma" => Some(ResetLevel::Rma),
            _ => None,
        }
    }
}

impl fmt::Display for ResetLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request to init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Power {
        action: PowerAction,
        reason: String,
    },
    /// Arm a factory reset and reboot into it after `delay_seconds`, in one step.
    Reset {
        level: ResetLevel,
        delay_seconds: u32,
    },
    /// Clear an armed reset whose reboot has not begun.
    CancelReset,
    Log,
    Ping,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    Empty,
    TooLong,
    NotText,
    Unknown(String),
    UnexpectedArgument(&'static str),
    BadResetLevel,
    ReasonTooLong,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Empty => write!(f, "empty request"),
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::NotText => write!(f, "request is not utf-8 text"),
            RequestError::Unknown(w) => {
                write!(
                    f,
                    "unknown request {w:?}: use poweroff, reboot, halt, reset, log or ping"
                )
            }
            RequestError::UnexpectedArgument(w) => write!(f, "{w} takes no argument"),
            RequestError::BadResetLevel => write!(
                f,
                "reset needs a level (config or rma, then optionally a delay of at most \
                 {MAX_RESET_DELAY} seconds) or cancel"
            ),
            RequestError::ReasonTooLong => {
                write!(f, "the reason is longer than {MAX_REASON} bytes")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Reason text is one line of printable characters; anything else is replaced.
fn clean_reason(reason: &str) -> String {
    reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Request {
    pub fn power(action: PowerAction, reason: &str) -> Request {
        Request::Power {
            action,
            reason: clean_reason(reason),
        }
    }

    /// Parses one request line (with or without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        if line.len() > MAX_REQUEST {
            return Err(RequestError::TooLong);
        }
        let text = std::str::from_utf8(line).map_err(|_| RequestError::NotText)?;
        let text = text.trim();
        let (word, rest) = match text.split_once(' ') {
            Some((w, r)) => (w, r.trim()),
            None => (text, ""),
        };
        if word.is_empty() {
            return Err(RequestError::Empty);
        }
        if let Some(action) = PowerAction::parse(word) {
            if rest.len() > MAX_REASON {
                return Err(RequestError::ReasonTooLong);
            }
            return Ok(Request::power(action, rest));
        }
        if word == "reset" && rest == "cancel" {
            return Ok(Request::CancelReset);
        }
        if word == "reset" {
            let mut words = rest.split_whitespace();
            let level = words.next().and_then(ResetLevel::parse);
            let delay = match words.next() {
                None => Some(0),
                Some(d) => d.parse::<u32>().ok().filter(|d| *d <= MAX_RESET_DELAY),
            };
            return match (level, delay, words.next()) {
                (Some(level), Some(delay_seconds), None) => Ok(Request::Reset {
                    level,
                    delay_seconds,
                }),
                _ => Err(RequestError::BadResetLevel),
            };
        }
        let simple = match word {
            "log" => Request::Log,
            "ping" => Request::Ping,
            other => return Err(RequestError::Unknown(other.chars().take(32).collect())),
        };
        if !rest.is_empty() {
            return Err(RequestError::UnexpectedArgument(
                if simple == Request::Log {
                    "log"
                } else {
                    "ping"
                },
            ));
        }
        Ok(simple)
    }

    /// The request line, newline included.
    pub fn encode(&self) -> String {
        match self {
            Request::Power { action, reason } if reason.is_empty() => format!("{action}\n"),
            Request::Power { action, reason } => format!("{action} {reason}\n"),
            Request::Reset {
                level,
                delay_seconds: 0,
            } => format!("reset {level}\n"),
            Request::Reset {
                level,
                delay_seconds,
            } => format!("reset {level} {delay_seconds}\n"),
            Request::CancelReset => "reset cancel\n".to_string(),
            Request::Log => "log\n".to_string(),
            Request::Ping => "ping\n".to_string(),
        }
    }
}

/// The first line of init's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Err(String),
}

impl Reply {
    pub fn encode(&self) -> String {
        match self {
            Reply::Ok => "ok\n".to_string(),
            Reply::Err(m) => format!("err {}\n", clean_reason(m)),
        }
    }

    pub fn parse(line: &str) -> Option<Reply> {
        let line = line.trim_end_matches('\n');
        if line == "ok" {
            Some(Reply::Ok)
        } else {
            line.strip_prefix("err ").map(|m| Reply::Err(m.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_requests_round_trip_with_reason() {
        for action in [
            PowerAction::PowerOff,
            PowerAction::Reboot,
            PowerAction::Halt,
        ] {
            let r = Request::power(action, "api: maintenance window");
            assert_eq!(Request::parse(r.encode().as_bytes()), Ok(r));
        }
        assert_eq!(
            Request::parse(b"reboot\n"),
            Ok(Request::Power {
                action: PowerAction::Reboot,
                reason: String::new()
            })
        );
    }

    #[test]
    fn reason_cannot_inject_a_second_line() {
        let r = Request::power(PowerAction::Reboot, "a\nb\r");
        assert_eq!(r.encode(), "reboot a b\n");
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert_eq!(Request::parse(b"\n"), Err(RequestError::Empty));
        assert_eq!(
            Request::parse(b"format /data"),
            Err(RequestError::Unknown("format".into()))
        );
        assert_eq!(
            Request::parse(b"log now"),
            Err(RequestError::UnexpectedArgument("log"))
        );
        assert_eq!(Request::parse(&[0xff, 0xfe]), Err(RequestError::NotText));
        assert_eq!(
            Request::parse(&[b'a'; MAX_REQUEST + 1]),
            Err(RequestError::TooLong)
        );
        assert_eq!(Request::parse(b"ping"), Ok(Request::Ping));
        assert_eq!(Request::parse(b"log\n"), Ok(Request::Log));
    }

    #[test]
    fn reset_requests_name_a_level() {
        for level in [ResetLevel::Config, ResetLevel::Rma] {
            for delay_seconds in [0, 30, MAX_RESET_DELAY] {
                let r = Request::Reset {
                    level,
                    delay_seconds,
                };
                assert_eq!(Request::parse(r.encode().as_bytes()), Ok(r));
            }
        }
        assert_eq!(Request::parse(b"reset"), Err(RequestError::BadResetLevel));
        for bad in [
            "reset everything",
            "reset rma soon",
            "reset rma 3601",
            "reset rma 1 2",
        ] {
            assert_eq!(
                Request::parse(bad.as_bytes()),
                Err(RequestError::BadResetLevel),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_reset_can_be_cancelled() {
        let r = Request::CancelReset;
        assert_eq!(r.encode(), "reset cancel\n");
        assert_eq!(Request::parse(r.encode().as_bytes()), Ok(r));
    }

    #[test]
    fn a_reason_is_bounded_in_bytes() {
        let fits = "é".repeat(MAX_REASON / 2);
        assert!(Request::parse(format!("reboot {fits}").as_bytes()).is_ok());
        let over = format!("reboot {fits}é");
        assert_eq!(
            Request::parse(over.as_bytes()),
            Err(RequestError::ReasonTooLong)
        );
    }

    #[test]
    fn replies_round_trip() {
        assert_eq!(Reply::parse(&Reply::Ok.encode()), Some(Reply::Ok));
        let e = Reply::Err("shutdown already under way".into());
        assert_eq!(Reply::parse(&e.encode()), Some(e));
        assert_eq!(Reply::parse("maybe"), None);
    }
}
