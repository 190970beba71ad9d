# The push benchmark's synthetic closure, built with plain derivations (no nixpkgs) by the
# machine's nix-build: 199 paths in chains of ten plus one top path referencing them all
# (200 paths, about 230 MiB of NAR). Paths 0-3 hold 24 MiB each, the others 128 KiB to
# 1.25 MiB. Even paths hold text (numbers from `seq`: compresses to about a third), odd ones random bytes (does not).
# `nonce` makes a run's paths its own; `top` changes only the top path (the incremental push).
{
  nonce,
  top ? "1",
}: let
  system = builtins.currentSystem;
  mod = a: b: a - b * builtins.div a b;
  plain = attrs:
    derivation ({
        inherit system;
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
      }
      // attrs);
  kib = i:
    if i < 4
    then 24576
    else 128 * (1 + mod i 10);
  filler = i:
    if mod i 2 == 0
    then "seq ${toString i}000000 999999999 | head -c ${toString (kib i)}K > $out/data"
    else "head -c ${toString (kib i)}K /dev/urandom > $out/data";
  # Path i references path i-1 unless i is a multiple of 10.
  path = i:
    plain {
      name = "ferry-bench-${nonce}-p${toString i}";
      prev =
        if mod i 10 == 0
        then ""
        else paths.${toString (i - 1)};
      args = ["-c" "mkdir $out; ${filler i}; echo \"$prev\" > $out/prev"];
    };
  paths = builtins.listToAttrs (map (i: {
    name = toString i;
    value = path i;
  }) (builtins.genList (i: i) 199));
in
  plain {
    name = "ferry-bench-${nonce}-top-${top}";
    deps = builtins.attrValues paths;
    args = ["-c" "mkdir $out; for d in $deps; do echo $d >> $out/deps; done; echo ${top} > $out/top"];
  }
