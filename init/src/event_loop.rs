//! The main loop, in the manner of tini: every signal blocked and read from a signalfd,
//! one `poll` over the signalfd, the control socket, the agent's output pipe and the input
//! devices, with the timeout set by the next thing due (an agent restart, a shutdown
//! deadline, an input rescan). Each turn: wait, handle what is ready, reap, advance the
//! shutdown, start the agent if due.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use appliance_proto::control::{PowerAction, Reply, Request, ResetLevel, RESET_HEAD_START};
use appliance_proto::paths;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::agent::AgentOutput;
use crate::control::{self, ControlServer, DueReset, Effect, Phase};
use crate::input::{Inputs, Readout};
use crate::kernel::Kernel;
use crate::shutdown::{self, Shutdown, Step};
use crate::signals::{self, SignalAction};
use crate::supervisor::{ExitOutcome, Supervisor};
use crate::{reap, timeline};

/// Longest sleep in `poll`, even with nothing due.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest sleep when the signalfd could not be made (then children are reaped by polling).
const DEGRADED_WAIT: Duration = Duration::from_secs(1);

struct Loop {
    data_persistent: bool,
    /// The data device, for factory-reset requests (also when it failed to mount).
    reset_device: Option<String>,
    /// A factory reset armed on the data device, and when its reboot begins.
    reset_due: Option<DueReset>,
    /// After an RMA erase: when to power off by ourselves.
    power_off_at: Option<Duration>,
    signals: Option<SignalFd>,
    control: Option<ControlServer>,
    agent_out: Option<AgentOutput>,
    supervisor: Supervisor,
    inputs: Inputs,
    shutdown: Option<Shutdown>,
    children_left: bool,
}

/// Runs the loop for ever.
/// What the loop needs to know about the boot so far.
pub struct BootState {
    /// `/data` is on a disk (not a tmpfs).
    pub data_persistent: bool,
    /// The device chosen as the data disk, mounted or not, where resets are recorded.
    pub reset_device: Option<String>,
    /// Power off after this long (an RMA erase is done and its report is on show).
    pub power_off_after: Option<Duration>,
}

pub fn run(k: &mut impl Kernel, boot: BootState) -> ! {
    let signals = signals::open_signalfd()
        .map_err(|e| {
            error!("cannot create a signalfd: {e}; reaping every second, signals are not handled")
        })
        .ok();
    let control = ControlServer::bind(Path::new(paths::CONTROL_SOCKET))
        .map_err(|e| error!("cannot serve {}: {e}", paths::CONTROL_SOCKET))
        .ok();
    if control.is_some() {
        info!("serving {}", paths::CONTROL_SOCKET);
    }
    let agent_out = AgentOutput::new()
        .map_err(|e| error!("cannot create the agent's output pipe: {e}"))
        .ok();
    let mut l = Loop {
        data_persistent: boot.data_persistent,
        reset_device: boot.reset_device,
        reset_due: None,
        power_off_at: boot.power_off_after.map(|d| k.now() + d),
        signals,
        control,
        agent_out,
        supervisor: Supervisor::new(k.now()),
        inputs: Inputs::default(),
        shutdown: None,
        children_left: true,
    };
    loop {
        l.turn(k);
    }
}

