//! Conflicts: both appliances primary, or both backup. Who keeps the role is decided by
//! evidence, the same way on both sides, so the two reach the same answer without a
//! third party:
//!
//! 1. the one that holds the shared IP and answers on it (clients reach it now);
//! 2. else the newer role change (the higher epoch);
//! 3. else the lower appliance id (the SMBIOS UUID, compared as lowercase text).
//!
//! [`decide`] is antisymmetric: `decide(a, b)` names the same appliance as `decide(b, a)`,
//! which is what lets each side run it alone. Two appliances with the same id and the
//! same evidence cannot be told apart; ids are unique (a cloned VM must get a new UUID).

use serde::{Deserialize, Serialize};

/// What one appliance shows about itself in a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence<'a> {
    /// It holds the shared IP and answers on it.
    pub holds_shared_ip: bool,
    /// The epoch of its last role change.
    pub epoch: u64,
    /// Its appliance id.
    pub id: &'a str,
}

/// Which of the two arguments of [`decide`] keeps the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winner {
    A,
    B,
}

/// The rule that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    SharedIp,
    Epoch,
    Id,
}

/// Which one keeps the role: see the module doc for the order of the rules.
pub fn decide(a: Evidence<'_>, b: Evidence<'_>) -> Winner {
    decide_why(a, b).0
}

/// [`decide`], with the rule that settled it (for the history).
pub fn decide_why(a: Evidence<'_>, b: Evidence<'_>) -> (Winner, Reason) {
    if a.holds_shared_ip != b.holds_shared_ip {
        let w = if a.holds_shared_ip {
            Winner::A
        } else {
            Winner::B
        };
        return (w, Reason::SharedIp);
    }
    if a.epoch != b.epoch {
        let w = if a.epoch > b.epoch {
            Winner::A
        } else {
            Winner::B
        };
        return (w, Reason::Epoch);
    }
    let (ia, ib) = (a.id.to_ascii_lowercase(), b.id.to_ascii_lowercase());
    let w = if ia <= ib { Winner::A } else { Winner::B };
    (w, Reason::Id)
}

/// The kind of conflict: both appliances in the same role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    BothPrimary,
    BothBackup,
}

/// The opening the vendor's status page uses, kept word for word so scripts and people
/// who know it recognise it.
pub const OPENING: &str = "There is a conflict in the primary and secondary site instances.";

/// The conflict message status shows.
pub fn message(kind: Kind) -> String {
    let role = match kind {
        Kind::BothPrimary => "primary",
        Kind::BothBackup => "backup",
    };
    format!(
        "{OPENING} Each appliance reports itself as {role}, a state the pair should never be \
         in; Fix chooses the role of each from the evidence and makes the change on both."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const HIGH: &str = "F0A1B2C3-0000-4000-8000-000000000001";

    fn ev(holds: bool, epoch: u64, id: &str) -> Evidence<'_> {
        Evidence {
            holds_shared_ip: holds,
            epoch,
            id,
        }
    }

    /// Both orders name the same appliance.
    fn check(a: Evidence<'_>, b: Evidence<'_>, winner: Winner, reason: Reason) {
        assert_eq!(decide_why(a, b), (winner, reason));
        let flipped = match winner {
            Winner::A => Winner::B,
            Winner::B => Winner::A,
        };
        assert_eq!(decide_why(b, a), (flipped, reason));
    }

    #[test]
    fn the_holder_of_the_shared_ip_wins_over_a_newer_epoch_and_a_lower_id() {
        check(
            ev(true, 3, HIGH),
            ev(false, 9, LOW),
            Winner::A,
            Reason::SharedIp,
        );
    }

    #[test]
    fn with_the_shared_ip_alike_the_newer_epoch_wins() {
        check(
            ev(false, 4, HIGH),
            ev(false, 5, LOW),
            Winner::B,
            Reason::Epoch,
        );
        check(
            ev(true, 7, HIGH),
            ev(true, 5, LOW),
            Winner::A,
            Reason::Epoch,
        );
    }

    #[test]
    fn then_the_lower_id_wins_whatever_its_case() {
        check(ev(false, 5, HIGH), ev(false, 5, LOW), Winner::B, Reason::Id);
        let upper = LOW.to_ascii_uppercase();
        check(
            ev(true, 5, &upper),
            ev(true, 5, HIGH),
            Winner::A,
            Reason::Id,
        );
    }

    #[test]
    fn the_message_opens_with_the_vendor_wording_and_names_the_role() {
        let m = message(Kind::BothPrimary);
        assert!(m.starts_with("There is a conflict in the primary and secondary site instances. "));
        assert!(m.contains("primary, a state"), "{m}");
        assert!(message(Kind::BothBackup).contains("as backup"));
        assert!(!m.contains('\n'));
    }
}
