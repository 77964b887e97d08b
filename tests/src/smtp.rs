//! An SMTP sink for the namespace tests: a small SMTP server that runs inside a test's
//! namespace, takes every message (or refuses every recipient, to test a relay that says
//! no) and records it, so a test can wait for the alert e-mails and read them.
//!
//! ```no_run
//! # use appliance_tests::smtp::Sink;
//! # use std::time::Duration;
//! let sink = Sink::start("h1234-0", "127.0.0.1".parse().unwrap());
//! // point the agent's e-mail settings at sink.addr(), then:
//! let mails = sink.wait_for(1, Duration::from_secs(10));
//! assert!(mails[0].subject().contains("Test"));
//! ```
//!
//! It speaks enough of SMTP for `lettre` and the like: EHLO/HELO, AUTH PLAIN (the user
//! name and password are recorded), MAIL, RCPT, DATA (dot-unstuffed), RSET, NOOP, QUIT,
//! and with [`Options::tls`] STARTTLS or TLS from the first byte, with a self-signed
//! certificate for its address made at start. It runs on a thread of its own that
//! entered the namespace, with a tokio runtime, until dropped.

use crate::netns::enter_and_run;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// What the sink answers.
#[derive(Clone, Debug, Default)]
pub enum Behaviour {
    /// Takes every message.
    #[default]
    Accept,
    /// Answers every `RCPT TO` with this line (e.g. `550 5.1.1 no such mailbox here`).
    RefuseRecipients(String),
}

/// How the sink protects its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Offers STARTTLS (and takes mail without it too).
    StartTls,
    /// TLS from the first byte ("SMTPS").
    Wrapper,
}

/// How a sink behaves.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub behaviour: Behaviour,
    /// `None`: plain SMTP only.
    pub tls: Option<TlsMode>,
}

/// One message the sink took.
#[derive(Clone, Debug, Default)]
pub struct Mail {
    /// The EHLO (or HELO) name.
    pub hello: String,
    /// The user name and password of AUTH PLAIN, if the client logged in.
    pub login: Option<(String, String)>,
    /// The envelope sender and recipients.
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body, CRLF, dot-unstuffed).
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

impl Mail {
    /// A header's value (the first of that name, folded lines joined).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                if n.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_string());
                }
            }
        }
        value
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The body as text, quoted-printable decoded when it was sent so, LF line ends.
    pub fn body(&self) -> String {
        let body = self
            .data
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        let body = if qp { unquote(&body) } else { body };
        body.replace("\r\n", "\n")
    }
}

/// Decodes quoted-printable text (soft line breaks and `=XX`).
fn unquote(text: &str) -> String {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes standard base64 (AUTH PLAIN's one argument).
fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim().bytes().take_while(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<Mail>>,
    arrived: Condvar,
}

/// A running sink; stopped when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// A sink taking every message, listening on `ip` (a port of its own) in namespace `ns`.
    pub fn start(ns: &str, ip: IpAddr) -> Sink {
        Sink::start_with(ns, ip, Behaviour::Accept)
    }

    pub fn start_with(ns: &str, ip: IpAddr, behaviour: Behaviour) -> Sink {
        Sink::start_opts(
            ns,
            ip,
            Options {
                behaviour,
                tls: None,
            },
        )
    }

    pub fn start_opts(ns: &str, ip: IpAddr, options: Options) -> Sink {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, bound) = std::sync::mpsc::channel();
        let ns = ns.to_string();
        let state = shared.clone();
        let acceptor = options.tls.map(|_| acceptor(ip));
        let thread = std::thread::spawn(move || {
            enter_and_run(&ns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(serve(ip, options, acceptor, state, ready, stopped));
            })
        });
        let addr = bound
            .recv_timeout(Duration::from_secs(10))
            .expect("the SMTP sink did not start")
            .unwrap_or_else(|e| panic!("SMTP sink: {e}"));
        Sink {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages taken so far.
    pub fn mails(&self) -> Vec<Mail> {
        lock(&self.shared.mails).clone()
    }

    /// Waits until at least `n` messages arrived, and returns them all; panics after
    /// `timeout` saying how many came.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let end = Instant::now() + timeout;
        let mut mails = lock(&self.shared.mails);
        while mails.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let subjects: Vec<String> = mails.iter().map(Mail::subject).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {n} e-mails; got {}: {subjects:?}",
                    mails.len()
                );
            }
            mails = self
                .shared
                .arrived
                .wait_timeout(mails, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        mails.clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TLS acceptor with a self-signed certificate for `ip`.
fn acceptor(ip: IpAddr) -> TlsAcceptor {
    let made = rcgen::generate_simple_self_signed(vec![ip.to_string()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![made.cert.der().clone()], key)
    .expect("TLS config");
    TlsAcceptor::from(Arc::new(config))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(
    ip: IpAddr,
    options: Options,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match TcpListener::bind((ip, 0)).await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("bind {ip}: {e}")));
            return;
        }
    };
    let _ = ready.send(listener.local_addr().map_err(|e| e.to_string()));
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let session = session(stream, options.clone(), acceptor.clone(), shared.clone());
                    tokio::spawn(async move {
                        let _ = session.await;
                    });
                }
            }
        }
    }
}

