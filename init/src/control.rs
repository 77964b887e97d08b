//! Init's control socket ([`appliance_proto::paths::CONTROL_SOCKET`], protocol in
//! [`appliance_proto::control`]): a Unix stream socket, mode 0600, root only (checked again
//! with `SO_PEERCRED`), one request line per connection, one answer, then close.
//!
//! Connections are served inside the main loop, one at a time. A client gets
//! [`CLIENT_TIMEOUT`] to send its line, and the answer must be written within
//! [`CLIENT_TIMEOUT`] too, so a stuck client delays the loop by at most about two seconds
//! (only root can connect). The `log` answer is the ring buffer (at most 128 KiB).

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appliance_proto::control::{
    PowerAction, Reply, Request, RequestError, ResetLevel, CANCELLED, MAX_REQUEST, NOTHING_PENDING,
    RESET_HEAD_START,
};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{umask, Mode};

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections served per wake-up; the rest wait for the next turn of the loop.
const ACCEPT_BUDGET: usize = 16;

pub struct ControlServer {
    pub listener: UnixListener,
    pub path: PathBuf,
}

impl ControlServer {
    /// Binds the socket (replacing a stale one), mode 0600, non-blocking.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        // Created 0600 from the start: no window where others could connect.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accepts the pending connections (up to a budget).
    pub fn accept(&self) -> Vec<UnixStream> {
        let mut out = Vec::new();
        while out.len() < ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, _)) => out.push(stream),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("control socket: accept failed: {e}");
                    break;
                }
            }
        }
        out
    }
}

/// Who is on the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, self.uid) {
            (Some(pid), Some(uid)) => write!(f, "pid {pid} (uid {uid})"),
            _ => write!(f, "unknown peer"),
        }
    }
}

pub fn peer(stream: &UnixStream) -> Peer {
    match getsockopt(stream, PeerCredentials) {
        Ok(c) => Peer {
            uid: Some(c.uid()),
            pid: Some(c.pid()),
        },
        Err(_) => Peer {
            uid: None,
            pid: None,
        },
    }
}

/// Reads one request line (up to `\n`, end of stream or [`MAX_REQUEST`] bytes).
pub fn read_request(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the request".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(line),
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                if let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                    line.extend_from_slice(chunk.get(..end).unwrap_or_default());
                    return Ok(line);
                }
                line.extend_from_slice(chunk);
                if line.len() > MAX_REQUEST {
                    return Ok(line); // parse says "too long"
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for the request".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What the loop does after answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Send the ring buffer after the `ok` line.
    SendLog,
    Shutdown {
        action: PowerAction,
        reason: String,
    },
    /// Record a factory-reset request on the data disk and, if that worked, reboot into it
    /// after the delay ([`after_arming`]); the answer depends on the disk, so the loop
    /// writes it.
    ArmResetAndReboot {
        level: ResetLevel,
        delay: Duration,
    },
    /// Clear a reset request whose reboot has not begun ([`cancel_answer`]).
    CancelReset,
}

/// Where the loop is, as far as requests are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// A reset is armed and its reboot starts at a set time.
    ResetDue,
    ShuttingDown,
}

/// A reset armed on the data disk, and when its reboot begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueReset {
    pub level: ResetLevel,
    pub at: Duration,
}

impl DueReset {
    pub fn reason(&self) -> String {
        format!("factory reset ({})", self.level)
    }
}

const RESET_DUE: &str = "a factory reset is about to reboot the appliance";

