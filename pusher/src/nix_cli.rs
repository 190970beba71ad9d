//! The Nix commands `ferry` runs, built as values first (so the exact argv is tested without
//! running anything) and run by [`run`], which names the command when it fails.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Nix 2.8 hides the `nix` command behind this flag; newer versions accept it silently.
const FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// A command to run: program and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCommand {
    /// The program.
    pub program: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
}

impl NixCommand {
    fn new(program: &'static str, args: &[&str]) -> Self {
        Self {
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// As a `std::process::Command`.
    pub fn to_command(&self) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.args);
        cmd
    }

    fn display(&self) -> String {
        format!("{} {}", self.program, self.args.join(" "))
    }
}

/// How an installable is turned into a store path.
pub fn build_command(installable: &str) -> NixCommand {
    if installable.ends_with(".nix") && Path::new(installable).is_file() {
        return NixCommand::new("nix-build", &["--no-out-link", installable]);
    }
    let mut args: Vec<&str> = FEATURES.to_vec();
    args.extend(["build", "--no-link", "--print-out-paths", installable]);
    NixCommand::new("nix", &args)
}

/// The closure of `paths` as JSON.
pub fn path_info_command(paths: &[String]) -> NixCommand {
    let mut args: Vec<&str> = FEATURES.to_vec();
    args.extend(["path-info", "--recursive", "--json"]);
    args.extend(paths.iter().map(String::as_str));
    NixCommand::new("nix", &args)
}

/// The NAR serialisation of one store path on stdout.
pub fn dump_command(path: &str) -> NixCommand {
    NixCommand::new("nix-store", &["--dump", path])
}

/// Runs `cmd` and returns its stdout; a failure names the command and shows Nix's stderr.
pub fn run(cmd: &NixCommand) -> Result<String> {
    let out = cmd.to_command().output().with_context(|| {
        format!(
            "running `{}` (is Nix installed and on PATH?)",
            cmd.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", cmd.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_of_each_command() {
        assert_eq!(
            build_command(".#web").args,
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--no-link",
                "--print-out-paths",
                ".#web"
            ]
        );
        assert_eq!(build_command(".#web").program, "nix");
        // A .nix name that is not a file is an installable for `nix build`.
        assert_eq!(build_command("/nonexistent/x.nix").program, "nix");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("default.nix");
        std::fs::write(&file, "1").unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(
            build_command(f),
            NixCommand::new("nix-build", &["--no-out-link", f])
        );
        assert_eq!(
            path_info_command(&["/nix/store/a-x".into()]).args,
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "path-info",
                "--recursive",
                "--json",
                "/nix/store/a-x"
            ]
        );
        assert_eq!(
            dump_command("/nix/store/a-x").args,
            ["--dump", "/nix/store/a-x"]
        );
    }
}
