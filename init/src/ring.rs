//! A bounded log of whole lines: pushing past the capacity drops the oldest lines.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
    capacity: usize,
}

impl Ring {
    pub const fn new(capacity: usize) -> Ring {
        Ring {
            lines: VecDeque::new(),
            bytes: 0,
            capacity,
        }
    }

    /// Adds one line (normally ending in `\n`); a line longer than the whole capacity is
    /// cut to fit (at a character boundary).
    pub fn push(&mut self, line: &str) {
        let line = truncate(line, self.capacity);
        while self.bytes.saturating_add(line.len()) > self.capacity {
            match self.lines.pop_front() {
                Some(old) => self.bytes = self.bytes.saturating_sub(old.len()),
                None => break,
            }
        }
        self.bytes = self.bytes.saturating_add(line.len());
        self.lines.push_back(line.to_string());
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The lines, oldest first, concatenated.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        for line in &self.lines {
            out.extend_from_slice(line.as_bytes());
        }
        out
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_capacity() {
        let mut r = Ring::new(100);
        r.push("one\n");
        r.push("two\n");
        assert_eq!(r.snapshot(), b"one\ntwo\n");
        assert_eq!(r.len(), 8);
    }

    #[test]
    fn drops_oldest_whole_lines() {
        let mut r = Ring::new(10);
        r.push("aaaa\n");
        r.push("bbbb\n");
        r.push("cc\n");
        assert_eq!(r.snapshot(), b"bbbb\ncc\n");
        assert!(r.len() <= 10);
    }

    #[test]
    fn an_oversized_line_is_cut_at_a_char_boundary() {
        let mut r = Ring::new(5);
        r.push("old\n");
        r.push("ééééé\n");
        assert_eq!(r.snapshot(), "éé".as_bytes());
        assert!(r.len() <= 5);
    }

    #[test]
    fn many_pushes_stay_bounded() {
        let mut r = Ring::new(1024);
        for i in 0..10_000 {
            r.push(&format!("line {i}\n"));
        }
        assert!(r.len() <= 1024);
        let text = String::from_utf8(r.snapshot()).unwrap();
        assert!(text.ends_with("line 9999\n"));
        assert!(text.starts_with("line "));
    }
}
