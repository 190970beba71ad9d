//! Collecting problems, and the small vocabulary messages are written in (quoting user
//! text so a message is always one line, naming a service, building JSON Pointers).

use super::Problem;

/// Problems found so far.
#[derive(Debug, Default)]
pub struct Report {
    problems: Vec<Problem>,
}

impl Report {
    /// Records an error.
    pub fn error(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::error(pointer, message));
    }

    /// Records a warning.
    pub fn warn(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::warning(pointer, message));
    }

    /// Pointers of the errors so far.
    pub fn error_pointers(&self) -> Vec<String> {
        self.problems
            .iter()
            .filter(|p| p.is_error())
            .map(|p| p.pointer.clone())
            .collect()
    }

    /// The problems, grouped by service in manifest order (document-level ones first),
    /// otherwise in the order found.
    pub fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| service_index(&p.pointer));
        self.problems
    }
}

/// The service index a pointer is under, if any.
fn service_index(pointer: &str) -> Option<usize> {
    pointer
        .strip_prefix("/services/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// User text in backquotes, with control characters escaped so it cannot break the line.
pub fn q(s: &str) -> String {
    format!("`{}`", s.escape_debug())
}

/// How messages name a service: "service `web`".
pub fn who(name: &str) -> String {
    format!("service {}", q(name))
}

/// One JSON Pointer reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// `/services/<i>`.
pub fn service_pointer(i: usize) -> String {
    format!("/services/{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_escaped() {
        assert_eq!(token("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn quoting_keeps_one_line() {
        assert_eq!(q("a\nb"), "`a\\nb`");
    }

    #[test]
    fn problems_group_by_service() {
        let mut r = Report::default();
        r.error("/services/10/name", "x");
        r.error("/services/2/name", "y");
        r.error("/version", "z");
        let order: Vec<String> = r.into_problems().into_iter().map(|p| p.pointer).collect();
        assert_eq!(order, ["/version", "/services/2/name", "/services/10/name"]);
    }
}