impl Loop {
    /// One turn: wait for something, handle it, reap, advance the shutdown, start the agent
    /// if due. (The first turn does not wait: the agent is due at once, and a signal that
    /// arrived during boot is handled before the agent is started.)
    fn turn(&mut self, k: &mut impl Kernel) {
        let now = k.now();
        self.inputs.scan_if_due(now);
        let ready = self.wait(self.timeout(now));

        let mut reap = self.signals.is_none() || self.shutdown.is_some();
        if ready.signals {
            reap |= self.handle_signals(k);
        }
        if ready.agent {
            if let Some(out) = &mut self.agent_out {
                out.drain(false);
            }
        }
        if ready.control {
            self.handle_control(k);
        }
        for i in ready.inputs.into_iter().rev() {
            let readout = match self.inputs.devices.get_mut(i) {
                Some(d) => d.read(),
                None => continue,
            };
            match readout {
                Readout::PowerPressed => {
                    self.begin_shutdown(k, PowerAction::PowerOff, "power button")
                }
                Readout::Nothing => {}
                Readout::Gone(e) => {
                    warn!("input device error: {e}");
                    self.inputs.remove(i);
                }
            }
        }
        if reap {
            self.reap(k.now());
        }
        if let Some(due) = self.reset_due.filter(|d| k.now() >= d.at) {
            self.reset_due = None;
            if self.shutdown.is_none() {
                self.begin_shutdown(k, PowerAction::Reboot, &due.reason());
            }
        }
        if self.shutdown.is_none() && self.power_off_at.is_some_and(|at| k.now() >= at) {
            self.power_off_at = None;
            self.begin_shutdown(
                k,
                PowerAction::PowerOff,
                "secure erase complete: powering off for return",
            );
        }
        let steps = match &mut self.shutdown {
            Some(sd) => sd.progress(self.children_left, k.now()),
            None => Vec::new(),
        };
        self.execute(k, steps);

        let now = k.now();
        if self.shutdown.is_none() && self.supervisor.should_start(now) {
            self.start_agent(now);
        }
    }

    fn timeout(&self, now: Duration) -> Duration {
        let due = [
            self.shutdown
                .is_none()
                .then(|| self.supervisor.deadline())
                .flatten(),
            self.shutdown.as_ref().and_then(Shutdown::deadline),
            self.inputs.deadline(),
            self.power_off_at.filter(|_| self.shutdown.is_none()),
            self.reset_due.map(|d| d.at),
        ];
        let cap = if self.signals.is_some() {
            MAX_WAIT
        } else {
            DEGRADED_WAIT
        };
        due.into_iter()
            .flatten()
            .map(|at| at.saturating_sub(now))
            .fold(cap, Duration::min)
    }

