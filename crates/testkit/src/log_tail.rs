//! The last lines a fixture's child process wrote, kept for error messages (a test that fails
//! because the IdP, Redis or the browser driver did shows what it said last).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// A bounded, shared buffer of lines: cheap to clone (the clones share it), safe to fill from a
/// reader thread or task while the test reads it.
#[derive(Debug, Clone)]
pub(crate) struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    max: usize,
}

impl LogTail {
    pub(crate) fn new(max: usize) -> Self {
        LogTail {
            lines: Arc::default(),
            max: max.max(1),
        }
    }

    /// Keeps `line`, dropping the oldest one when full.
    pub(crate) fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == self.max {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The lines kept, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_in_order() {
        let tail = LogTail::new(2);
        let writer = tail.clone();
        for l in ["a", "b", "c"] {
            writer.push(l.to_owned());
        }
        assert_eq!(tail.lines(), ["b", "c"]);
    }
}
