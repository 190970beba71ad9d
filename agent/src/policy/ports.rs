//! The ports services may listen on (`allowedPorts` in agent.toml), as the host policy
//! judges them.

use serde::{Deserialize, Serialize};

/// An inclusive range of TCP ports, written `FIRST-LAST` (`8000-8999`) or as one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// The lowest port in the range.
    pub first: u16,
    /// The highest port in the range.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> Self {
        r.to_string()
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a port range like \"8000-8999\"");
        let (a, b) = text.split_once('-').unwrap_or((&text, &text));
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(format!(
                "{text:?}: the range must run from a port of 1 or more up to a port no lower"
            ));
        }
        Ok(Self { first, last })
    }
}
