//! The hidden `completions` and `man` verbs that `ferry` and `ferry-agent` share: shell
//! completions and man pages generated from each binary's command-line definition itself, so
//! they cannot drift from it. nix/package.nix calls both in `postInstall`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap_complete::Shell;

/// `completions SHELL`: print the completion script for SHELL.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `man [--out DIR]`: the manual pages.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per verb (`BIN.1`, `BIN-VERB.1`) into this directory instead of
    /// printing the main page.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The completion script for `shell`, completing the binary `cmd` is named after.
pub fn completion_script(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// Man pages for `cmd`: `(file name, roff)` for the binary and, recursively, each visible
/// verb (`BIN-VERB.1`, clap's display name for it).
pub fn man_pages(cmd: clap::Command) -> Result<Vec<(String, Vec<u8>)>> {
    // `build` gives every verb its display name and propagates globals and the version,
    // as parsing would; `help` is not a verb worth a page.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    // Every page's footer names the program and its version, not the verb.
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut pages = Vec::new();
    collect_pages(cmd, &source, &mut pages)?;
    Ok(pages)
}

fn collect_pages(
    cmd: clap::Command,
    source: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let verbs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|v| !v.is_hide_set())
        .cloned()
        .collect();
    let man = clap_mangen::Man::new(cmd).source(source);
    let name = man.get_filename();
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("rendering the man page {name}"))?;
    pages.push((name, page));
    for verb in verbs {
        collect_pages(verb, source, pages)?;
    }
    Ok(())
}

/// Prints the completion script for `args.shell`.
pub fn run_completions(cmd: clap::Command, args: &CompletionsArgs) -> Result<()> {
    write_stdout(&completion_script(cmd, args.shell))
}

/// Prints the main man page, or writes every page into `args.out`.
pub fn run_man(cmd: clap::Command, args: &ManArgs) -> Result<()> {
    let pages = man_pages(cmd)?;
    match &args.out {
        None => write_stdout(pages.first().map_or(&[][..], |(_, page)| page)),
        Some(dir) => write_pages(dir, &pages),
    }
}

fn write_pages(dir: &Path, pages: &[(String, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the man page directory {}", dir.display()))?;
    for (name, page) in pages {
        let path = dir.join(name);
        std::fs::write(&path, page)
            .with_context(|| format!("writing the man page {}", path.display()))?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("demo")
            .version("1.2.3")
            .subcommand(clap::Command::new("deploy").about("Deploy it"))
            .subcommand(clap::Command::new("undo").about("Undo it"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn every_shell_completes_the_verbs() -> Result<()> {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion_script(cli(), shell))?;
            assert!(
                script.contains("deploy") && script.contains("undo"),
                "{shell}: {script}"
            );
        }
        Ok(())
    }

    #[test]
    fn one_page_per_visible_verb() -> Result<()> {
        let pages = man_pages(cli())?;
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["demo.1", "demo-deploy.1", "demo-undo.1"]);
        let deploy = String::from_utf8(pages[1].1.clone())?;
        assert!(
            deploy.starts_with(".ie") || deploy.contains(".TH demo-deploy"),
            "{deploy}"
        );
        assert!(deploy.contains("Deploy it"), "{deploy}");
        assert!(deploy.contains("\"demo 1.2.3\""), "{deploy}");
        Ok(())
    }

    #[test]
    fn man_out_writes_every_page() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("man1");
        run_man(
            cli(),
            &ManArgs {
                out: Some(out.clone()),
            },
        )?;
        let mut written: Vec<String> = std::fs::read_dir(&out)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        written.sort();
        assert_eq!(written, ["demo-deploy.1", "demo-undo.1", "demo.1"]);
        Ok(())
    }
}