/// The answer to a request, given who asks and where the loop is.
pub fn answer(
    request: Result<Request, RequestError>,
    uid: Option<u32>,
    phase: Phase,
) -> (Reply, Effect) {
    if uid != Some(0) {
        return (
            Reply::Err("permission denied: only root may use the control socket".into()),
            Effect::None,
        );
    }
    let refuse = |m: &str| (Reply::Err(m.into()), Effect::None);
    match (request, phase) {
        (Err(e), _) => (Reply::Err(e.to_string()), Effect::None),
        (Ok(Request::Ping), _) => (Reply::Ok, Effect::None),
        (Ok(Request::Log), _) => (Reply::Ok, Effect::SendLog),
        (Ok(Request::Reset { .. } | Request::Power { .. }), Phase::ShuttingDown) => {
            refuse("shutdown already under way")
        }
        (Ok(Request::Reset { .. } | Request::Power { .. }), Phase::ResetDue) => refuse(RESET_DUE),
        (Ok(Request::CancelReset), Phase::ShuttingDown) => {
            refuse("shutdown already under way: too late to cancel a reset")
        }
        (Ok(Request::CancelReset), _) => (Reply::Ok, Effect::CancelReset),
        (
            Ok(Request::Reset {
                level,
                delay_seconds,
            }),
            Phase::Running,
        ) => (
            Reply::Ok,
            Effect::ArmResetAndReboot {
                level,
                delay: Duration::from_secs(delay_seconds.into()),
            },
        ),
        (Ok(Request::Power { action, reason }), Phase::Running) => {
            let reason = if reason.is_empty() {
                "control socket request".to_string()
            } else {
                reason
            };
            (Reply::Ok, Effect::Shutdown { action, reason })
        }
    }
}

/// The answer to a `reset`, once the marker is written (or not), and the reboot that
/// follows after `delay` (never sooner than [`RESET_HEAD_START`]): both or neither.
pub fn after_arming(
    level: ResetLevel,
    delay: Duration,
    armed: Result<(), String>,
    now: Duration,
) -> (Reply, Option<DueReset>) {
    match armed {
        Ok(()) => (
            Reply::Ok,
            Some(DueReset {
                level,
                at: now.saturating_add(delay.max(RESET_HEAD_START)),
            }),
        ),
        Err(e) => (Reply::Err(e), None),
    }
}

/// The answer to a `reset cancel` and the text after `ok`.
pub fn cancel_answer(cleared: Result<Option<ResetLevel>, String>) -> (Reply, Vec<u8>) {
    match cleared {
        Ok(Some(level)) => (Reply::Ok, format!("{CANCELLED} {level}\n").into_bytes()),
        Ok(None) => (Reply::Ok, format!("{NOTHING_PENDING}\n").into_bytes()),
        Err(e) => (Reply::Err(e), Vec::new()),
    }
}

