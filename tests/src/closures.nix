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
in {
  inherit data lib;
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
