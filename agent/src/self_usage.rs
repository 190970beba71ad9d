//! The agent's own resource use (peak RSS, CPU time) from `/proc/self`, for the tick's
//! summary line: the no-op tick has a footprint budget, and the numbers prove it on a host.

/// Peak resident set size in KiB (`VmHWM` in `/proc/self/status`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// User + system CPU time in milliseconds (`/proc/self/stat` fields 14 and 15).
pub fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks * 1000 / USER_HZ)
}

/// Linux reports CPU times in USER_HZ, which is 100 on every architecture it ships on.
const USER_HZ: u64 = 100;

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; fields after its closing paren are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t   12345 kB\n"), Some(12345));
        let stat = "42 (ferry agent) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
        assert!(peak_rss_kib().is_some());
        assert!(cpu_ms().is_some());
    }
}
