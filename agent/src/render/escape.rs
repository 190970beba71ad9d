//! Quoting values for systemd unit files, so that what the service sees is byte-for-byte what
//! the manifest said (see systemd.syntax(7) and systemd.service(5) "Command lines").

/// Quote one `ExecStart=` word: double quotes with C escapes, `%` doubled (specifiers) and
/// `$` doubled (ExecStart expands `$VAR` and `${VAR}`).
pub fn exec_word(word: &str) -> String {
    quote(word, true)
}

/// Quote one `Environment=` assignment `KEY=value`. Environment= expands specifiers but not
/// `$`, so only `%` is doubled; quotes, backslashes and control characters are C-escaped.
pub fn environment(key: &str, value: &str) -> String {
    quote(&format!("{key}={value}"), false)
}

/// A plain unit-file value (a path or unit name) in which only specifiers are special.
pub fn specifiers(value: &str) -> String {
    value.replace('%', "%%")
}

fn quote(s: &str, dollar: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' if dollar => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_word_escapes_everything_systemd_interprets() {
        assert_eq!(exec_word("plain"), "\"plain\"");
        assert_eq!(exec_word("a b"), "\"a b\"");
        assert_eq!(exec_word(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(exec_word(r"C:\dir"), r#""C:\\dir""#);
        assert_eq!(exec_word("50%"), "\"50%%\"");
        assert_eq!(exec_word("$HOME ${X}"), "\"$$HOME $${X}\"");
        assert_eq!(exec_word("a\nb\x01"), "\"a\\nb\\x01\"");
        assert_eq!(exec_word(""), "\"\"");
    }

    #[test]
    fn environment_keeps_dollar_literal() {
        assert_eq!(environment("K", "v"), "\"K=v\"");
        assert_eq!(environment("K", "$x"), "\"K=$x\"");
        assert_eq!(environment("K", r#"a"b\c%d"#), r#""K=a\"b\\c%%d""#);
        assert_eq!(environment("K", "x y"), "\"K=x y\"");
    }

    #[test]
    fn specifiers_are_doubled() {
        assert_eq!(specifiers("/var/lib/100%/x"), "/var/lib/100%%/x");
    }
}
