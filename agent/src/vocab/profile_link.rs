//! The name Nix gives generation `n` of a profile `<base>`: `<base>-<n>-link`, beside the
//! profile link `<base>` itself. Service profiles, the system profile and the host policy's
//! reserved names all read it here.

/// `(base, n)` when `name` is `<base>-<n>-link` with a non-empty `base` and a decimal `n`.
pub fn generation_link(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_suffix("-link")?;
    let (base, n) = rest.rsplit_once('-')?;
    (!base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then_some((base, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_links_and_what_is_not_one() {
        assert_eq!(generation_link("web-12-link"), Some(("web", "12")));
        assert_eq!(generation_link("web-1-1-link"), Some(("web-1", "1")));
        assert_eq!(generation_link("system-42-link"), Some(("system", "42")));
        for not in ["web-link", "web--link", "web", "system-x-link", "-3-link"] {
            assert_eq!(generation_link(not), None, "{not}");
        }
    }
}
