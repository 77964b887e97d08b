//! What the alert e-mails say: a subject that tells what happened and when the failover
//! comes, and a body with the appliance, its peer, the silence and the time left. Pure
//! text, no I/O: the mailer adds the addresses and the date.

use crate::failover::role::AlertKind;
use crate::failover::service::AlertMessage;
use std::fmt::Write;
use std::time::Duration;

/// One e-mail's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    pub subject: String,
    pub body: String,
}

/// A duration for people: "4 minutes", "1 minute 30 seconds", "0.5 seconds", "2 hours".
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 10_000 && !ms.is_multiple_of(1000) {
        return format!("{:.1} seconds", d.as_secs_f64());
    }
    let secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    let units = [
        (secs / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
    ];
    let parts: Vec<String> = units
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "0 seconds".into()
    } else {
        parts.join(" ")
    }
}

/// What the mailer sends for an alert of the failover service.
/// The primary's alert when no backup has pulled its data for too long.
fn no_pull(a: &AlertMessage) -> Text {
    let (me, peer) = (&a.appliance, &a.peer);
    let silent = human(a.silent_for);
    let mut body = String::new();
    let _ = write!(
        body,
        "No backup appliance has pulled a data sync from the primary {me} for {silent}. \
         If the primary fails now, its backup ({peer}) would serve an old copy of the site. \
         Check the backup: its failover status, its Backup Operations setting and its \
         connection to this appliance.\n\n"
    );
    let _ = writeln!(body, "Appliance:     {me} (primary)");
    let _ = writeln!(body, "Backup:        {peer}");
    let _ = writeln!(body, "Last pull:     {silent} ago, or never");
    Text {
        subject: format!("No data sync pulled from {me} for {silent}"),
        body,
    }
}

pub fn alert(a: &AlertMessage) -> Text {
    if a.kind == AlertKind::NoPull {
        return no_pull(a);
    }
    let (me, peer) = (&a.appliance, &a.peer);
    let silent = human(a.silent_for);
    let countdown = a.remaining.map(human);
    let mut body = String::new();
    let subject = match (a.kind, &countdown) {
        (AlertKind::FirstMissed | AlertKind::HalfTimeout, _) => {
            let (headline, opening) = if a.kind == AlertKind::FirstMissed {
                (
                    "unreachable",
                    format!("The backup appliance {me} has lost contact with its primary, {peer}."),
                )
            } else {
                (
                    "still unreachable",
                    format!("The primary appliance {peer} has now been silent for {silent}."),
                )
            };
            body.push_str(&opening);
            body.push_str("\n\n");
            match &countdown {
                Some(left) => {
                    let _ = write!(
                        body,
                        "If it stays silent, {me} takes over in {left}: it enables the shared \
                         IP and becomes the primary, provided one of its network connectivity \
                         test IPs answers. More e-mails follow until then."
                    );
                    format!("Primary appliance {peer} {headline}: automatic failover in {left}")
                }
                None => {
                    let _ = write!(
                        body,
                        "Automatic failover is off on {me}: if the primary is down, make this \
                         appliance the primary by hand (Become Primary)."
                    );
                    format!("Primary appliance {peer} {headline}: no automatic failover")
                }
            }
        }
        (AlertKind::Takeover, _) => {
            let _ = write!(
                body,
                "The primary appliance {peer} was silent for {silent}, past the primary \
                 timeout, and a network connectivity test IP answered: {me} enabled the \
                 shared IP and is now the primary. When the old primary comes back it stays \
                 the backup; check it before making it the primary again."
            );
            format!("{me} took over as primary: {peer} silent for {silent}")
        }
        (AlertKind::NoPull, _) => return no_pull(a),
        (AlertKind::CutOff, _) => {
            let _ = write!(
                body,
                "The primary appliance {peer} has been silent for {silent}, but none of the \
                 network connectivity test IPs of {me} answered either: this backup is the \
                 one cut off, so it does not take over. Check its network connection."
            );
            format!("{me} cannot reach its test IPs: no failover")
        }
    };
    body.push_str("\n\n");
    let _ = writeln!(body, "Appliance:     {me} (backup)");
    let _ = writeln!(body, "Primary:       {peer}");
    let _ = writeln!(body, "Silent for:    {silent}");
    let left = match (a.kind, &countdown) {
        (AlertKind::Takeover, _) => "done, this appliance is the primary".to_string(),
        (AlertKind::CutOff, _) => "none (this backup is cut off)".to_string(),
        (AlertKind::NoPull, _) => "none".to_string(),
        (_, Some(left)) => left.clone(),
        (_, None) => "none (no automatic failover)".to_string(),
    };
    let _ = writeln!(body, "Failover in:   {left}");
    Text {
        subject: format!("[{me}] {subject}"),
        body: wrap(&body, WIDTH),
    }
}

/// Body lines are wrapped at this many characters: plain 7-bit text any mail reader
/// shows as it is (longer lines would be sent quoted-printable).
pub const WIDTH: usize = 72;

