# NixOS VM test: a MinIO node as the bucket (it also plays the developer's machine), and a
# host running the module. Push v1 → the host converges; push v2 → it converges again;
# publish v1's manifest again → it rolls back.
#
# It needs nixpkgs and KVM, so it runs where those are (`nix flake check`, or
# `nix build .#checks.x86_64-linux.vm`); the Debian CI machine of this project has
# neither and checks only that this file parses and is formatted.
{
  pkgs,
  module,
  ferry,
}: let
  # A throwaway key pair made for this test with
  # `nix-store --generate-binary-cache-key ferry-vm-test-1 sk pk`; it signs both the
  # closures and the manifests. Never use it anywhere else.
  secretKey = "ferry-vm-test-1:qXCujVFGZ6We1FOK1FjPXZ3FLHs3YeoXxpqEMrmk5SNs/0LM37R11GTVaKXhX4vvQB1qg+ZnyEWpybRjlQzQJg==";
  publicKey = "ferry-vm-test-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY=";
  accessKey = "ferrytestaccess";
  secretAccessKey = "ferrytestsecret0123456789";

  # A tiny web service that answers GET /version with its version.
  service = version:
    pkgs.writeShellScriptBin "ferry-vm-svc" ''
      root=$(mktemp -d)
      echo ${version} > "$root/version"
      exec ${pkgs.busybox}/bin/httpd -f -p 127.0.0.1:8000 -h "$root"
    '';
  v1 = service "v1";
  v2 = service "v2";

  manifest = storePath: generation:
    builtins.toJSON {
      version = 1;
      inherit generation;
      services = [
        {
          name = "vmsvc";
          artifact = {
            type = "nix-closure";
            inherit storePath;
          };
          hosts = ["host"];
          exec.command = "ferry-vm-svc";
          http = {
            domain = "vmsvc.test";
            path = "/";
            internalPort = 8000;
          };
        }
      ];
    };
  manifestV1 = pkgs.writeText "manifest-v1.json" (manifest "${v1}" "2025-01-01T00:00:01Z");
  manifestV2 = pkgs.writeText "manifest-v2.json" (manifest "${v2}" "2025-01-01T00:00:02Z");
  # Rollback republishes v1's content under a later generation, as generations only grow.
  manifestV1Again = pkgs.writeText "manifest-v1-again.json" (manifest "${v1}" "2025-01-01T00:00:03Z");
in
  pkgs.testers.runNixOSTest {
    name = "ferry-agent";

    nodes.s3 = {
      services.minio = {
        enable = true;
        rootCredentialsFile = pkgs.writeText "minio-credentials" ''
          MINIO_ROOT_USER=${accessKey}
          MINIO_ROOT_PASSWORD=${secretAccessKey}
        '';
      };
      networking.firewall.allowedTCPPorts = [9000];
      environment.systemPackages = [pkgs.minio-client ferry];
      # The closures to deploy live in this node's store, as on a developer's machine.
      system.extraDependencies = [v1 v2];
      nix.settings.experimental-features = ["nix-command"];
    };

    nodes.host = {
      imports = [module];
      services.ferry-agent = {
        enable = true;
        bucket = "ferry";
        endpoint = "http://s3:9000";
        region = "us-east-1";
        # A store path is fine for a throwaway test secret; real hosts keep it outside.
        credentialsFile = "/etc/ferry-test/credentials";
        trustedKeys = [publicKey];
        manifestKeys = [publicKey];
        interval = "10s";
        randomizedDelay = "0";
        caddy.enable = true;
      };
      environment.etc."ferry-test/credentials".text = ''
        [default]
        aws_access_key_id = ${accessKey}
        aws_secret_access_key = ${secretAccessKey}
      '';
      environment.systemPackages = [pkgs.curl];
    };

    testScript = ''
      start_all()
      s3.wait_for_unit("minio.service")
      s3.wait_for_open_port(9000)
      s3.succeed(
          "mc alias set local http://127.0.0.1:9000 ${accessKey} ${secretAccessKey}",
          "mc mb local/ferry",
          "echo '${secretKey}' > /root/sk",
          "nix store sign --key-file /root/sk -r ${v1} ${v2}",
          "nix copy --to file:///root/cache ${v1} ${v2}",
          "mc cp --recursive /root/cache/ local/ferry/",
      )

      def publish(manifest, generation):
          s3.succeed(
              f"cp {manifest} /root/manifest.json && chmod u+w /root/manifest.json",
              "ferry sign /root/manifest.json --key-file /root/sk",
              f"mc cp /root/manifest.json local/ferry/manifests/manifest-{generation}.json",
              "mc cp /root/manifest.json local/ferry/manifest.json",
          )

      def converged(version):
          host.succeed("systemctl start ferry-agent.service")
          host.wait_until_succeeds(
              f"curl -sf http://127.0.0.1:8000/version | grep -x {version}", timeout=120
          )

      host.wait_for_unit("multi-user.target")
      host.succeed("test -f /etc/ferry/agent.toml")
      host.succeed("grep -q 'credentials' /etc/ferry/agent.toml")
      # The credentials never reach the rendered configuration.
      host.fail("grep -q '${secretAccessKey}' /etc/ferry/agent.toml")

      with subtest("push v1 and converge"):
          publish("${manifestV1}", "2025-01-01T00:00:01Z")
          converged("v1")

      with subtest("push v2 and converge"):
          publish("${manifestV2}", "2025-01-01T00:00:02Z")
          converged("v2")

      with subtest("roll back to v1"):
          publish("${manifestV1Again}", "2025-01-01T00:00:03Z")
          converged("v1")

      with subtest("the timer alone keeps the host converged after a reboot"):
          host.shutdown()
          host.start()
          host.wait_for_unit("multi-user.target")
          host.wait_until_succeeds(
              "curl -sf http://127.0.0.1:8000/version | grep -x v1", timeout=120
          )
    '';
  }
