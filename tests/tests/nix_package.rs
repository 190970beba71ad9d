//! nix/package.nix installs shell completions and man pages that cover the real CLIs: its
//! `postInstall` script (evaluated by the real Nix through nix/tests/eval-package.nix) runs
//! in bash against the workspace's `ferry` and `ferry-agent`, with a stand-in for nixpkgs'
//! installShellFiles hook, and every visible verb of each binary must show up in the
//! bash, zsh and fish completions and have its own man page.

mod nix_common;

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

/// What nixpkgs' installShellFiles hook does with the arguments package.nix passes it
/// (`--cmd NAME` then `--bash/--zsh/--fish FILE`; man pages by their section suffix), into
/// the same folders under `$out`.
const INSTALL_SHELL_FILES: &str = r#"
installShellCompletion() {
  local cmd="" shell=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --cmd) cmd="$2"; shift 2 ;;
      --bash|--zsh|--fish) shell="${1#--}"; shift ;;
      *)
        [ -n "$cmd" ] && [ -n "$shell" ] || { echo "installShellCompletion: no --cmd/shell for $1" >&2; return 1; }
        case "$shell" in
          bash) install -D -m 644 "$1" "$out/share/bash-completion/completions/$cmd.bash" ;;
          zsh) install -D -m 644 "$1" "$out/share/zsh/site-functions/_$cmd" ;;
          fish) install -D -m 644 "$1" "$out/share/fish/vendor_completions.d/$cmd.fish" ;;
        esac
        shift ;;
    esac
  done
}
installManPage() {
  local page
  for page in "$@"; do
    case "$page" in
      *.1) install -D -m 644 "$page" "$out/share/man/man1/$(basename "$page")" ;;
      *) echo "installManPage: no section suffix: $page" >&2; return 1 ;;
    esac
  done
}
"#;

/// The build's view of package.nix for callPackage arguments `args` (a Nix attribute set).
fn package(args: &str, can_execute: bool) -> Result<Value> {
    nix_common::eval_json(&format!(
        "import ./nix/tests/eval-package.nix {{ args = {args}; canExecute = {can_execute}; }}"
    ))
}

/// The visible verbs of `bin`, from the "Commands:" section of its `--help`.
fn verbs(bin: &Path) -> Result<Vec<String>> {
    let output = Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    let help = String::from_utf8(output.stdout)?;
    let verbs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Verb lines are indented by two; wrapped descriptions by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_owned)
        .collect();
    ensure!(
        verbs.len() >= 3,
        "{} --help lists no verbs:\n{help}",
        bin.display()
    );
    Ok(verbs)
}

/// Runs package.nix's postInstall in `build` with `$out/bin` holding the workspace's
/// binaries, and returns `$out`.
fn run_post_install(script: &str, build: &Path, binaries: &[&str]) -> Result<std::path::PathBuf> {
    let out = build.join("out");
    std::fs::create_dir_all(out.join("bin"))?;
    for bin in binaries {
        let real = ferry_tests::binaries::built_binary(
            bin,
            &format!("{}_BIN", bin.replace('-', "_").to_uppercase()),
        )?;
        std::os::unix::fs::symlink(&real, out.join("bin").join(bin))?;
    }
    let output = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("{INSTALL_SHELL_FILES}\n{script}"),
        ])
        .env("out", &out)
        .current_dir(build)
        .output()
        .context("running bash")?;
    ensure!(
        output.status.success(),
        "package.nix postInstall failed:\n{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{} was not installed", path.display()))?;
    ensure!(!text.trim().is_empty(), "{} is empty", path.display());
    Ok(text)
}

#[test]
fn completions_and_man_pages_cover_every_verb() -> Result<()> {
    let pkg = package("{}", true)?;
    let script = pkg["postInstall"].as_str().context("no postInstall")?;
    let build = tempfile::tempdir()?;
    let out = run_post_install(script, build.path(), &["ferry", "ferry-agent"])?;
    for bin in ["ferry", "ferry-agent"] {
        let verbs = verbs(&out.join("bin").join(bin))?;
        let bash = read(&out.join(format!("share/bash-completion/completions/{bin}.bash")))?;
        let zsh = read(&out.join(format!("share/zsh/site-functions/_{bin}")))?;
        let fish = read(&out.join(format!("share/fish/vendor_completions.d/{bin}.fish")))?;
        assert!(zsh.starts_with(&format!("#compdef {bin}")), "{zsh}");
        // clap names the function after the binary with `-` spelt `__`.
        let function = bin.replace('-', "__");
        assert!(
            bash.contains(&format!("complete -F _{function} ")),
            "{bash}"
        );
        let main = read(&out.join(format!("share/man/man1/{bin}.1")))?;
        assert!(main.contains(&format!(".TH {bin} 1")), "{main}");
        for verb in &verbs {
            assert!(
                bash.contains(&format!("__subcmd__{verb})")),
                "bash completion of {bin} misses {verb}"
            );
            assert!(
                zsh.contains(&format!("'{verb}:")),
                "zsh completion of {bin} misses {verb}"
            );
            assert!(
                fish.contains(&format!("-a \"{verb}\"")),
                "fish completion of {bin} misses {verb}"
            );
            assert!(main.contains(verb), "{bin}.1 does not list {verb}");
            let page = read(&out.join(format!("share/man/man1/{bin}-{verb}.1")))?;
            assert!(page.contains(&format!(".TH {bin}-{verb} 1")), "{page}");
        }
    }
    // The packagers' verbs are hidden: no man page of their own.
    assert!(!out.join("share/man/man1/ferry-completions.1").exists());
    assert!(!out.join("share/man/man1/ferry-agent-man.1").exists());
    Ok(())
}

#[test]
fn agent_package_installs_only_the_agent() -> Result<()> {
    let pkg = package(
        r#"{ pname = "ferry-agent"; crates = ["ferry-agent"]; mainProgram = "ferry-agent"; }"#,
        true,
    )?;
    assert_eq!(
        pkg["cargoBuildFlags"],
        serde_json::json!(["--package", "ferry-agent"])
    );
    assert_eq!(pkg["meta"]["mainProgram"], "ferry-agent");
    let script = pkg["postInstall"].as_str().context("no postInstall")?;
    let build = tempfile::tempdir()?;
    let out = run_post_install(script, build.path(), &["ferry-agent"])?;
    read(&out.join("share/man/man1/ferry-agent-reconcile.1"))?;
    read(&out.join("share/zsh/site-functions/_ferry-agent"))?;
    assert!(!out.join("share/man/man1/ferry.1").exists());
    Ok(())
}

#[test]
fn cross_builds_skip_what_needs_running_the_binaries() -> Result<()> {
    let pkg = package("{}", false)?;
    assert_eq!(pkg["postInstall"], "");
    // installShellFiles stays a build input either way (it is only a hook).
    assert!(
        pkg["nativeBuildInputs"]
            .as_array()
            .is_some_and(|i| i.contains(&Value::from("installShellFiles")))
    );
    Ok(())
}
