//! Running the machine's tools (ip, mount, nsenter, nix, garage) with errors that name the
//! command and show what it printed.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What a finished command printed and how it exited.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code; `-1` when a signal ended it.
    pub status: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// A readable form of a command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd`, feeding it `stdin`, and returns its output whatever its exit status.
pub fn capture(cmd: &mut Command, stdin: &[u8]) -> Result<Output> {
    let shown = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot start `{shown}`: is it installed? (run tests/bed/install.sh)")
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A command that exits without reading its input is not an error here.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{shown}`"))?;
    Ok(out.into())
}

/// Runs `cmd` and fails, naming it and quoting its stderr, unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = capture(cmd, b"")?;
    if !out.success() {
        bail!(
            "`{}` failed with status {}: {}",
            describe(cmd),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out)
}

/// A command from a program and its arguments.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    command
}
