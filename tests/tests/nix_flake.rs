//! flake.nix has the outputs the issue lists and wires them to nix/: its `outputs` function
//! is evaluated by the real Nix against a stand-in nixpkgs (nix/tests/eval-flake.nix),
//! since this machine cannot fetch the real one.

mod nix_common;

use anyhow::Result;
use serde_json::json;

#[test]
fn flake_outputs_are_the_ones_the_issue_lists() -> Result<()> {
    let flake = nix_common::eval_json("import ./nix/tests/eval-flake.nix")?;
    assert_eq!(
        flake["outputs"],
        json!([
            "checks",
            "devShells",
            "formatter",
            "nixosModules",
            "overlays",
            "packages"
        ])
    );
    for system in ["x86_64-linux", "aarch64-linux"] {
        assert_eq!(
            flake["packages"][system],
            json!(["default", "ferry", "ferry-agent"])
        );
        assert_eq!(flake["checks"][system], json!(["vm"]));
        assert_eq!(flake["devShells"][system], json!(["default"]));
    }
    // Both packages come from nix/package.nix; the agent's builds the agent crate alone.
    assert_eq!(
        flake["ferry"],
        json!({"pname": "ferry", "crates": null, "fn": "package.nix"})
    );
    assert_eq!(
        flake["ferryAgent"],
        json!({"pname": "ferry-agent", "crates": ["ferry-agent"], "fn": "package.nix"})
    );
    assert_eq!(flake["default"], "ferry");
    assert_eq!(flake["overlay"], json!(["ferry", "ferry-agent"]));
    // The module is nix/module.nix with the flake's own agent as its package.
    assert_eq!(
        flake["nixosModule"],
        json!({"imports": ["module.nix"], "package": "ferry-agent"})
    );
    // The VM test: a bucket node and a host that enables the flake's module.
    assert_eq!(
        flake["vm"],
        json!({"testName": "ferry-agent", "nodes": ["host", "s3"], "hostImports": 1, "hostAgent": true})
    );
    assert!(
        flake["devShell"]["shellPackages"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("alejandra")) && p.contains(&json!("caddy")))
    );
    assert_eq!(flake["devShell"]["inputsFrom"], json!(["ferry"]));
    assert_eq!(flake["formatter"], "alejandra");
    Ok(())
}
