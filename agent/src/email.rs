//! Alert e-mail: the site's SMTP settings ([`settings`]), what the alerts say
//! ([`message`]), the SMTP client ([`smtp`]) and the [`Mailer`] that the failover service
//! sends its countdown alerts through (it implements [`Notifier`]).
//!
//! The mailer never blocks its caller: [`Notifier::notify`] puts the alert in a bounded
//! queue of [`QUEUE`] and returns; one sender task takes alerts one at a time, reads the
//! e-mail settings then (a change applies to the next alert, no restart), and sends one
//! e-mail per alert to every recipient. When e-mail is disabled the alert is dropped
//! quietly. A full queue drops the new alert and counts it ([`Mailer::dropped`]); a relay
//! that fails is logged, rate limited (a relay that is down fails every alert), and the
//! alert is not retried: the next one in the countdown follows soon enough.
//!
//! `POST /login/api/v1/email/test` does not queue: [`send_test`] sends at once on the
//! caller's task and answers the relay's own words on failure.
//!
//! A relay with a self-signed certificate: `accept_invalid_certs = true` in the settings
//! (off by default, and then nothing checks who the relay is). There is no way yet to pin
//! a relay's own certificate or CA.
//!
//! Limits: alerts only (and the test message); nothing else of the site mails yet (the
//! seeds' "no backup pulled the data" alert comes with data sync).

pub mod message;
pub mod settings;
pub mod smtp;

use crate::failover::service::{AlertMessage, Notifier};
use crate::logging::Bucket;
use crate::site::{SiteError, SiteStore};
use settings::EmailSettings;
use smtp::Relay;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

pub use settings::{EmailUpdate, EmailView, InvalidEmail};

/// Alerts held for the sender before new ones are dropped.
pub const QUEUE: usize = 32;

/// Why an e-mail was not sent or the settings not changed.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("alert e-mail is not configured: {0}")]
    NotConfigured(String),
    #[error("the mail relay {relay} failed: {message}")]
    Smtp { relay: String, message: String },
    #[error(transparent)]
    Invalid(#[from] InvalidEmail),
    #[error(transparent)]
    Settings(#[from] SiteError),
}

impl EmailError {
    /// The HTTP status and stable code the API answers.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            EmailError::NotConfigured(_) => (409, "email_not_configured"),
            EmailError::Smtp { .. } => (502, "smtp_failed"),
            EmailError::Invalid(_) | EmailError::Settings(SiteError::Invalid { .. }) => {
                (400, "bad_request")
            }
            EmailError::Settings(SiteError::Unreadable { .. }) => (409, "config_unreadable"),
            EmailError::Settings(_) => (500, "internal"),
        }
    }
}

/// What the mailer counted since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// E-mails the relay accepted.
    pub sent: AtomicU64,
    /// E-mails the relay refused or never answered for.
    pub failed: AtomicU64,
    /// Failure log lines held back by the rate limit.
    pub suppressed: AtomicU64,
}

/// The alert mailer; see the module documentation.
pub struct Mailer {
    queue: mpsc::Sender<AlertMessage>,
    counters: Arc<Counters>,
}

impl Mailer {
    /// A mailer sending through the SMTP relay of `site`'s settings. Starts its sender
    /// task: call it inside the agent's runtime.
    pub fn new(site: Arc<SiteStore>) -> Mailer {
        Mailer::with_relay(site, smtp::Smtp, QUEUE)
    }

    /// A mailer with another relay and queue size (tests).
    pub fn with_relay<R: Relay>(site: Arc<SiteStore>, relay: R, queue: usize) -> Mailer {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(sender(rx, site, relay, counters.clone()));
        Mailer {
            queue: tx,
            counters,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Alerts dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

impl Notifier for Mailer {
    fn notify(&self, alert: AlertMessage) {
        if self.queue.try_send(alert).is_err() {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // At most one line per power of two: a stuck relay cannot flood the log.
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "alert e-mail queue full: alert dropped");
            }
        }
    }
}

/// The sender task: one alert at a time, with the settings in force when it is sent.
async fn sender<R: Relay>(
    mut queue: mpsc::Receiver<AlertMessage>,
    site: Arc<SiteStore>,
    relay: R,
    counters: Arc<Counters>,
) {
    let mut limit = Bucket::full(Instant::now());
    let mut suppressed = 0u64;
    while let Some(alert) = queue.recv().await {
        let settings = site.settings().current().email;
        if !settings.enabled {
            tracing::debug!(kind = ?alert.kind, "alert e-mail disabled: alert not sent");
            continue;
        }
        let text = message::alert(&alert);
        match relay.send(&settings, &text).await {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(subject = %text.subject, "alert e-mail sent");
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if limit.take(Instant::now()) {
                    tracing::warn!(suppressed, "alert e-mail not sent: {e}");
                    suppressed = 0;
                } else {
                    counters.suppressed.fetch_add(1, Ordering::Relaxed);
                    suppressed += 1;
                }
            }
        }
    }
}

