//! The source revision recorded with a push: the git commit of the working directory.

use std::process::Command;

/// `git rev-parse HEAD` in the current directory, when it is a git checkout.
pub fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let rev = text.trim();
    (!rev.is_empty()).then(|| rev.to_owned())
}
