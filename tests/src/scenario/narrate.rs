//! How the scenario tells what it does: a banner per step, indented detail, timings. The
//! demo prints it for a person; the CI test prints the same, which the harness shows when a
//! step fails.

use std::time::Instant;

/// A step's title.
pub fn banner(title: &str) {
    println!("\n==> {title}");
}

/// One line of detail.
pub fn say(line: &str) {
    println!("    {line}");
}

/// A command's output, indented under the step.
pub fn output(text: &str) {
    for line in text.lines() {
        println!("      {line}");
    }
}

/// The step's wall time.
pub fn done(started: Instant) {
    println!("    ({:.2} s)", started.elapsed().as_secs_f64());
}
