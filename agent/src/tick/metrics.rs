//! Metrics step: the host's services and the tick in figures (`metrics::figures`), written
//! to `metrics.file` for node_exporter's textfile collector. The file is replaced
//! atomically (temp file, fsync, rename), so the collector reads the last file or the new
//! one, never half of one; its temp name does not end in `.prom`, which the collector
//! skips. Readable by all (0644): node_exporter runs as its own user. A failed write is a
//! line, never a failed tick.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ferry_bucket::atomic_file;

/// Writes `text` to `file`; the line to report when it could not.
pub fn write(file: &Path, text: &str) -> Option<String> {
    let failed = |e: std::io::Error| {
        Some(format!(
            "metrics: cannot write metrics.file {}: {e} (the tick's outcome stands)",
            file.display()
        ))
    };
    // The agent is this file's only writer, under the tick lock: temps a cut-off write
    // left beside it are its own.
    if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
        let _ = atomic_file::remove_temps(dir, &name.to_string_lossy());
    }
    let written = atomic_file::write_with(file, 0o644, |f| {
        // The mode again, past the agent's umask (the module's unit has 0077).
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())
    });
    written.err().and_then(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_readable_by_all_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.prom");
        let leftover = dir.path().join(".ferry.prom.tmp-0123456789abcdef");
        std::fs::write(&leftover, "ferry_agent_info{ver").unwrap();
        assert_eq!(write(&file, "a 1\n"), None);
        assert_eq!(write(&file, "a 2\n"), None);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ferry.prom"]);
    }

    #[test]
    fn a_write_that_fails_is_a_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing").join("ferry.prom");
        let line = write(&file, "a 1\n").unwrap();
        assert!(
            line.starts_with(&format!(
                "metrics: cannot write metrics.file {}: No such file or directory",
                file.display()
            )),
            "{line}"
        );
    }
}