/// How a conversation ended.
#[derive(PartialEq, Eq)]
enum End {
    Closed,
    StartTls,
}

/// One SMTP connection, upgraded to TLS as the options say.
async fn session(
    stream: TcpStream,
    options: Options,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let mut mail = Mail::default();
    let behaviour = &options.behaviour;
    match (options.tls, acceptor) {
        (Some(TlsMode::Wrapper), Some(acceptor)) => {
            let mut s = BufReader::new(acceptor.accept(stream).await?);
            mail.tls = true;
            converse(&mut s, &mut mail, behaviour, &shared, false, true).await?;
        }
        (Some(TlsMode::StartTls), Some(acceptor)) => {
            let mut s = BufReader::new(stream);
            let end = converse(&mut s, &mut mail, behaviour, &shared, true, true).await?;
            if end == End::StartTls {
                // The client speaks first after the upgrade (EHLO again): no greeting.
                let mut s = BufReader::new(acceptor.accept(s.into_inner()).await?);
                mail = Mail {
                    tls: true,
                    ..Mail::default()
                };
                converse(&mut s, &mut mail, behaviour, &shared, false, false).await?;
            }
        }
        _ => {
            let mut s = BufReader::new(stream);
            converse(&mut s, &mut mail, behaviour, &shared, false, true).await?;
        }
    }
    Ok(())
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    mail: &mut Mail,
    behaviour: &Behaviour,
    shared: &Shared,
    offer_tls: bool,
    greet: bool,
) -> std::io::Result<End> {
    if greet {
        stream
            .write_all(b"220 sink.test ESMTP test sink\r\n")
            .await?;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(End::Closed);
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        let reply = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                mail.hello = arg.to_string();
                let starttls = if offer_tls { "250-STARTTLS\r\n" } else { "" };
                format!("250-sink.test\r\n{starttls}250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8")
            }
            "HELO" => {
                mail.hello = arg.to_string();
                "250 sink.test".into()
            }
            "STARTTLS" if offer_tls => {
                stream
                    .write_all(b"220 2.0.0 ready to start TLS\r\n")
                    .await?;
                return Ok(End::StartTls);
            }
            "AUTH" => {
                let plain = arg
                    .strip_prefix("PLAIN ")
                    .and_then(base64)
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                match plain.as_deref().map(|p| p.split('\0').collect::<Vec<_>>()) {
                    Some(parts) if parts.len() == 3 => {
                        mail.login = Some((parts[1].to_string(), parts[2].to_string()));
                        "235 2.7.0 authenticated".into()
                    }
                    _ => "504 5.5.4 only AUTH PLAIN with its argument".into(),
                }
            }
            "MAIL" => {
                mail.from = path(arg);
                mail.to.clear();
                "250 2.1.0 ok".into()
            }
            "RCPT" => match behaviour {
                Behaviour::RefuseRecipients(answer) => answer.clone(),
                Behaviour::Accept => {
                    mail.to.push(path(arg));
                    "250 2.1.5 ok".into()
                }
            },
            "DATA" => {
                stream.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await? == 0 {
                        return Ok(End::Closed);
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let mut taken = mail.clone();
                taken.data = data;
                lock(&shared.mails).push(taken);
                shared.arrived.notify_all();
                "250 2.0.0 queued".into()
            }
            "RSET" => {
                mail.from.clear();
                mail.to.clear();
                "250 2.0.0 ok".into()
            }
            "NOOP" => "250 2.0.0 ok".into(),
            "QUIT" => {
                stream.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(End::Closed);
            }
            _ => "502 5.5.2 command not recognised".into(),
        };
        stream.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The address of `FROM:<a@b> ...` or `TO:<a@b>`.
fn path(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoders_read_what_mail_clients_send() {
        assert_eq!(base64("AHVzZXIAcGFzcw==").unwrap(), b"\0user\0pass");
        assert_eq!(unquote("a=3Db=\r\nc"), "a=bc");
        assert_eq!(path("FROM:<b@example.net> BODY=8BITMIME"), "b@example.net");
        let m = Mail {
            data: "Subject: one\r\n two\r\nTo: x\r\n\r\nbody\r\n".into(),
            ..Default::default()
        };
        assert_eq!(m.subject(), "one two");
        assert_eq!(m.body(), "body\n");
    }
}
