//! `ferry validate`: checks manifest files and lists every problem, pointer first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferry_schema::{DEFAULT_SIZE_CAP, Problem, Severity, validate_bytes};
use serde::Serialize;

use crate::cli::{EXIT_FAILED, EXIT_TROUBLE};

/// Check manifest files without publishing anything.
///
/// Prints every problem, one per line, starting with the JSON Pointer of the offending
/// value (`/services/0/http/internalPort: service `web`: ...`). Warnings are marked
/// `warning:` and do not make a manifest invalid.
///
/// Exit status: 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be
/// read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the results as JSON: an array with one object per file
    /// (`file`, `valid`, `problems` with `pointer`, `message`, `severity`; `error` when the
    /// file cannot be read).
    #[arg(long)]
    pub json: bool,
    /// Largest manifest accepted, in bytes (the default is the cap agents apply).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SIZE_CAP)]
    pub max_bytes: usize,
}

/// The outcome for one file.
#[derive(Debug, Serialize)]
struct FileResult {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    problems: Vec<Problem>,
}

/// Validates each file and prints the results.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let results: Vec<FileResult> = args
        .files
        .iter()
        .map(|f| check_file(f, args.max_bytes))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print_text(&results);
    }
    let code = if results.iter().any(|r| r.error.is_some()) {
        EXIT_TROUBLE
    } else if results.iter().any(|r| !r.valid) {
        EXIT_FAILED
    } else {
        0
    };
    Ok(ExitCode::from(code))
}

fn check_file(path: &Path, max_bytes: usize) -> FileResult {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Err(e) => FileResult {
            error: Some(format!("cannot read {file}: {e}")),
            file,
            valid: false,
            problems: Vec::new(),
        },
        Ok(bytes) => match validate_bytes(&bytes, max_bytes) {
            Ok(validated) => FileResult {
                file,
                valid: true,
                error: None,
                problems: validated.warnings,
            },
            Err(problems) => FileResult {
                file,
                valid: false,
                error: None,
                problems,
            },
        },
    }
}

/// Problems go to stdout, pointer first; the per-file verdict goes to stderr. With several
/// files, each file's problems follow a `FILE:` line.
fn print_text(results: &[FileResult]) {
    let several = results.len() > 1;
    for r in results {
        if let Some(error) = &r.error {
            eprintln!("error: {error}");
            continue;
        }
        if several && !r.problems.is_empty() {
            println!("{}:", r.file);
        }
        for p in &r.problems {
            println!("{}", render(p));
        }
        let errors = r.problems.iter().filter(|p| p.is_error()).count();
        let warnings = r.problems.len() - errors;
        if r.valid {
            eprintln!("{}: valid{}", r.file, count(warnings, "warning", ", "));
        } else {
            eprintln!(
                "{}: invalid: {}{}",
                r.file,
                count(errors, "error", ""),
                count(warnings, "warning", ", ")
            );
        }
    }
}

/// `pointer: message` for errors, `pointer: warning: message` for warnings (also how
/// `sign` and `verify` list the problems of a manifest they refuse).
pub fn render(p: &Problem) -> String {
    let pointer = p.pointer_for_display();
    match p.severity {
        Severity::Error => format!("{pointer}: {}", p.message),
        Severity::Warning => format!("{pointer}: warning: {}", p.message),
    }
}

fn count(n: usize, what: &str, sep: &str) -> String {
    match n {
        0 => String::new(),
        1 => format!("{sep}1 {what}"),
        n => format!("{sep}{n} {what}s"),
    }
}
