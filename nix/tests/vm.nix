# NixOS VM test: a MinIO node as the bucket (it also plays the developer's machine, with the
# real `ferry` CLI), and a host running the module. `ferry upload` + `ferry publish` v1 →
# the host converges; `ferry push` v2 → it converges again; `ferry rollback` → back to v1;
# Caddy routes the service and gets the route back after a reload; after a reboot the boot
# tick brings v1 back. Then the whole host: `ferry push --system` of a system that adds a
# file to /etc → the agent switches to it (test, check, boot); one whose unit fails to start
# → the agent switches back, and the profile and /etc stay as they were.
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
  # `nix-store --generate-binary-cache-key ferry-vm-test-1 sk pk`; `ferry` signs both the
  # closures and the manifests with it. Never use it anywhere else.
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
  # The developer's side: the real `ferry` CLI against the MinIO bucket.
  ferryCli = builtins.concatStringsSep " " [
    "AWS_ACCESS_KEY_ID=${accessKey}"
    "AWS_SECRET_ACCESS_KEY=${secretAccessKey}"
    "FERRY_BUCKET='s3://ferry?endpoint=http://127.0.0.1:9000&region=us-east-1'"
    "FERRY_KEY_FILE=/root/sk"
    "ferry"
  ];
in
  pkgs.testers.runNixOSTest {
    name = "ferry-agent";

    nodes.s3 = {nodes, ...}: {
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
      system.extraDependencies = [v1 v2 nodes.host.system.build.toplevel];
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
        system.enable = true;
        # Plain HTTP on port 80 for the route check: a `.test` domain gets no certificate.
        settings.caddy = {
          listen = [":80"];
          automaticHttps = false;
        };
      };
      environment.etc."ferry-test/credentials".text = ''
        [default]
        aws_access_key_id = ${accessKey}
        aws_secret_access_key = ${secretAccessKey}
      '';
      environment.systemPackages = [pkgs.curl];
      # The systems `ferry push --system` deploys: this one plus a file in /etc, and this one
      # plus a unit that fails to start (its `switch-to-configuration test` fails).
      specialisation.next.configuration = {
        environment.etc."ferry-vm-system".text = "next";
      };
      specialisation.broken.configuration = {
        environment.etc."ferry-vm-system".text = "broken";
        systemd.services.ferry-vm-broken = {
          wantedBy = ["multi-user.target"];
          serviceConfig.Type = "oneshot";
          serviceConfig.ExecStart = "${pkgs.coreutils}/bin/false";
        };
      };
    };

    testScript = {nodes, ...}: ''
      start_all()
      s3.wait_for_unit("minio.service")
      s3.wait_for_open_port(9000)
      s3.succeed(
          "mc alias set local http://127.0.0.1:9000 ${accessKey} ${secretAccessKey}",
          "mc mb local/ferry",
          "echo '${secretKey}' > /root/sk",
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

      with subtest("upload and publish v1, and converge"):
          s3.succeed("${ferryCli} upload ${v1}", "${ferryCli} publish ${manifestV1}")
          converged("v1")

      with subtest("push v2 and converge"):
          s3.succeed("${ferryCli} push vmsvc ${v2} --revision v2")
          converged("v2")

      with subtest("roll back to v1"):
          s3.succeed("${ferryCli} rollback")
          converged("v1")

      with subtest("Caddy routes the service, and a Caddy reload brings the route back"):
          route = "curl -sf -H 'Host: vmsvc.test' http://127.0.0.1/version | grep -x v1"
          host.wait_until_succeeds(route, timeout=60)
          # The module hooks a tick onto Caddy's reload, which forgets API-added routes.
          host.succeed("systemctl show -p ExecReload caddy.service | grep -q ferry-agent.service")
          host.succeed("systemctl reload caddy.service")
          host.wait_until_succeeds(route, timeout=60)

      with subtest("Caddy's admin API is a socket only Caddy and the agent can open"):
          host.fail("curl -sf http://127.0.0.1:2019/config/")
          host.fail(
              "systemd-run --wait --pipe -p DynamicUser=yes ${pkgs.curl}/bin/curl -sf "
              "--unix-socket /run/caddy/admin.sock -H 'Host;' http://localhost/config/"
          )

      with subtest("a whole system: switched to, then a failing one switched back"):
          toplevel = "${nodes.host.system.build.toplevel}"
          system_of = lambda name: s3.succeed(f"readlink -f {toplevel}/specialisation/{name}").strip()
          nxt, broken = system_of("next"), system_of("broken")
          s3.succeed(f"${ferryCli} push --system host {nxt} --revision next")
          host.succeed("systemctl start ferry-agent.service")
          host.wait_until_succeeds("grep -x next /etc/ferry-vm-system", timeout=120)
          host.succeed(f"test $(readlink -f /nix/var/nix/profiles/system) = {nxt}")
          host.succeed("systemctl is-active ferry-vmsvc.service")
          s3.succeed(f"${ferryCli} push --system host {broken} --revision broken")
          host.fail("systemctl start ferry-agent.service")
          host.succeed(f"test $(readlink -f /nix/var/nix/profiles/system) = {nxt}")
          host.succeed("grep -x next /etc/ferry-vm-system")
          host.succeed(
              "journalctl -u ferry-agent.service | grep -q 'switched back to'",
              f"ferry-agent status | grep -q 'quarantined.*{broken}'",
          )

      with subtest("the timer alone keeps the host converged after a reboot"):
          host.shutdown()
          host.start()
          host.wait_for_unit("multi-user.target")
          host.wait_until_succeeds(
              "curl -sf http://127.0.0.1:8000/version | grep -x v1", timeout=120
          )
    '';
  }
