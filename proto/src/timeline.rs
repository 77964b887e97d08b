//! Boot milestones.
//!
//! Init and the agent append one line per milestone to [`crate::paths::TIMELINE`]:
//! `<microseconds on CLOCK_MONOTONIC> <name>`. The monotonic clock starts near zero when
//! the kernel starts, so the figures read as "time since kernel start". Lines are short and
//! written with one `write` to a file opened with `O_APPEND`, so writers never interleave.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Milestone {
    pub micros: u64,
    pub name: String,
}

impl Milestone {
    /// A milestone; the name is reduced to `[a-z0-9._:-]` so a line stays one token.
    pub fn new(micros: u64, name: &str) -> Milestone {
        let name = name
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '.' | '_' | ':' | '-' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '-',
            })
            .collect();
        Milestone { micros, name }
    }

    pub fn encode(&self) -> String {
        format!("{} {}\n", self.micros, self.name)
    }

    /// Milliseconds since kernel start, for people.
    pub fn millis(&self) -> f64 {
        self.micros as f64 / 1000.0
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>10.3} ms  {}", self.millis(), self.name)
    }
}

/// Parses a timeline file; lines that are not milestones are skipped.
pub fn parse(text: &str) -> Vec<Milestone> {
    text.lines()
        .filter_map(|line| {
            let (micros, name) = line.split_once(' ')?;
            let micros = micros.parse().ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| Milestone::new(micros, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_round_trip() {
        let m = vec![
            Milestone::new(812_345, "init-start"),
            Milestone::new(990_001, "agent-listening"),
        ];
        let text: String = m.iter().map(Milestone::encode).collect();
        assert_eq!(parse(&text), m);
    }

    #[test]
    fn names_stay_one_token_and_junk_lines_are_skipped() {
        assert_eq!(Milestone::new(1, "Data Mounted\n").name, "data-mounted-");
        assert_eq!(parse("x y\n12\n\n5 ok\n"), vec![Milestone::new(5, "ok")]);
    }
}
