//! nix/agent-defaults.nix, which the NixOS module takes its defaults from, says exactly what
//! the agent's built-in defaults are: same keys, same JSON types, same values.

mod nix_common;

use std::process::Command;

use anyhow::{Context as _, Result, ensure};

fn agent_defaults() -> Result<serde_json::Value> {
    let agent = ferry_tests::agent_bed::agent_binary()?;
    let output = Command::new(&agent)
        .args(["config", "--defaults", "--json"])
        .output()
        .with_context(|| format!("running {}", agent.display()))?;
    ensure!(
        output.status.success(),
        "{} config --defaults --json failed: {}",
        agent.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .context("ferry-agent config --defaults --json printed no JSON")
}

/// Every difference between two JSON trees as `pointer: nix=… agent=…`, so a failure names
/// the key instead of dumping both documents.
fn differences(
    path: &str,
    nix: &serde_json::Value,
    agent: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value::Object;
    match (nix, agent) {
        (Object(n), Object(a)) => {
            let mut keys: Vec<&String> = n.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (n.get(key), a.get(key)) {
                    (Some(nv), Some(av)) => differences(&format!("{path}/{key}"), nv, av, out),
                    (Some(_), None) => {
                        out.push(format!("{path}/{key}: only in nix/agent-defaults.nix"));
                    }
                    _ => out.push(format!("{path}/{key}: only in the agent")),
                }
            }
        }
        _ if nix != agent => out.push(format!("{path}: nix={nix} agent={agent}")),
        _ => {}
    }
}

#[test]
fn defaults_file_agrees_with_the_agent() -> Result<()> {
    let nix = nix_common::eval_json("import ./nix/agent-defaults.nix")?;
    let agent = agent_defaults()?;
    let mut diffs = Vec::new();
    differences("", &nix, &agent, &mut diffs);
    assert!(
        diffs.is_empty(),
        "nix/agent-defaults.nix and `ferry-agent config --defaults --json` disagree \
         (update the Nix file to the agent's config.rs):\n{}",
        diffs.join("\n")
    );
    Ok(())
}

#[test]
fn the_comparison_notices_a_changed_default() -> Result<()> {
    let nix = nix_common::eval_json(
        "import ./nix/agent-defaults.nix // { generationsToKeep = \"5\"; extra = 1; }",
    )?;
    let mut diffs = Vec::new();
    differences("", &nix, &agent_defaults()?, &mut diffs);
    assert_eq!(
        diffs,
        vec![
            "/extra: only in nix/agent-defaults.nix".to_owned(),
            "/generationsToKeep: nix=\"5\" agent=5".to_owned(),
        ]
    );
    Ok(())
}