    fn wait(&self, timeout: Duration) -> Ready {
        let mut fds = Vec::new();
        let sig = self.signals.as_ref().map(|s| push(&mut fds, s.as_fd()));
        let ctl = self
            .control
            .as_ref()
            .map(|c| push(&mut fds, c.listener.as_fd()));
        let agent = self.agent_out.as_ref().map(|a| push(&mut fds, a.as_fd()));
        let first_input = fds.len();
        for d in &self.inputs.devices {
            fds.push(PollFd::new(d.as_fd(), PollFlags::POLLIN));
        }
        // Rounded up, so a deadline is never missed by a millisecond and the loop spins.
        let ms = timeout.as_micros().div_ceil(1000).min(u128::from(u16::MAX));
        let ms = u16::try_from(ms).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                error!("poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let wake =
            PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        let is_ready = |i: Option<usize>| {
            i.and_then(|i| fds.get(i))
                .and_then(PollFd::revents)
                .is_some_and(|r| r.intersects(wake))
        };
        Ready {
            signals: is_ready(sig),
            control: is_ready(ctl),
            agent: is_ready(agent),
            inputs: (0..self.inputs.devices.len())
                .filter(|j| is_ready(Some(first_input + j)))
                .collect(),
        }
    }

    fn start_agent(&mut self, now: Duration) {
        if self.agent_out.is_none() {
            self.agent_out = AgentOutput::new()
                .map_err(|e| error!("cannot create the agent's output pipe: {e}"))
                .ok();
        }
        let spawned = match &self.agent_out {
            Some(out) => out.spawn(paths::AGENT_BIN),
            None => Err(std::io::Error::other("no output pipe")),
        };
        match spawned {
            Ok(pid) => {
                info!("started {} (pid {pid})", paths::AGENT_BIN);
                if self.supervisor.started(pid, now) {
                    timeline::milestone("agent-spawned");
                }
            }
            Err(e) => {
                let delay = self.supervisor.start_failed(now);
                error!(
                    "cannot start {}: {e}; trying again in {:.1} s",
                    paths::AGENT_BIN,
                    delay.as_secs_f64()
                );
            }
        }
    }

    /// Reads every pending signal; returns whether children need reaping.
    fn handle_signals(&mut self, k: &mut impl Kernel) -> bool {
        let mut reap = false;
        loop {
            let info = match self.signals.as_ref().map(SignalFd::read_signal) {
                Some(Ok(Some(info))) => info,
                Some(Ok(None)) | None => break,
                Some(Err(Errno::EINTR)) => continue,
                Some(Err(e)) => {
                    error!("cannot read the signalfd: {e}");
                    break;
                }
            };
            let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
            let Ok(signal) = Signal::try_from(signo) else {
                debug!("ignoring signal {signo}");
                continue;
            };
            match signals::action_for(signal) {
                SignalAction::Reap => reap = true,
                SignalAction::Power { action, reason } => {
                    info!("received {} from pid {}", signal.as_str(), info.ssi_pid);
                    self.begin_shutdown(k, action, reason);
                }
                SignalAction::Ignore => {
                    info!("ignoring {} from pid {}", signal.as_str(), info.ssi_pid)
                }
            }
        }
        reap
    }

    fn handle_control(&mut self, k: &mut impl Kernel) {
        let streams = match &self.control {
            Some(server) => server.accept(),
            None => return,
        };
        for mut stream in streams {
            let peer = control::peer(&stream);
            // Read even from a client that will be refused, so that closing does not
            // reset the connection before it reads the answer.
            let request = match control::read_request(&mut stream) {
                Ok(line) => Request::parse(&line),
                Err(e) => {
                    warn!("control socket: {peer}: {e}");
                    continue;
                }
            };
            let phase = match (&self.shutdown, &self.reset_due) {
                (Some(_), _) => Phase::ShuttingDown,
                (None, Some(_)) => Phase::ResetDue,
                (None, None) => Phase::Running,
            };
            let (mut reply, effect) = control::answer(request, peer.uid, phase);
            let mut payload = Vec::new();
            match &effect {
                Effect::ArmResetAndReboot { level, delay } => {
                    let armed = self.arm_reset(*level, *delay);
                    let (r, due) = control::after_arming(*level, *delay, armed, k.now());
                    reply = r;
                    self.reset_due = due;
                }
                Effect::CancelReset => {
                    (reply, payload) = control::cancel_answer(self.cancel_reset());
                }
                Effect::SendLog => payload = crate::console::ring_snapshot(),
                Effect::None | Effect::Shutdown { .. } => {}
            }
            match &reply {
                Reply::Err(m) => info!("control socket: {peer}: refused: {m}"),
                Reply::Ok => debug!("control socket: {peer}: ok"),
            }
            if let Err(e) = control::send(&mut stream, &reply, &payload) {
                warn!("control socket: cannot answer {peer}: {e}");
            }
            drop(stream);
            if let Effect::Shutdown { action, reason } = effect {
                info!("control socket: {action} requested by {peer}");
                self.begin_shutdown(k, action, &reason);
            }
        }
    }

    /// Records a factory-reset request on the data disk (the reset runs at the next boot).
    fn arm_reset(&self, level: ResetLevel, delay: Duration) -> Result<(), String> {
        let Some(dev) = &self.reset_device else {
            return Err(
                "there is no data disk to reset (/data is a tmpfs and no disk carries the data \
                 label; a reboot clears it)"
                    .into(),
            );
        };
        let mut disk = crate::reset::BlockDisk::open(dev)
            .map_err(|e| format!("cannot open {dev} for writing: {e}"))?;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        crate::reset::arm(&mut disk, level, unix).map_err(|e| e.to_string())?;
        warn!(
            "factory reset ({level}) recorded on {dev}: rebooting in {} ms to carry it out",
            delay.max(RESET_HEAD_START).as_millis()
        );
        Ok(())
    }

    /// Clears a factory-reset request whose reboot has not begun.
    fn cancel_reset(&mut self) -> Result<Option<ResetLevel>, String> {
        let due = self.reset_due.take();
        let Some(dev) = &self.reset_device else {
            return Ok(None);
        };
        let mut disk = crate::reset::BlockDisk::open(dev)
            .map_err(|e| format!("cannot open {dev} for writing: {e}"))?;
        let cleared = crate::reset::cancel(&mut disk)
            .map_err(|e| format!("cannot clear the reset marker on {dev}: {e}"));
        match &cleared {
            Ok(Some(level)) => warn!("factory reset ({level}) on {dev} cancelled"),
            Ok(None) if due.is_some() => warn!("the due reset had no marker left on {dev}"),
            Ok(None) => {}
            // The marker may still be there: so is the reboot.
            Err(_) => self.reset_due = due,
        }
        cleared
    }

    fn reap(&mut self, now: Duration) {
        // The agent's last words before its exit status.
        if let Some(out) = &mut self.agent_out {
            out.drain(false);
        }
        let reaped = reap::reap_all();
        self.children_left = reaped.children_left;
        for e in reaped.exited {
            match self.supervisor.exited(e.pid, now) {
                Some(ExitOutcome {
                    ran,
                    restart_in: Some(delay),
                }) => warn!(
                    "agent (pid {}) ended with {} after {:.1} s; restarting in {:.1} s",
                    e.pid,
                    e.status,
                    ran.as_secs_f64(),
                    delay.as_secs_f64()
                ),
                Some(ExitOutcome {
                    restart_in: None, ..
                }) => info!("agent (pid {}) ended with {}", e.pid, e.status),
                None => debug!("reaped pid {} ({})", e.pid, e.status),
            }
        }
    }

    fn begin_shutdown(&mut self, k: &mut impl Kernel, action: PowerAction, reason: &str) {
        if let Some(sd) = &self.shutdown {
            info!(
                "{action} ({reason}) ignored: {} already under way",
                sd.action
            );
            return;
        }
        warn!("shutting down to {action}: {reason}");
        let (sd, steps) = Shutdown::begin(action, reason, k.now(), k.unix_time());
        self.shutdown = Some(sd);
        self.execute(k, steps);
    }

    fn execute(&mut self, k: &mut impl Kernel, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::StopServices => match self.supervisor.stop() {
                    Some(pid) => info!("no more restarts; stopping the agent (pid {pid})"),
                    None => info!("no more restarts"),
                },
                Step::SignalAll(signal) => match k.kill_all(signal) {
                    Ok(()) | Err(Errno::ESRCH) => {
                        info!("sent {} to every process", signal.as_str())
                    }
                    Err(e) => error!("cannot send {} to every process: {e}", signal.as_str()),
                },
                Step::Finish => self.finish(k),
            }
        }
    }

    fn finish(&mut self, k: &mut impl Kernel) -> ! {
        if let Some(out) = &mut self.agent_out {
            out.drain(true);
        }
        if let Some(server) = self.control.take() {
            let _ = std::fs::remove_file(&server.path);
        }
        self.inputs.devices.clear();
        if let Some(sd) = self.shutdown.clone() {
            let err = shutdown::finish(k, &sd, self.data_persistent);
            error!(
                "reboot(2) failed: {err}; every service is stopped, waiting for power to be cut"
            );
        }
        loop {
            std::thread::sleep(Duration::from_secs(60));
            let _ = reap::reap_all();
        }
    }
}

/// Adds `fd` to the poll set; returns its index.
fn push<'a>(fds: &mut Vec<PollFd<'a>>, fd: BorrowedFd<'a>) -> usize {
    fds.push(PollFd::new(fd, PollFlags::POLLIN));
    fds.len() - 1
}

struct Ready {
    signals: bool,
    control: bool,
    agent: bool,
    inputs: Vec<usize>,
}
