{
  description = "Ferry: deploy Nix-built services to hosts through an S3 bucket, without a NixOS rebuild";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = {
    self,
    nixpkgs,
  }: let
    systems = ["x86_64-linux" "aarch64-linux"];
    forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
  in {
    overlays.default = final: _prev: {
      ferry = final.callPackage ./nix/package.nix {};
      ferry-agent = final.callPackage ./nix/package.nix {
        pname = "ferry-agent";
        crates = ["ferry-agent"];
        mainProgram = "ferry-agent";
      };
    };

    packages = forAllSystems (pkgs: let
      own = self.overlays.default pkgs pkgs;
    in {
      inherit (own) ferry ferry-agent;
      default = own.ferry;
    });

    nixosModules.default = {pkgs, ...}: {
      imports = [./nix/module.nix];
      services.ferry-agent.package = nixpkgs.lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.ferry-agent;
    };

    checks = forAllSystems (pkgs: {
      vm = import ./nix/tests/vm.nix {
        inherit pkgs;
        module = self.nixosModules.default;
        ferry = self.packages.${pkgs.stdenv.hostPlatform.system}.ferry;
      };
    });

    devShells = forAllSystems (pkgs: {
      default = pkgs.mkShell {
        inputsFrom = [self.packages.${pkgs.stdenv.hostPlatform.system}.default];
        packages = [
          pkgs.rust-analyzer
          pkgs.clippy
          pkgs.rustfmt
          pkgs.alejandra
          pkgs.nix
          pkgs.caddy
          pkgs.rclone
        ];
      };
    });

    formatter = forAllSystems (pkgs: pkgs.alejandra);
  };
}
