//! A namespace lab for agent tests without VMs: a switch (a namespace with bridge `br0`
//! and the workstation address 169.254.1.4/16) and hosts, each a namespace whose `eth0` is
//! a veth cabled to a switch port. Agents run as real processes in the hosts, with real
//! netlink, ARP and TLS. Everything is removed on drop.

use crate::netns::enter_and_run;
use appliance_agent::client::Answer;
use appliance_agent::model::{FactoryAddress, Status};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Lab {
    pub switch: String,
    hosts: Vec<String>,
    pub dir: PathBuf,
}

/// A host on the lab's switch.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    /// The switch-side end of its cable.
    port: String,
    switch: String,
}

impl Lab {
    pub fn new(dir: PathBuf) -> Lab {
        let switch = crate::unique("sw");
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]);
        ip(&["-n", &switch, "addr", "add", "169.254.1.4/16", "dev", "br0"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        Lab {
            switch,
            hosts: Vec::new(),
            dir,
        }
    }

    /// A new host cabled to the switch; its `eth0` has MAC `52:54:00:b0:00:<mac_last>`.
    pub fn host(&mut self, mac_last: u8) -> Host {
        let ns = crate::unique("h");
        let port = format!("p{}", self.hosts.len() + 1);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let mac = format!("52:54:00:b0:00:{mac_last:02x}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        Host {
            ns,
            port,
            switch: self.switch.clone(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new(crate::top().join("qemu/netns-down"))
                .arg(ns)
                .output();
        }
    }
}

impl Host {
    /// The switch-side end of its cable (a port of `br0` in the switch namespace).
    pub fn port(&self) -> &str {
        &self.port
    }

    /// Plugs or unplugs the cable at the switch (the host sees carrier go and come).
    pub fn cable(&self, plugged: bool) {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.port,
            if plugged { "up" } else { "down" },
        ]);
    }

    /// Configures an address by hand, as a rogue host would (its kernel then answers probes).
    pub fn add_address(&self, cidr: &str) {
        ip(&["-n", &self.ns, "addr", "add", cidr, "dev", "eth0"]);
        ip(&["-n", &self.ns, "link", "set", "eth0", "up"]);
    }

    /// The IPv4 addresses on `eth0`, as `a.b.c.d/p`.
    pub fn addresses(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn mac(&self) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-o", "link", "show", "dev", "eth0"])
            .output()
            .expect("ip link");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut m = [0u8; 6];
        for (i, part) in mac.split(':').enumerate().take(6) {
            m[i] = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        m
    }

    /// Runs `f` inside this host's namespace with a tokio runtime.
    pub fn block_on<F: std::future::Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        enter_and_run(&self.ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f)
        })
    }
}

/// What curl saw: status, content type, body.
pub struct Seen {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// A real `appliance-agent` process on a lab host; killed on drop.
pub struct Agent {
    pub host: Host,
    child: Option<Child>,
    pub data: PathBuf,
    pub log: PathBuf,
    /// The file the agent reads as its kernel command line.
    cmdline: PathBuf,
}

impl Agent {
    /// Starts the agent with `<data>/config/appliance.toml` = `config` (if given). Its API
    /// listens on every address, so the tests reach it at 127.0.0.1 inside the host.
    pub fn start(lab: &Lab, host: &Host, name: &str, config: Option<&str>) -> Agent {
        Agent::start_with(lab, host, name, config, false)
    }

