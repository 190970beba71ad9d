# Evaluates flake.nix's outputs without nixpkgs (this machine cannot fetch it), against a
# stand-in `nixpkgs` input whose packages only record how they were called, so CI can check
# which outputs the flake has and how they are wired. `nix flake check` on a machine with
# nixpkgs is the real thing.
#   nix-instantiate --eval --strict --json -E 'import ./nix/tests/eval-flake.nix'
let
  flake = import ../../flake.nix;

  # A package is its name and the arguments callPackage gave it.
  callPackage = fn: args: {
    pname = args.pname or "ferry";
    crates = args.crates or null;
    fn = baseNameOf fn;
  };

  pkgsFor = system: {
    inherit callPackage;
    stdenv.hostPlatform.system = system;
    testers.runNixOSTest = test: {
      testName = test.name;
      nodes = builtins.attrNames test.nodes;
      hostImports = builtins.length test.nodes.host.imports;
      hostAgent = test.nodes.host.services.ferry-agent.enable;
    };
    writeText = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    writeShellScriptBin = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    busybox = "/nix/store/00000000000000000000000000000000-busybox";
    mkShell = attrs: {
      shellPackages = attrs.packages;
      inputsFrom = map (p: p.pname) attrs.inputsFrom;
    };
    rust-analyzer = "rust-analyzer";
    clippy = "clippy";
    rustfmt = "rustfmt";
    alejandra = "alejandra";
    nix = "nix";
    caddy = "caddy";
    rclone = "rclone";
  };

  systems = ["x86_64-linux" "aarch64-linux"];
  nixpkgs = {
    lib = {
      genAttrs = names: f:
        builtins.listToAttrs (map (name: {
            inherit name;
            value = f name;
          })
          names);
      mkDefault = value: value;
    };
    legacyPackages = nixpkgs.lib.genAttrs systems pkgsFor;
  };

  outputs = flake.outputs {
    self = outputs;
    inherit nixpkgs;
  };

  names = builtins.mapAttrs (_: builtins.attrNames);
  module = outputs.nixosModules.default {pkgs = pkgsFor "x86_64-linux";};
in {
  inputs = builtins.mapAttrs (_: input: input.url) flake.inputs;
  outputs = builtins.attrNames outputs;
  packages = names outputs.packages;
  ferry = outputs.packages.x86_64-linux.ferry;
  ferryAgent = outputs.packages.x86_64-linux.ferry-agent;
  default = outputs.packages.x86_64-linux.default.pname;
  overlay = builtins.attrNames (outputs.overlays.default (pkgsFor "x86_64-linux") {});
  nixosModule = {
    imports = map baseNameOf module.imports;
    package = module.services.ferry-agent.package.pname;
  };
  checks = names outputs.checks;
  vm = outputs.checks.x86_64-linux.vm;
  devShells = names outputs.devShells;
  devShell = outputs.devShells.x86_64-linux.default;
  formatter = outputs.formatter.x86_64-linux;
}
