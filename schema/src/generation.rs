//! Manifest generations in order. A generation is an RFC 3339 time (`ferry push` writes
//! `2025-01-15T12:34:56Z`); the agent's replay check and quarantine and the waves' standing
//! compare them as instants, and fall back to comparing the text when either does not parse
//! (validation only warns about such spellings, and the archive sorts them by name too).
//! Pure.

use std::cmp::Ordering;

use chrono::DateTime;

/// How generation `a` compares with generation `b`.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Whether generation `a` is strictly older than `b`.
pub fn is_older(a: &str, b: &str) -> bool {
    compare(a, b) == Ordering::Less
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_not_spellings() {
        assert!(is_older("2025-01-15T12:34:56Z", "2025-01-15T12:34:57Z"));
        assert!(!is_older("2025-01-15T12:34:57Z", "2025-01-15T12:34:56Z"));
        assert!(!is_older("2025-01-15T12:34:56Z", "2025-01-15T12:34:56Z"));
        // The same instant in another zone is not older.
        assert!(!is_older(
            "2025-01-15T13:34:56+01:00",
            "2025-01-15T12:34:56Z"
        ));
        assert!(is_older(
            "2025-01-15T13:34:55+01:00",
            "2025-01-15T12:34:56Z"
        ));
        // Unparsable: by text.
        assert!(is_older("a", "b"));
        assert!(is_older("", "2025-01-15T12:34:56Z"));
    }
}
