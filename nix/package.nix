# Ferry's binaries, built from this workspace with the committed Cargo.lock.
#   pkgs.callPackage ./nix/package.nix {}                       # ferry and ferry-agent
#   pkgs.callPackage ./nix/package.nix {crates = ["ferry-agent"];}  # the agent alone
# Shell completions (bash, zsh, fish) and man pages come from each binary's hidden
# `completions SHELL` and `man --out DIR` verbs, so they always match the CLI.
{
  lib,
  stdenv,
  rustPlatform,
  cmake,
  installShellFiles,
  pname ? "ferry",
  # Workspace crates whose binaries to build: ferry-pusher gives `ferry`, ferry-agent gives
  # `ferry-agent`.
  crates ? ["ferry-pusher" "ferry-agent"],
  mainProgram ? "ferry",
}: let
  workspace = builtins.fromTOML (builtins.readFile ../Cargo.toml);
  cargoFlags = builtins.concatMap (crate: ["--package" crate]) crates;
  # The binary each crate builds.
  binaryOf = {
    ferry-pusher = "ferry";
    ferry-agent = "ferry-agent";
  };
  binaries = map (crate: binaryOf.${crate}) crates;
in
  rustPlatform.buildRustPackage {
    inherit pname;
    inherit (workspace.workspace.package) version;

    # Only what cargo needs, so editing nix/ or the docs does not rebuild the binaries.
    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [
        ../Cargo.toml
        ../Cargo.lock
        ../schema
        ../agent
        ../pusher
        ../bucket
        ../cli-docs
        ../tests
        ../bench
      ];
    };

    cargoLock.lockFile = ../Cargo.lock;

    # aws-lc-sys (rustls' default crypto in the AWS SDK) builds its C library with cmake;
    # cmake is only a tool for it, not the build system of this package.
    nativeBuildInputs = [cmake installShellFiles];
    dontUseCmakeConfigure = true;

    cargoBuildFlags = cargoFlags;
    # Only the library unit tests of the schema and the agent (pure logic on literals): the
    # end-to-end tests need the test bed (Garage, nspawn, Caddy) and the CLI tests run real
    # Nix, neither of which the build sandbox has.
    cargoTestFlags = ["--package" "ferry-schema" "--package" "ferry-agent" "--lib"];

    # The binaries generate their own completions and man pages, so this needs to run them:
    # skipped when cross-compiling to a platform the build machine cannot execute.
    postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
      mkdir -p generated/man
      for bin in ${lib.escapeShellArgs binaries}; do
        "$out/bin/$bin" completions bash > "generated/$bin.bash"
        "$out/bin/$bin" completions zsh > "generated/_$bin"
        "$out/bin/$bin" completions fish > "generated/$bin.fish"
        installShellCompletion --cmd "$bin" \
          --bash "generated/$bin.bash" \
          --zsh "generated/_$bin" \
          --fish "generated/$bin.fish"
        "$out/bin/$bin" man --out generated/man
      done
      installManPage generated/man/*.1
    '';

    meta = {
      description = "Deploys Nix-built services to hosts through an S3 bucket, without a NixOS rebuild";
      longDescription = ''
        `ferry` signs and checks deployment manifests on the developer's machine;
        `ferry-agent` runs on each host from a systemd timer, pulls signed closures from the
        bucket, writes hardened systemd units, starts them, checks their health and points
        Caddy at them, rolling a service back when its health check fails.
      '';
      license = with lib.licenses; [mit asl20];
      inherit mainProgram;
      platforms = lib.platforms.linux;
    };
  }