/// `text` with each line longer than `width` broken at spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / width);
    for line in text.split_inclusive('\n') {
        let (line, end) = match line.strip_suffix('\n') {
            Some(l) => (l, "\n"),
            None => (line, ""),
        };
        let mut len = 0;
        for (i, word) in line.split(' ').enumerate() {
            if i > 0 {
                if len + 1 + word.len() > width {
                    out.push('\n');
                    len = 0;
                } else {
                    out.push(' ');
                    len += 1;
                }
            }
            out.push_str(word);
            len += word.len();
        }
        out.push_str(end);
    }
    out
}

/// The message `POST /login/api/v1/email/test` sends.
pub fn test(appliance: &str, relay: &str) -> Text {
    Text {
        subject: format!("[{appliance}] Test of the alert e-mail"),
        body: wrap(
            &format!(
                "This test message from the appliance {appliance} went through the mail relay \
             {relay}.\n\nFailover alerts reach you the same way: when the primary appliance \
             becomes unreachable, the backup sends a series of e-mails counting down to the \
             automatic failover.\n"
            ),
            WIDTH,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The body with its line breaks inside paragraphs undone.
    fn flat(t: &Text) -> String {
        t.body.replace('\n', " ")
    }

    fn msg(kind: AlertKind, silent: Duration, remaining: Option<Duration>) -> AlertMessage {
        AlertMessage {
            kind,
            silent_for: silent,
            remaining,
            appliance: "b2".into(),
            peer: "192.0.2.1:443".into(),
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(secs(240)), "4 minutes");
        assert_eq!(human(secs(90)), "1 minute 30 seconds");
        assert_eq!(human(secs(1)), "1 second");
        assert_eq!(human(secs(7200 + 60)), "2 hours 1 minute");
        assert_eq!(human(Duration::from_millis(500)), "0.5 seconds");
        assert_eq!(human(Duration::from_millis(2250)), "2.2 seconds");
        assert_eq!(human(Duration::from_millis(59_600)), "1 minute");
        assert_eq!(human(Duration::ZERO), "0 seconds");
    }

    #[test]
    fn body_lines_are_wrapped_at_72_characters() {
        for kind in [
            AlertKind::FirstMissed,
            AlertKind::HalfTimeout,
            AlertKind::Takeover,
            AlertKind::CutOff,
        ] {
            let t = alert(&msg(kind, secs(2), Some(secs(598))));
            assert!(t.body.lines().all(|l| l.len() <= WIDTH), "{}", t.body);
        }
        assert_eq!(wrap("aaa bbb ccc\nd", 7), "aaa bbb\nccc\nd");
        assert!(test("b2", "192.0.2.25:25")
            .body
            .lines()
            .all(|l| l.len() <= WIDTH));
    }

    #[test]
    fn the_first_alert_counts_down_to_the_failover() {
        let t = alert(&msg(AlertKind::FirstMissed, secs(2), Some(secs(598))));
        assert_eq!(
            t.subject,
            "[b2] Primary appliance 192.0.2.1:443 unreachable: automatic failover in 9 minutes 58 seconds"
        );
        assert!(
            flat(&t).contains("b2 has lost contact with its primary, 192.0.2.1:443"),
            "{}",
            t.body
        );
        assert!(t.body.contains("Silent for:    2 seconds\n"), "{}", t.body);
        assert!(
            t.body.contains("Failover in:   9 minutes 58 seconds\n"),
            "{}",
            t.body
        );
    }

    #[test]
    fn the_half_time_alert_says_how_long_the_primary_was_silent() {
        let t = alert(&msg(AlertKind::HalfTimeout, secs(300), Some(secs(300))));
        assert_eq!(
            t.subject,
            "[b2] Primary appliance 192.0.2.1:443 still unreachable: automatic failover in 5 minutes"
        );
        assert!(flat(&t).contains("silent for 5 minutes"), "{}", t.body);
    }

    #[test]
    fn without_automatic_failover_the_alert_says_there_is_none() {
        let t = alert(&msg(AlertKind::FirstMissed, secs(2), None));
        assert_eq!(
            t.subject,
            "[b2] Primary appliance 192.0.2.1:443 unreachable: no automatic failover"
        );
        assert!(flat(&t).contains("by hand"), "{}", t.body);
        assert!(t.body.contains("Failover in:   none"), "{}", t.body);
    }

    #[test]
    fn the_takeover_alert_says_who_is_primary_now() {
        let t = alert(&msg(AlertKind::Takeover, secs(600), None));
        assert_eq!(
            t.subject,
            "[b2] b2 took over as primary: 192.0.2.1:443 silent for 10 minutes"
        );
        assert!(flat(&t).contains("is now the primary"), "{}", t.body);
        assert!(t.body.contains("Failover in:   done"), "{}", t.body);
    }

    #[test]
    fn the_cut_off_alert_says_there_is_no_failover() {
        let t = alert(&msg(AlertKind::CutOff, secs(600), Some(Duration::ZERO)));
        assert_eq!(t.subject, "[b2] b2 cannot reach its test IPs: no failover");
        assert!(flat(&t).contains("does not take over"), "{}", t.body);
        assert!(
            t.body
                .contains("Failover in:   none (this backup is cut off)"),
            "{}",
            t.body
        );
    }
}
