# Ferry's test closures, built with plain derivations (no nixpkgs) by the machine's nix-build.
# `binPath`: the ferry-testsvc binary the workspace built.
{binPath}: let
  system = builtins.currentSystem;
  bin = builtins.path {
    path = /. + binPath;
    name = "ferry-testsvc-bin";
  };
  plain = attrs:
    derivation ({
        inherit system;
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
      }
      // attrs);
  data = plain {
    name = "ferry-testdata-1";
    args = ["-c" "mkdir -p $out/share/ferry-testsvc && echo hello > $out/share/ferry-testsvc/greeting"];
  };
  # References `data` through a symlink, so closures have a chain to walk.
  lib = plain {
    name = "ferry-testlib-1";
    inherit data;
    args = ["-c" "mkdir -p $out/share/ferry-testsvc && ln -s $data/share/ferry-testsvc/greeting $out/share/ferry-testsvc/greeting"];
  };
  # The service: the binary plus its baked knobs (see ferry-testsvc.rs); `deps` become
  # references through a file listing them.
  service = {
    version,
    mode,
    deps ? [],
  }:
    plain {
      name = "ferry-testsvc-${version}";
      inherit bin version mode deps;
      args = [
        "-c"
        ''
          set -e
          mkdir -p $out/bin $out/share/ferry-testsvc
          cp $bin $out/bin/ferry-testsvc
          chmod 0555 $out/bin/ferry-testsvc
          printf %s "$version" > $out/share/ferry-testsvc/version
          printf %s "$mode" > $out/share/ferry-testsvc/mode
          for dep in $deps; do echo "$dep" >> $out/share/ferry-testsvc/deps; done
        ''
      ];
    };
  # Stand-ins for NixOS systems, for the system step's bed tests (NixOS cannot boot on the
  # bed): `bin/switch-to-configuration` records each call in
  # /var/lib/ferry-bed-system/calls and, on `test`, does what `mode` says: ok (brings eth0
  # up and clears the broken unit, as the good system it stands for would), fail (exits 1),
  # unit (leaves a failed unit behind), network (takes eth0 down), stopweb (stops Ferry's
  # service web), hang (never returns). `kernel` links into a
  # kernel package that systems with the same `kernelVersion` share, as on NixOS.
  kernel = version:
    plain {
      name = "linux-bed-${version}";
      args = ["-c" "mkdir -p $out && echo ${version} > $out/bzImage"];
    };
  standInSystem = {
    version,
    mode,
    kernelVersion ? "6.1",
  }:
    plain {
      name = "nixos-system-bed-${version}";
      inherit mode;
      kernel = kernel kernelVersion;
      args = [
        "-c"
        ''
          set -e
          mkdir -p $out/bin
          ln -s $kernel/bzImage $out/kernel
          cat > $out/bin/switch-to-configuration <<EOF
          #!/bin/sh
          # A stand-in for NixOS's switch-to-configuration (mode $mode).
          mkdir -p /var/lib/ferry-bed-system
          echo "$out \$1" >> /var/lib/ferry-bed-system/calls
          if [ "\$1" = test ] || [ "\$1" = switch ]; then
            case $mode in
              ok) ip link set eth0 up; systemctl reset-failed ferry-bed-broken.service 2>/dev/null || true ;;
              fail) echo "activation failed (stand-in)" >&2; exit 1 ;;
              unit) systemd-run --wait --unit=ferry-bed-broken.service /bin/false || true ;;
              network) ip link set eth0 down ;;
              stopweb) systemctl stop ferry-web.service ;;
              hang) exec sleep 3600 ;;
            esac
          fi
          EOF
          chmod 0555 $out/bin/switch-to-configuration
        ''
      ];
    };
in {
  inherit data lib;
  system_ok = standInSystem {
    version = "1";
    mode = "ok";
  };
  system_ok_new_kernel = standInSystem {
    version = "2";
    mode = "ok";
    kernelVersion = "6.6";
  };
  system_fails = standInSystem {
    version = "3-fails";
    mode = "fail";
  };
  system_fails_a_unit = standInSystem {
    version = "4-unit";
    mode = "unit";
  };
  system_breaks_network = standInSystem {
    version = "5-network";
    mode = "network";
  };
  system_stops_web = standInSystem {
    version = "7-stopweb";
    mode = "stopweb";
  };
  system_hangs = standInSystem {
    version = "8-hang";
    mode = "hang";
  };
  v1 = service {
    version = "1.0.0";
    mode = "ok";
  };
  v2 = service {
    version = "2.0.0";
    mode = "ok";
  };
  broken = service {
    version = "3.0.0-broken";
    mode = "unhealthy";
  };
  crashing = service {
    version = "4.0.0-crashing";
    mode = "crash";
  };
  multi = service {
    version = "5.0.0-multi";
    mode = "ok";
    deps = [lib data];
  };
  # Seven healthy versions of one service (6.1.0 … 6.7.0), for counting what a profile keeps.
  series = map (i:
    service {
      version = "6.${toString i}.0";
      mode = "ok";
    }) [1 2 3 4 5 6 7];
}
