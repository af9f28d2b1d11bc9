//! A set of HTTP status codes, as a bitmap: which answers count as failures for breakers and
//! passive health. A lookup is one shift and mask.

use http::StatusCode;

/// A set of status codes 100..=599.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    /// No status.
    pub const fn empty() -> Self {
        Self([0; 10])
    }

    /// The default failure statuses: 502, 503 and 504.
    pub fn gateway_errors() -> Self {
        let mut s = Self::empty();
        s.insert_range(502, 504);
        s
    }

    /// Adds `from..=to` (codes outside 100..=599 are ignored).
    pub fn insert_range(&mut self, from: u16, to: u16) {
        for c in from.max(100)..=to.min(599) {
            self.0[(c / 64) as usize] |= 1 << (c % 64);
        }
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        code < 640 && self.0[(code / 64) as usize] & (1 << (code % 64)) != 0
    }

    /// Whether `status` is in the set.
    pub fn has(&self, status: StatusCode) -> bool {
        self.contains(status.as_u16())
    }

    /// The codes, ascending.
    pub fn codes(&self) -> Vec<u16> {
        (100..600).filter(|c| self.contains(*c)).collect()
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::gateway_errors()
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.codes()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_502_to_504() {
        let s = StatusSet::default();
        assert_eq!(s.codes(), vec![502, 503, 504]);
        assert!(!s.contains(500));
        assert!(!s.contains(700));
    }

    #[test]
    fn ranges_and_classes() {
        let mut s = StatusSet::empty();
        s.insert_range(500, 599);
        s.insert_range(429, 429);
        assert!(s.contains(429) && s.contains(500) && s.contains(599));
        assert!(!s.contains(428) && !s.contains(404));
        assert_eq!(s.codes().len(), 101);
    }
}
