//! Sending one e-mail through the site's mail relay with `lettre`: the seam ([`Relay`])
//! and the real SMTP client ([`Smtp`]).
//!
//! The connection follows `security`: plain, STARTTLS that must succeed, or TLS from the
//! first byte; certificates are checked against the Mozilla roots built into the agent
//! (the image has no system store) unless `accept_invalid_certs` is on. Each step
//! (connect, every command) has [`STEP_TIMEOUT`], the whole exchange [`EXCHANGE_TIMEOUT`].
//! One connection per message, no pool: alerts are rare.

use super::message::Text;
use super::settings::{EmailSettings, Security};
use super::EmailError;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait for the connection and for each answer of the relay.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole exchange (connect, TLS, login, the message) may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one e-mail with the given settings. The mailer's seam: unit tests record or
/// hold messages instead.
pub trait Relay: Send + Sync + 'static {
    fn send(
        &self,
        settings: &EmailSettings,
        text: &Text,
    ) -> impl Future<Output = Result<(), EmailError>> + Send;
}

/// The real relay: SMTP through `lettre`, saying `EHLO <host name>`.
pub struct Smtp;

/// `host:port` of the relay, for messages.
pub fn relay_name(settings: &EmailSettings) -> String {
    let host = settings.smtp_host.as_ref().map_or("", |h| h.as_str());
    if host.contains(':') {
        format!("[{host}]:{}", settings.port())
    } else {
        format!("{host}:{}", settings.port())
    }
}

/// A Message-ID unique to this agent's run, in the sender's domain (RFC 5322 3.6.4).
fn message_id(from: &str) -> String {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let domain = from
        .rsplit_once('@')
        .map_or("appliance.invalid", |(_, d)| d);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = SENT.fetch_add(1, Ordering::Relaxed);
    format!("<alert.{now:x}.{}.{n}@{domain}>", std::process::id())
}

/// The message itself: from, every recipient, subject, plain text.
fn message(settings: &EmailSettings, text: &Text) -> Result<Message, EmailError> {
    let not_configured = |what: &str| EmailError::NotConfigured(format!("no {what} is set"));
    let mailbox = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| EmailError::NotConfigured(format!("{a}: {e}")))
    };
    let from = settings
        .from
        .as_ref()
        .ok_or_else(|| not_configured("from"))?;
    let mut builder = Message::builder()
        .message_id(Some(message_id(from.as_str())))
        .from(mailbox(from.as_str())?)
        .subject(text.subject.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in settings.to.as_slice() {
        builder = builder.to(mailbox(to.as_str())?);
    }
    builder
        .body(text.body.clone())
        .map_err(|e| EmailError::NotConfigured(format!("cannot build the message: {e}")))
}

impl Smtp {
    fn transport(
        settings: &EmailSettings,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, EmailError> {
        let host = settings
            .smtp_host
            .as_ref()
            .ok_or_else(|| EmailError::NotConfigured("no smtp_host is set".into()))?
            .as_str();
        let tls = || {
            TlsParameters::builder(host.to_string())
                .dangerous_accept_invalid_certs(settings.accept_invalid_certs)
                .build_rustls()
                .map_err(|e| EmailError::Smtp {
                    relay: relay_name(settings),
                    message: format!("cannot set up TLS: {e}"),
                })
        };
        let tls = match settings.security {
            Security::None => Tls::None,
            Security::Starttls => Tls::Required(tls()?),
            Security::Tls => Tls::Wrapper(tls()?),
        };
        let hello = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "appliance".into());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port())
            .tls(tls)
            .hello_name(ClientId::Domain(hello))
            .timeout(Some(STEP_TIMEOUT));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.as_str().to_string(),
                password.expose().to_string(),
            ));
        }
        Ok(builder.build())
    }
}

/// The relay's error with its causes: the server's own words when it answered.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Relay for Smtp {
    async fn send(&self, settings: &EmailSettings, text: &Text) -> Result<(), EmailError> {
        let message = message(settings, text)?;
        let transport = Smtp::transport(settings)?;
        let failed = |message: String| EmailError::Smtp {
            relay: relay_name(settings),
            message,
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, transport.send(message)).await {
            Err(_) => Err(failed(format!(
                "no complete exchange within {} s",
                EXCHANGE_TIMEOUT.as_secs()
            ))),
            Ok(Err(e)) => Err(failed(describe(&e))),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_has_the_sender_every_recipient_and_the_subject() {
        let settings: EmailSettings = toml::from_str(
            "enabled = true\nsmtp_host = \"2001:db8::25\"\nfrom = \"b@example.net\"\n\
             to = [\"one@example.net\", \"two@example.net\"]\n",
        )
        .unwrap();
        assert_eq!(relay_name(&settings), "[2001:db8::25]:587");
        let text = Text {
            subject: "Primary appliance unreachable".into(),
            body: "body\n".into(),
        };
        let m = message(&settings, &text).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("From: b@example.net\r\n"), "{raw}");
        assert!(
            raw.contains("To: one@example.net, two@example.net\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("Subject: Primary appliance unreachable\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Date: "), "{raw}");
        let id = raw
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or_else(|| panic!("no Message-ID: {raw}"));
        assert!(
            id.starts_with("<alert.") && id.ends_with("@example.net>"),
            "{id}"
        );
        assert_ne!(message_id("b@example.net"), message_id("b@example.net"));
        let envelope = m.envelope();
        assert_eq!(envelope.to().len(), 2);
    }
}