    /// [`Agent::start`], with `appliance.debug=1` on its command line when `debug` (the
    /// debug hooks, and the version override of `<data>/debug/version`).
    pub fn start_with(
        lab: &Lab,
        host: &Host,
        name: &str,
        config: Option<&str>,
        debug: bool,
    ) -> Agent {
        let data = lab.dir.join(name).join("data");
        let run = lab.dir.join(name).join("run");
        std::fs::create_dir_all(data.join("config")).expect("data dir");
        std::fs::create_dir_all(&run).expect("run dir");
        if let Some(text) = config {
            std::fs::write(data.join("config/appliance.toml"), text).expect("write config");
        }
        let cmdline = if debug {
            let file = lab.dir.join(name).join("cmdline");
            std::fs::write(&file, "appliance.debug=1\n").expect("write cmdline");
            file
        } else {
            PathBuf::from("/dev/null")
        };
        let mut a = Agent {
            host: host.clone(),
            child: None,
            data,
            log: lab.dir.join(format!("{name}.log")),
            cmdline,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let run = self
            .data
            .parent()
            .map(|p| p.join("run"))
            .unwrap_or_default();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host.ns])
            // Its own UTS namespace: a host name the agent sets stays inside the test.
            .args(["unshare", "--uts"])
            .arg(crate::bin("appliance-agent"))
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--run-dir")
            .arg(run)
            .arg("--resolv-conf")
            .arg(self.resolv_conf())
            .args(["--nic", "eth0", "--cmdline"])
            .arg(&self.cmdline)
            .env("APPLIANCE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start appliance-agent");
        self.child = Some(child);
    }

    /// Where this agent writes its DNS settings (never the host's /etc/resolv.conf).
    pub fn resolv_conf(&self) -> PathBuf {
        self.data
            .parent()
            .map(|p| p.join("resolv.conf"))
            .unwrap_or_default()
    }

    /// The agent's process id (it runs in its own UTS namespace: see `nsenter -u`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the agent as a crash would and starts it again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// One API call to this agent as the administrator, from inside its host.
    pub fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Answer, String> {
        crate::api::call(&self.host.ns, "127.0.0.1", method, path, body)
    }

    /// One request to any path of the agent's HTTPS port from inside its host, with
    /// `token` if given: the status and the body as text.
    pub fn at(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> (u16, String) {
        let a = crate::api::at_path(
            &self.host.ns,
            "127.0.0.1",
            method,
            path,
            body,
            token.map(str::to_string),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (a.status, String::from_utf8_lossy(&a.body).into_owned())
    }

    /// `curl -sk` inside the agent's host (add the options and the URL).
    pub fn curl(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host.ns, "curl", "-sk"]);
        c
    }

    /// Runs curl inside the agent's host against `https://127.0.0.1{path}` with `args`
    /// (20 s at most).
    pub fn https(&self, path: &str, args: &[&str]) -> Seen {
        let out = self
            .curl()
            .args(["--max-time", "20"])
            .args(args)
            .args(["-w", "\n%{http_code} %{content_type}"])
            .arg(format!("https://127.0.0.1{path}"))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (status, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
        Seen {
            status: status.parse().unwrap_or(0),
            content_type: content_type.to_string(),
            body: body.to_string(),
        }
    }

    /// Runs `appliancectl` inside the agent's host as the administrator (the harness's
    /// session token): whether it succeeded, and its stdout and stderr together.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let token = crate::api::token(&self.host.ns, "127.0.0.1").expect("login");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host.ns])
            .arg(crate::bin("appliancectl"))
            .args(["--insecure", "--host", "127.0.0.1"])
            .args(args)
            .env("APPLIANCE_TOKEN", token)
            .output()
            .expect("run appliancectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Waits until the agent's API answers (any HTTP answer counts).
    pub fn wait_api(&self) {
        crate::wait::until(
            "the agent's API",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || crate::api::call_raw(&self.host.ns, "127.0.0.1", "GET", "/status", None),
        );
    }

    pub fn factory(&self) -> Result<FactoryAddress, String> {
        let a = self.call("GET", "/network/factory-address", None)?;
        serde_json::from_slice(&a.body)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&a.body)))
    }

    pub fn status(&self) -> Result<Status, String> {
        let a = self.call("GET", "/status", None)?;
        serde_json::from_slice(&a.body)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&a.body)))
    }

    /// Waits until the agent holds a factory address, and returns its status.
    pub fn wait_held(&self, timeout: Duration) -> FactoryAddress {
        crate::wait::until(
            "the factory address to be held",
            timeout,
            Duration::from_millis(20),
            || {
                let f = self.factory()?;
                if f.state.as_str() == "held" {
                    Ok(f)
                } else {
                    Err(format!("state {} (probing {:?})", f.state, f.probing))
                }
            },
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
