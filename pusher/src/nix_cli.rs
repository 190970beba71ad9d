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

/// How an installable is turned into a store path: `nix-build` for a `.nix` file (it prints
/// one store path a line), else `nix build --json` (`--print-out-paths` came with Nix 2.9;
/// `--json` is in 2.8 too). [`built_path`] reads either's output.
pub fn build_command(installable: &str) -> NixCommand {
    if installable.ends_with(".nix") && Path::new(installable).is_file() {
        return NixCommand::new("nix-build", &["--no-out-link", installable]);
    }
    let mut args: Vec<&str> = FEATURES.to_vec();
    args.extend(["build", "--no-link", "--json", installable]);
    NixCommand::new("nix", &args)
}

/// How `ferry push --system`'s TARGET is built: a `.nix` file is a NixOS configuration
/// (`configuration.nix`), built the way `nixos-rebuild` does without flakes: `nix-build
/// '<nixpkgs/nixos>' -A system -I nixos-config=FILE` (nixpkgs from `NIX_PATH`); anything
/// else is an installable naming the toplevel (`.#nixosConfigurations.biz.config.system.build.toplevel`).
pub fn system_build_command(target: &str) -> NixCommand {
    if target.ends_with(".nix") && Path::new(target).is_file() {
        let config = format!("nixos-config={target}");
        return NixCommand::new(
            "nix-build",
            &[
                "--no-out-link",
                "<nixpkgs/nixos>",
                "-A",
                "system",
                "-I",
                &config,
            ],
        );
    }
    build_command(target)
}

/// The store path a [`build_command`] built, from its stdout: the first line of
/// `nix-build`'s, or the first result's `out` output (or its only one) in `nix build
/// --json`'s `[{"drvPath": …, "outputs": {"out": "/nix/store/…"}}]`.
pub fn built_path(cmd: &NixCommand, stdout: &str) -> Result<String> {
    if cmd.program == "nix-build" {
        return stdout
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .context("nix-build printed no store path");
    }
    let results: Vec<BuildResult> =
        serde_json::from_str(stdout).context("reading `nix build --json`'s output")?;
    let first = results
        .first()
        .context("`nix build --json` reported no build result")?;
    let outputs = match first {
        BuildResult::Built { outputs } => outputs,
        BuildResult::Path { path } => return Ok(path.clone()),
    };
    let path = match (outputs.get("out"), outputs.values().next()) {
        (Some(out), _) => out,
        (None, Some(only)) if outputs.len() == 1 => only,
        _ => bail!(
            "the build has outputs {:?} and none named `out`; name the one to ship (e.g. `.#web.bin`)",
            outputs.keys().collect::<Vec<_>>()
        ),
    };
    Ok(path.clone())
}

/// One entry of `nix build --json`: a derivation's outputs, or a store path that needed no
/// build (an installable naming one).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum BuildResult {
    Built {
        outputs: std::collections::BTreeMap<String, String>,
    },
    Path {
        path: String,
    },
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
                "--json",
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

    #[test]
    fn a_system_target_in_a_nix_file_is_a_nixos_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("configuration.nix");
        std::fs::write(&file, "{ ... }: { }").unwrap();
        let f = file.to_str().unwrap();
        let config = format!("nixos-config={f}");
        assert_eq!(
            system_build_command(f),
            NixCommand::new(
                "nix-build",
                &[
                    "--no-out-link",
                    "<nixpkgs/nixos>",
                    "-A",
                    "system",
                    "-I",
                    &config
                ]
            )
        );
        let flake = ".#nixosConfigurations.biz.config.system.build.toplevel";
        assert_eq!(system_build_command(flake), build_command(flake));
        // nix-build prints the toplevel's path, read like any other nix-build's.
        assert_eq!(
            built_path(&system_build_command(f), "/nix/store/a-nixos-system-biz\n").unwrap(),
            "/nix/store/a-nixos-system-biz"
        );
    }

    #[test]
    fn built_paths_from_nix_build_and_nix_build_json() {
        let legacy = NixCommand::new("nix-build", &["--no-out-link", "a.nix"]);
        assert_eq!(
            built_path(&legacy, "/nix/store/a-x\n/nix/store/b-y\n").unwrap(),
            "/nix/store/a-x"
        );
        assert!(built_path(&legacy, "\n").is_err());
        let flake = build_command(".#web");
        // What Nix 2.8 prints.
        let json = r#"[{"drvPath":"/nix/store/d-web.drv","outputs":{"out":"/nix/store/o-web"}}]"#;
        assert_eq!(built_path(&flake, json).unwrap(), "/nix/store/o-web");
        let two = r#"[{"drvPath":"/d","outputs":{"bin":"/nix/store/b-web-bin","out":"/nix/store/o-web"}}]"#;
        assert_eq!(built_path(&flake, two).unwrap(), "/nix/store/o-web");
        let only = r#"[{"drvPath":"/d","outputs":{"bin":"/nix/store/b-web-bin"}}]"#;
        assert_eq!(built_path(&flake, only).unwrap(), "/nix/store/b-web-bin");
        let neither = r#"[{"drvPath":"/d","outputs":{"bin":"/b","lib":"/l"}}]"#;
        let err = built_path(&flake, neither).unwrap_err().to_string();
        assert!(err.contains("none named `out`"), "{err}");
        // What Nix 2.8 prints for an installable that is a store path.
        let path = r#"[{"path":"/nix/store/o-web"}]"#;
        assert_eq!(built_path(&flake, path).unwrap(), "/nix/store/o-web");
        assert!(built_path(&flake, "[]").is_err());
        assert!(built_path(&flake, "/nix/store/o-web\n").is_err());
    }
}
