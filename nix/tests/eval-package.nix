# Evaluates nix/package.nix without nixpkgs, against a stand-in for the few parts of `lib`,
# `stdenv` and `rustPlatform` it uses, so CI can check what the build would do: which
# crates it builds, its meta, and the exact postInstall script (tests/tests/nix_package.rs
# runs that script against the workspace's binaries). The real build is the flake's
# `packages` (and the VM test, which uses it).
#   nix-instantiate --eval --strict --json nix/tests/eval-package.nix --arg args '{...}'
{
  # Arguments a caller gives callPackage (pname, crates, mainProgram).
  args ? {},
  # Whether the build machine can run the binaries it builds (false when cross-compiling).
  canExecute ? true,
}: let
  escapeShellArg = arg: "'${builtins.replaceStrings ["'"] ["'\\''"] (toString arg)}'";

  lib = {
    fileset = {
      toSource = _: "/nix/store/00000000000000000000000000000000-source";
      unions = files: files;
    };
    licenses = {
      mit = "MIT";
      asl20 = "Apache-2.0";
    };
    platforms.linux = ["x86_64-linux" "aarch64-linux"];
    optionalString = cond: text:
      if cond
      then text
      else "";
    escapeShellArgs = list: builtins.concatStringsSep " " (map escapeShellArg list);
  };

  stdenv.buildPlatform.canExecute = _: canExecute;

  # What buildRustPackage is given, minus the paths (which --json would copy to the store).
  rustPlatform.buildRustPackage = attrs:
    builtins.removeAttrs attrs ["src" "cargoLock"]
    // {
      lockFile = baseNameOf attrs.cargoLock.lockFile;
    };

  package = import ../package.nix ({
      inherit lib stdenv rustPlatform;
      cmake = "cmake";
      installShellFiles = "installShellFiles";
    }
    // args);
in
  package
