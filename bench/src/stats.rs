//! Summaries of repeated measurements for the whole-flow benchmarks (bed examples under
//! `bench/examples/`): median, 90th and 95th percentiles, goal ratios, and a plain-text
//! table.

/// The median and 90th and 95th percentiles of some measurements (nearest-rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many measurements.
    pub n: usize,
    /// The median.
    pub median: f64,
    /// The 90th percentile (nearest rank: the smallest value ≥ 90 % of the measurements).
    pub p90: f64,
    /// The 95th percentile (nearest rank).
    pub p95: f64,
    /// The smallest measurement.
    pub min: f64,
    /// The largest measurement.
    pub max: f64,
}

/// Summarises `values`; `None` when there are none (or one is NaN).
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    // Nearest rank: ceil(p n), 1-based.
    let nearest = |percent: usize| sorted[(n * percent).div_ceil(100).max(1) - 1];
    Some(Summary {
        n,
        median,
        p90: nearest(90),
        p95: nearest(95),
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// A table printed with aligned columns: a header row, then rows of the same width.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (missing cells print empty, extra cells are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: the first column left-aligned, the others right-aligned, two
    /// spaces between columns, a rule under the header.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, width)| {
                    let cell = row.get(c).map_or("", String::as_str);
                    if c == 0 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if index == 0 {
                let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out
    }
}

/// How many rounds a whole-flow benchmark runs: `BENCH_ROUNDS`, else `default`.
pub fn rounds(default: usize) -> anyhow::Result<usize> {
    match std::env::var("BENCH_ROUNDS") {
        Ok(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("BENCH_ROUNDS must be a number ({v:?}: {e})")),
        Err(_) => Ok(default),
    }
}

/// The round trip a whole-flow benchmark adds between its clients and the bucket (through
/// `ferry_tests::latency`): `BENCH_RTT_MS` milliseconds, else `default`.
pub fn rtt(default_ms: u64) -> anyhow::Result<std::time::Duration> {
    let ms = match std::env::var("BENCH_RTT_MS") {
        Ok(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("BENCH_RTT_MS must be whole milliseconds ({v:?}: {e})"))?,
        Err(_) => default_ms,
    };
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_p90_and_p95_by_nearest_rank() {
        let s = summarize(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap_or_else(|| panic!("no summary"));
        assert_eq!(
            (s.n, s.median, s.p90, s.min, s.max),
            (5, 3.0, 5.0, 1.0, 5.0)
        );
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = summarize(&values).unwrap_or_else(|| panic!("no summary"));
        assert_eq!((s.median, s.p90, s.p95), (10.5, 18.0, 19.0));
        let s = summarize(&[7.0]).unwrap_or_else(|| panic!("no summary"));
        assert_eq!((s.median, s.p90, s.p95), (7.0, 7.0, 7.0));
    }

    #[test]
    fn nothing_or_nan_has_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["what", "ms"]);
        t.row(vec!["zbus".into(), "1.5".into()]);
        t.row(vec!["systemctl".into(), "12.25".into()]);
        assert_eq!(
            t.render(),
            "what          ms\n----------------\nzbus         1.5\nsystemctl  12.25\n"
        );
    }
}
