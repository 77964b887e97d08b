//! Where `appliancectl` keeps its login sessions, and how it asks for secrets.
//!
//! Session tokens are kept per appliance (`host:port token` lines) in
//! `$APPLIANCECTL_SESSIONS`, else `~/.config/appliancectl/sessions` (mode 0600).
//! `$APPLIANCE_TOKEN` (a session or API token) overrides the file.

use std::io::{BufRead, Write};
use std::path::PathBuf;

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("APPLIANCECTL_SESSIONS") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".config/appliancectl/sessions")
}

fn read_all() -> Vec<(String, String)> {
    std::fs::read_to_string(path())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(t, k)| (t.to_string(), k.trim().to_string()))
        })
        .collect()
}

/// The token to send to `target`.
pub fn token_for(target: &str) -> Option<String> {
    if let Ok(t) = std::env::var("APPLIANCE_TOKEN") {
        if !t.is_empty() {
            return Some(t);
        }
    }
    read_all()
        .into_iter()
        .find(|(t, _)| t == target)
        .map(|(_, k)| k)
}

fn write_all(entries: &[(String, String)]) -> std::io::Result<()> {
    let p = path();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text: String = entries.iter().map(|(t, k)| format!("{t} {k}\n")).collect();
    crate::store::write_atomic(&p, text.as_bytes(), 0o600).map_err(|e| e.source)
}

pub fn save(target: &str, token: &str) -> std::io::Result<()> {
    let mut all = read_all();
    all.retain(|(t, _)| t != target);
    all.push((target.to_string(), token.to_string()));
    write_all(&all)
}

pub fn forget(target: &str) -> std::io::Result<()> {
    let mut all = read_all();
    all.retain(|(t, _)| t != target);
    write_all(&all)
}

/// Reads one secret: from the terminal without echo, or one line of standard input.
pub fn read_secret(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let tty = tcgetattr(&stdin).ok();
    if let Some(original) = &tty {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut quiet = original.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(original) = &tty {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, original);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