/// Writes the answer line and `payload`, giving up after [`CLIENT_TIMEOUT`].
pub fn send(stream: &mut UnixStream, reply: &Reply, payload: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let head = reply.encode();
    for part in [head.as_bytes(), payload] {
        let mut rest = part;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_write_timeout(Some(left))?;
            match stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn answers() {
        let power = |r: &str| Request::parse(r.as_bytes());
        assert_eq!(
            answer(power("ping"), Some(0), Phase::Running),
            (Reply::Ok, Effect::None)
        );
        assert_eq!(
            answer(power("log"), Some(0), Phase::ShuttingDown),
            (Reply::Ok, Effect::SendLog)
        );
        assert_eq!(
            answer(power("poweroff api: maintenance"), Some(0), Phase::Running),
            (
                Reply::Ok,
                Effect::Shutdown {
                    action: PowerAction::PowerOff,
                    reason: "api: maintenance".into()
                }
            )
        );
        assert_eq!(
            answer(power("reboot"), Some(0), Phase::Running).1,
            Effect::Shutdown {
                action: PowerAction::Reboot,
                reason: "control socket request".into()
            }
        );
        assert_eq!(
            answer(power("halt"), Some(0), Phase::ShuttingDown),
            (
                Reply::Err("shutdown already under way".into()),
                Effect::None
            )
        );
        let (reply, effect) = answer(power("format"), Some(0), Phase::Running);
        assert!(matches!(reply, Reply::Err(m) if m.starts_with("unknown request")));
        assert_eq!(effect, Effect::None);
    }

    #[test]
    fn a_reset_arms_and_reboots_in_one_step_and_can_be_cancelled_until_the_reboot() {
        let req = |r: &str| Request::parse(r.as_bytes());
        let (reply, effect) = answer(req("reset rma"), Some(0), Phase::Running);
        let zero = Duration::ZERO;
        assert_eq!(
            (reply, effect),
            (
                Reply::Ok,
                Effect::ArmResetAndReboot {
                    level: ResetLevel::Rma,
                    delay: zero
                }
            )
        );
        // Armed: the reboot is due, with no second request from the client.
        let now = Duration::from_secs(10);
        let (reply, due) = after_arming(ResetLevel::Rma, zero, Ok(()), now);
        assert_eq!(reply, Reply::Ok);
        let due = due.expect("the reboot is due");
        assert_eq!(due.at, now + RESET_HEAD_START);
        assert_eq!(due.reason(), "factory reset (rma)");
        // Not armed: no reboot either.
        let (reply, due) = after_arming(
            ResetLevel::Rma,
            zero,
            Err("cannot open /dev/vda".into()),
            now,
        );
        assert_eq!(
            (reply, due),
            (Reply::Err("cannot open /dev/vda".into()), None)
        );
        // A delayed reset: due after its delay.
        let (_, due) = after_arming(ResetLevel::Config, Duration::from_secs(30), Ok(()), now);
        assert_eq!(due.map(|d| d.at), Some(now + Duration::from_secs(30)));
        // Until the reboot begins, nothing else may start one, and a cancel is served.
        for r in ["reboot", "reset config"] {
            let (reply, effect) = answer(req(r), Some(0), Phase::ResetDue);
            assert!(
                matches!(reply, Reply::Err(m) if m.contains("about to reboot")),
                "{r}"
            );
            assert_eq!(effect, Effect::None);
        }
        for phase in [Phase::Running, Phase::ResetDue] {
            assert_eq!(
                answer(req("reset cancel"), Some(0), phase),
                (Reply::Ok, Effect::CancelReset)
            );
        }
        let (reply, effect) = answer(req("reset cancel"), Some(0), Phase::ShuttingDown);
        assert!(matches!(reply, Reply::Err(m) if m.contains("too late")));
        assert_eq!(effect, Effect::None);
        assert_eq!(
            cancel_answer(Ok(Some(ResetLevel::Config))),
            (Reply::Ok, b"cancelled config\n".to_vec())
        );
        assert_eq!(cancel_answer(Ok(None)), (Reply::Ok, b"none\n".to_vec()));
    }

    #[test]
    fn only_root_is_served() {
        for uid in [Some(1000), None] {
            let (reply, effect) = answer(Request::parse(b"poweroff"), uid, Phase::Running);
            assert!(matches!(reply, Reply::Err(m) if m.starts_with("permission denied")));
            assert_eq!(effect, Effect::None);
        }
    }

    #[test]
    fn socket_round_trip() {
        let t = TempDir::new("control");
        let path = t.path("init.sock");
        let server = ControlServer::bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(server.accept().is_empty());

        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"log\n").unwrap();
        let mut conns = server.accept();
        assert_eq!(conns.len(), 1);
        let conn = &mut conns[0];
        let p = peer(conn);
        assert_eq!(p.pid, Some(std::process::id() as i32));
        let req = read_request(conn).unwrap();
        assert_eq!(req, b"log");
        send(conn, &Reply::Ok, b"line one\nline two\n").unwrap();
        drop(conns);
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok\nline one\nline two\n");
    }

    #[test]
    fn a_silent_client_times_out() {
        let t = TempDir::new("control-slow");
        let path = t.path("init.sock");
        let server = ControlServer::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let mut conn = server.accept().pop().unwrap();
        let start = Instant::now();
        assert!(read_request(&mut conn).is_err());
        assert!(start.elapsed() < CLIENT_TIMEOUT + Duration::from_millis(500));
    }

    #[test]
    fn a_request_without_newline_ends_at_eof() {
        let t = TempDir::new("control-eof");
        let path = t.path("init.sock");
        let server = ControlServer::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"ping").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut conn = server.accept().pop().unwrap();
        assert_eq!(read_request(&mut conn).unwrap(), b"ping");
    }
}
