//! The agent's `tick:` summary line (`tick: outcome=ok reloads=0 unitsTouched=0 requests=1
//! caddyRequests=1 routeWrites=0 ms=31 cpuMs=20 peakRssKiB=17000`) read into its fields,
//! so tests and benchmarks compare numbers: a substring such as `requests=1` also matches
//! `requests=12`, and a missing field would match nothing silently.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};

use crate::Output;

/// What the agent prints for a figure it could not read (`/proc` unreadable).
pub const UNKNOWN: &str = "unknown";

/// One `tick:` line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickSummary {
    line: String,
    fields: BTreeMap<String, String>,
}

impl TickSummary {
    /// Parses one line that starts with `tick: `; every word after it must be `key=value`.
    pub fn parse(line: &str) -> Result<TickSummary> {
        let rest = line
            .strip_prefix("tick: ")
            .with_context(|| format!("not a tick summary line: {line:?}"))?;
        let mut fields = BTreeMap::new();
        for word in rest.split_whitespace() {
            let (key, value) = word
                .split_once('=')
                .with_context(|| format!("{word:?} is not key=value in {line:?}"))?;
            if fields.insert(key.to_owned(), value.to_owned()).is_some() {
                bail!("{key} appears twice in {line:?}");
            }
        }
        Ok(TickSummary {
            line: line.to_owned(),
            fields,
        })
    }

    /// The one `tick:` line of a `ferry-agent reconcile`'s output.
    pub fn of(out: &Output) -> Result<TickSummary> {
        let mut lines = out.stdout.lines().filter(|l| l.starts_with("tick: "));
        let line = lines.next().with_context(|| {
            format!(
                "no tick: line in the agent's output:\n{}{}",
                out.stdout, out.stderr
            )
        })?;
        if lines.next().is_some() {
            bail!("more than one tick: line in one reconcile:\n{}", out.stdout);
        }
        Self::parse(line)
    }

    /// `outcome` (ok, failed, refused, unreachable).
    pub fn outcome(&self) -> Result<&str> {
        self.text("outcome")
    }

    /// A field as written.
    pub fn text(&self, key: &str) -> Result<&str> {
        self.fields
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("no {key}= in {:?}", self.line))
    }

    /// A numeric field; an error when it is missing, `unknown` or not a number.
    pub fn get(&self, key: &str) -> Result<u64> {
        self.measured(key)?
            .with_context(|| format!("{key} is {UNKNOWN} in {:?}", self.line))
    }

    /// A figure the agent may not have been able to read: `None` when it printed
    /// [`UNKNOWN`]; an error when the field is missing or is neither.
    pub fn measured(&self, key: &str) -> Result<Option<u64>> {
        let text = self.text(key)?;
        if text == UNKNOWN {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .with_context(|| format!("{key}={text} is not a number in {:?}", self.line))
    }

    /// Whether the tick changed nothing on the host: outcome ok, no reload, no unit
    /// touched, no route written.
    pub fn is_noop(&self) -> Result<bool> {
        Ok(self.outcome()? == "ok"
            && self.get("reloads")? == 0
            && self.get("unitsTouched")? == 0
            && self.get("routeWrites")? == 0)
    }
}

impl fmt::Display for TickSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "tick: outcome=ok reloads=0 unitsTouched=0 requests=12 caddyRequests=1 routeWrites=0 ms=31 cpuMs=unknown peakRssKiB=17000";

    #[test]
    fn fields_are_numbers_not_substrings() -> Result<()> {
        let t = TickSummary::parse(LINE)?;
        assert_eq!(t.outcome()?, "ok");
        // `requests=1` is a substring of the line; the field is 12.
        assert!(LINE.contains("requests=1"));
        assert_eq!(t.get("requests")?, 12);
        assert_eq!(t.get("caddyRequests")?, 1);
        assert_eq!(t.measured("peakRssKiB")?, Some(17000));
        assert_eq!(t.measured("cpuMs")?, None);
        assert!(
            t.get("cpuMs")
                .is_err_and(|e| e.to_string().contains("unknown"))
        );
        assert!(
            t.get("absent")
                .is_err_and(|e| e.to_string().contains("no absent="))
        );
        assert!(t.is_noop()?);
        assert_eq!(t.to_string(), LINE);
        Ok(())
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "phases: pullMs=0",
            "tick: outcome=ok reloads",
            "tick: ms=1 ms=2",
        ] {
            assert!(TickSummary::parse(bad).is_err(), "{bad}");
        }
        let t = TickSummary::parse("tick: outcome=ok ms=x").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            t.get("ms")
                .is_err_and(|e| e.to_string().contains("not a number"))
        );
    }

    #[test]
    fn one_line_per_reconcile() {
        let out = |stdout: &str| Output {
            status: 0,
            stdout: stdout.to_owned(),
            stderr: String::new(),
        };
        let one = TickSummary::of(&out(&format!("web: unchanged\n{LINE}\nphases: x=1\n")));
        assert_eq!(one.map(|t| t.to_string()).ok().as_deref(), Some(LINE));
        assert!(TickSummary::of(&out("web: unchanged\n")).is_err());
        assert!(TickSummary::of(&out(&format!("{LINE}\n{LINE}\n"))).is_err());
    }
}