/// Applies a partial update to the site's e-mail settings (blocking file work: run it
/// off the async workers) and answers what the API shows. A refused change changes nothing.
pub fn change(site: &SiteStore, update: EmailUpdate) -> Result<EmailView, EmailError> {
    site.settings().try_update(|s| {
        let next = s.email.apply(update);
        next.check_complete()?;
        s.email = next;
        Ok(s.email.view())
    })
}

/// Sends the test message now with `settings` (on the caller's task), from `appliance`.
pub async fn send_test<R: Relay>(
    relay: &R,
    settings: &EmailSettings,
    appliance: &str,
) -> Result<(), EmailError> {
    if !settings.enabled {
        return Err(EmailError::NotConfigured(
            "e-mail is disabled: set smtp_host, from and to and enable it first".into(),
        ));
    }
    let text = message::test(appliance, &smtp::relay_name(settings));
    relay.send(settings, &text).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::role::AlertKind;
    use message::Text;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// Records what it sends; each send waits for a permit when `gate` is given.
    #[derive(Clone, Default)]
    struct Recording {
        sent: Arc<Mutex<Vec<(EmailSettings, Text)>>>,
        gate: Option<Arc<Semaphore>>,
        fail: bool,
    }

    impl Relay for Recording {
        async fn send(&self, settings: &EmailSettings, text: &Text) -> Result<(), EmailError> {
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            self.sent
                .lock()
                .unwrap()
                .push((settings.clone(), text.clone()));
            if self.fail {
                return Err(EmailError::Smtp {
                    relay: "relay:25".into(),
                    message: "550 no".into(),
                });
            }
            Ok(())
        }
    }

    fn alert(kind: AlertKind) -> AlertMessage {
        AlertMessage {
            kind,
            silent_for: Duration::from_secs(1),
            remaining: Some(Duration::from_secs(59)),
            appliance: "b2".into(),
            peer: "192.0.2.1:443".into(),
        }
    }

    fn site(dir: &std::path::Path, enabled: bool) -> Arc<SiteStore> {
        let site = Arc::new(SiteStore::open(dir));
        site.settings()
            .update(|s| {
                s.email = toml::from_str(&format!(
                    "enabled = {enabled}\nsmtp_host = \"192.0.2.25\"\nsecurity = \"none\"\n\
                     from = \"b@example.net\"\nto = [\"noc@example.net\"]\n"
                ))
                .unwrap()
            })
            .unwrap();
        site
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn each_alert_becomes_one_e_mail_with_the_settings_of_the_moment() {
        let dir = tempfile::tempdir().unwrap();
        let site = site(dir.path(), false);
        let relay = Recording::default();
        let mailer = Mailer::with_relay(site.clone(), relay.clone(), 4);

        mailer.notify(alert(AlertKind::FirstMissed));
        // Disabled: taken from the queue and not sent.
        until("the queue to drain", || mailer.queue.capacity() == 4).await;
        tokio::task::yield_now().await;
        assert!(relay.sent.lock().unwrap().is_empty());

        // Enabled with no restart: the next alert goes out, to the new relay port.
        site.settings()
            .update(|s| {
                s.email.enabled = true;
                s.email.smtp_port = std::num::NonZeroU16::new(2525);
            })
            .unwrap();
        mailer.notify(alert(AlertKind::HalfTimeout));
        mailer.notify(alert(AlertKind::Takeover));
        until("two e-mails", || relay.sent.lock().unwrap().len() == 2).await;
        let sent = relay.sent.lock().unwrap().clone();
        assert_eq!(sent[0].0.port(), 2525);
        assert!(
            sent[0].1.subject.contains("still unreachable"),
            "{:?}",
            sent[0].1
        );
        assert!(sent[1].1.subject.contains("took over"), "{:?}", sent[1].1);
        assert_eq!(mailer.counters().sent.load(Ordering::Relaxed), 2);
        assert_eq!(mailer.dropped(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let site = site(dir.path(), true);
        let gate = Arc::new(Semaphore::new(0));
        let relay = Recording {
            gate: Some(gate.clone()),
            ..Default::default()
        };
        let mailer = Mailer::with_relay(site, relay.clone(), 2);
        // The sender takes the first and hangs in the relay.
        mailer.notify(alert(AlertKind::FirstMissed));
        until("the sender to take it", || mailer.queue.capacity() == 2).await;
        // Two fit in the queue; the rest are dropped at once, the caller never waits.
        for _ in 0..5 {
            mailer.notify(alert(AlertKind::HalfTimeout));
        }
        assert_eq!(mailer.dropped(), 3);
        gate.add_permits(10);
        until("three e-mails", || relay.sent.lock().unwrap().len() == 3).await;
        tokio::task::yield_now().await;
        assert_eq!(relay.sent.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_failing_relay_is_counted_and_the_next_alert_still_goes() {
        let dir = tempfile::tempdir().unwrap();
        let relay = Recording {
            fail: true,
            ..Default::default()
        };
        let mailer = Mailer::with_relay(site(dir.path(), true), relay.clone(), 4);
        for _ in 0..3 {
            mailer.notify(alert(AlertKind::FirstMissed));
        }
        until("three failures", || {
            mailer.counters().failed.load(Ordering::Relaxed) == 3
        })
        .await;
        assert_eq!(relay.sent.lock().unwrap().len(), 3);
        assert_eq!(mailer.counters().suppressed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn failures_past_the_burst_are_not_logged_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let relay = Recording {
            fail: true,
            ..Default::default()
        };
        let n = crate::logging::BURST as u64 + 5;
        let mailer = Mailer::with_relay(site(dir.path(), true), relay.clone(), n as usize);
        for _ in 0..n {
            mailer.notify(alert(AlertKind::FirstMissed));
        }
        let failed = || mailer.counters().failed.load(Ordering::Relaxed);
        until("every failure", || failed() == n).await;
        // Far faster than the refill of one a second: the burst is logged, (nearly) all the
        // rest only counted.
        let suppressed = mailer.counters().suppressed.load(Ordering::Relaxed);
        assert!((1..=5).contains(&suppressed), "{suppressed}");
    }

    #[tokio::test]
    async fn the_test_message_needs_enabled_e_mail_and_answers_the_relay_s_words() {
        let dir = tempfile::tempdir().unwrap();
        let s = site(dir.path(), false).settings().current().email;
        let relay = Recording::default();
        let e = send_test(&relay, &s, "b2").await.unwrap_err();
        assert_eq!(e.status_and_code(), (409, "email_not_configured"));
        assert!(relay.sent.lock().unwrap().is_empty());

        let mut s = s;
        s.enabled = true;
        send_test(&relay, &s, "b2").await.unwrap();
        let sent = relay.sent.lock().unwrap().clone();
        assert_eq!(sent[0].1.subject, "[b2] Test of the alert e-mail");
        assert!(
            sent[0].1.body.contains("192.0.2.25:25"),
            "{}",
            sent[0].1.body
        );

        let failing = Recording {
            fail: true,
            ..Default::default()
        };
        let e = send_test(&failing, &s, "b2").await.unwrap_err();
        assert_eq!(e.status_and_code(), (502, "smtp_failed"));
        assert!(e.to_string().contains("550 no"), "{e}");
    }

    #[tokio::test]
    async fn the_real_relay_fails_fast_when_nothing_listens() {
        // A port on loopback with nothing behind it: refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s: EmailSettings = toml::from_str(
            "enabled = true\nsmtp_host = \"127.0.0.1\"\nsecurity = \"none\"\n\
             from = \"b@example.net\"\nto = [\"noc@example.net\"]\n",
        )
        .unwrap();
        s.smtp_port = std::num::NonZeroU16::new(port);
        let e = send_test(&smtp::Smtp, &s, "b2").await.unwrap_err();
        assert_eq!(e.status_and_code(), (502, "smtp_failed"), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
