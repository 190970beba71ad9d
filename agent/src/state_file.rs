//! Loading and saving the state file: a missing file is a fresh host, a corrupt or unreadable
//! one is moved aside and reported (the tick then rebuilds from the unit files on disk), and
//! saving is atomic.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::state::State;
use ferry_bucket::atomic_file;

/// Load the state at `path`; the note says what was unusual, for the tick's report.
pub fn load(path: &Path) -> (State, Option<String>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                State::default(),
                Some(format!(
                    "no state file at {} yet: fresh start",
                    path.display()
                )),
            );
        }
        Err(e) => {
            return (
                State::default(),
                Some(format!(
                    "cannot read state file {}: {e}; starting from the unit files on disk",
                    path.display()
                )),
            );
        }
    };
    match State::parse(&bytes) {
        Ok(s) => (s, None),
        Err(e) => {
            let aside = aside_path(path);
            let moved = match std::fs::rename(path, &aside) {
                Ok(()) => format!("moved to {}", aside.display()),
                Err(re) => format!("could not move it aside: {re}"),
            };
            (
                State::default(),
                Some(format!(
                    "{} {e} ({moved}); rebuilt from the unit files on disk",
                    path.display()
                )),
            )
        }
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".corrupt-{stamp}"));
    path.with_file_name(name)
}

/// Save `state` to `path` atomically, creating the directory if needed.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
    }
    atomic_file::write(path, &state.to_bytes(), 0o600)
        .with_context(|| format!("writing state file {}", path.display()))
}

/// Removes the temp files interrupted saves left beside the state file and among the unit
/// files (a power loss between creating one and renaming it); returns their paths. Only
/// under the tick lock: the agent is then their only writer.
pub fn remove_temps(state_file: &Path, unit_dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let name = state_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state_dir = state_file.parent().unwrap_or(Path::new("."));
    for (dir, prefix) in [(state_dir, name.as_str()), (unit_dir, "ferry-")] {
        match atomic_file::remove_temps(dir, prefix) {
            Ok(names) => {
                removed.extend(names.into_iter().map(|n| dir.join(n).display().to_string()))
            }
            Err(e) => tracing::warn!("cannot clear temp files in {}: {e}", dir.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_corrupt_and_good() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let (s, note) = load(&p);
        assert_eq!(s, State::default());
        assert!(note.unwrap().contains("fresh start"));
        std::fs::write(&p, b"{\"version\": 1, \"services\": {").unwrap();
        let (s, note) = load(&p);
        assert_eq!(s, State::default());
        assert!(note.unwrap().contains("corrupt"));
        assert!(!p.exists());
        save(&p, &State::default()).unwrap();
        let (_, note) = load(&p);
        assert_eq!(note, None);
    }

    #[test]
    fn temps_of_interrupted_saves_do_not_block_saving_and_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        std::fs::create_dir(&units).unwrap();
        let p = dir.path().join("state.json");
        // What a save cut off by a power loss left, named as this process would name it.
        let leftover = dir.path().join(format!(
            ".state.json.tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&leftover, b"{\"version\": 1, \"serv").unwrap();
        let unit_tmp = units.join(".ferry-web.service.tmp-123-ThreadId(1)");
        std::fs::write(&unit_tmp, b"[Unit]").unwrap();
        save(&p, &State::default()).unwrap();
        assert_eq!(load(&p).1, None);
        let removed = remove_temps(&p, &units);
        assert_eq!(
            removed,
            [
                leftover.display().to_string(),
                unit_tmp.display().to_string()
            ]
        );
        assert!(p.exists() && !leftover.exists() && !unit_tmp.exists());
    }
}
