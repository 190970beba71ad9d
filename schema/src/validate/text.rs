//! Rules for text that ends up in unit files and paths: no control characters, and paths
//! that are normalised and stay where they belong.

use crate::names::describe_char;

/// The first control character in `s` (newline, NUL, escape…) or Unicode line or
/// paragraph separator, if any.
pub fn first_control(s: &str) -> Option<char> {
    s.chars().find(|c| is_line_breaking(*c))
}

/// A control character or a Unicode line or paragraph separator (U+2028, U+2029: newlines
/// to many readers): nothing that may reach a unit file, a path or a line of output.
pub fn is_line_breaking(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Characters allowed in a path component Ferry writes into a unit file: no whitespace, no
/// quotes, no `%` (systemd specifiers) or `$` (variable expansion), no `\`.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@' | '=' | ',' | ':')
}

/// Checks a relative path such as `bin/web` or `libexec/web/serve`: non-empty components
/// of safe characters, no `.` or `..`, no leading or doubled `/`. The error says why.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("it is empty".to_owned());
    }
    if path.len() > 4096 {
        return Err("it is longer than 4096 characters".to_owned());
    }
    if let Some(bad) = path.chars().find(|c| !is_path_char(*c) && *c != '/') {
        return Err(format!(
            "it contains {}; use only letters, digits, `/` and . _ - + @ = , :",
            describe_char(bad)
        ));
    }
    for component in path.split('/') {
        match component {
            "" => {
                return Err(
                    "it has an empty component (a leading, trailing or doubled `/`)".to_owned(),
                );
            }
            "." | ".." => {
                return Err(format!(
                    "it has a `{component}` component; write the path without it"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks an absolute, normalised path such as `/var/lib/secrets/web.env`.
pub fn check_absolute_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("it is not absolute (it must start with `/`)".to_owned());
    };
    check_relative_path(rest)
}

/// Characters allowed in an HTTP path prefix: RFC 3986 path characters without those
/// Caddy treats specially (`*` wildcards, `{}` placeholders) and without `?`/`#`.
fn is_url_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '/' | '-'
                | '.'
                | '_'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '@'
                | '%'
        )
}

/// Checks an HTTP path prefix such as `/` or `/api/`: starts with `/`, safe characters,
/// no `.`/`..` segments, no `//`.
pub fn check_url_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("it does not start with `/`".to_owned());
    }
    if let Some(bad) = path.chars().find(|c| !is_url_path_char(*c)) {
        return Err(format!(
            "it contains {}; use letters, digits and URL path characters (no spaces, `*`, `?`, `#`, braces)",
            describe_char(bad)
        ));
    }
    if path.contains("//") {
        return Err("it contains `//`".to_owned());
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("it has a `.` or `..` segment".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_of_every_kind_are_found() {
        for (text, c) in [
            ("a\nb", '\n'),
            ("a\u{85}b", '\u{85}'),
            ("a\u{2028}b", '\u{2028}'),
            ("a\u{2029}b", '\u{2029}'),
            ("\u{7f}", '\u{7f}'),
        ] {
            assert_eq!(first_control(text), Some(c), "{text:?}");
        }
        assert_eq!(first_control("Live 100% é ünïcode"), None);
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative_path("web").is_ok());
        assert!(check_relative_path("libexec/web/serve").is_ok());
        for bad in [
            "", "/x", "a/../b", "./a", "a//b", "a/", "a b", "a%i", "a$b", "a\nb",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn absolute_paths() {
        assert!(check_absolute_path("/var/lib/biz-secrets/podcastitlater-web.env").is_ok());
        for bad in ["var/x", "/var/../etc/shadow", "/var//x", "/var/x/", "/"] {
            assert!(check_absolute_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_paths() {
        assert!(check_url_path("/").is_ok());
        assert!(check_url_path("/api/v1/").is_ok());
        for bad in ["api", "/a b", "/a*", "/{x}", "/a/../b", "//a", "/a?b"] {
            assert!(check_url_path(bad).is_err(), "{bad:?}");
        }
    }
}
