# Evaluates nix/module.nix without nixpkgs, against a small stand-in for the parts of
# nixpkgs' `lib` and `pkgs` it uses, so CI (which has no nixpkgs) can check how the module
# is wired: which options exist, what agent.toml and the units get. The stand-in is naive
# (mkIf/mkMerge flatten, no types are checked): the VM test (vm.nix) is the real thing.
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix --arg user '{...}'
{
  # services.ferry-agent as a user would set it.
  user ? {},
  hostName ? "web-1",
  # services.caddy.enable as set outside this module (the user's own Caddy).
  caddyElsewhere ? false,
  # The version of services.caddy.package (the admin socket's mode is set differently
  # before 2.8).
  caddyVersion ? "2.10.0",
  # nix.package and systemd.package: store paths here; the test bed, which runs the units
  # this renders on Debian, passes "/usr".
  nixPackage ? "/nix/store/00000000000000000000000000000000-nix",
  systemdPackage ? "/nix/store/00000000000000000000000000000000-systemd",
  # users.users and users.groups as the host's NixOS config declares them (only the
  # attributes the module reads: group, ferry.allowServices, gid).
  users ? {},
  groups ? {},
  # services.prometheus.exporters.node as the host sets it.
  nodeExporter ? false,
  nodeExporterFlags ? [],
}: let
  isOption = v: builtins.isAttrs v && v ? _option;

  lib = {
    mkOption = attrs: attrs // {_option = true;};
    mkEnableOption = _: {
      _option = true;
      default = false;
    };
    literalExpression = text: text;
    types = {
      str = "str";
      bool = "bool";
      package = "package";
      nullOr = _: "nullOr";
      listOf = _: "listOf";
      attrsOf = _: "attrsOf";
      submodule = _: "submodule";
      ints.between = _: _: "int";
      ints.positive = "int";
    };
    mkIf = cond: content:
      if cond
      then content
      else {};
    mkMerge = builtins.foldl' merge {};
    mkAfter = value: value;
    mkDefault = value: value;
    optional = cond: value:
      if cond
      then [value]
      else [];
    hasPrefix = prefix: text: builtins.substring 0 (builtins.stringLength prefix) text == prefix;
    versionAtLeast = v1: v2: builtins.compareVersions v1 v2 >= 0;
    getExe' = package: name: "${package}/bin/${name}";
  };

  # Lists concatenate and attribute sets merge, as the module system does for these options.
  merge = left: right:
    left
    // builtins.mapAttrs (
      name: value:
        if !(left ? ${name})
        then value
        else if builtins.isAttrs value && builtins.isAttrs left.${name}
        then merge left.${name} value
        else if builtins.isList value && builtins.isList left.${name}
        then left.${name} ++ value
        else value
    )
    right;

  pkgs = {
    formats.toml = _: {
      type = "toml";
      generate = name: value: {
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
        inherit value;
      };
    };
    callPackage = _: args: {
      outPath = "/nix/store/00000000000000000000000000000000-${args.pname}";
      inherit args;
    };
  };

  # A value the user sets replaces the option's default, lists included (as a definition
  # beats mkOptionDefault); only attribute sets of options are walked into.
  overDefaults = defaults: user:
    defaults
    // builtins.mapAttrs (
      name: value:
        if builtins.isAttrs value && builtins.isAttrs (defaults.${name} or null)
        then overDefaults defaults.${name} value
        else value
    )
    user;

  # Option declarations → their defaults, then the user's values on top.
  defaultsOf = options:
    builtins.mapAttrs (
      _: option:
        if isOption option
        then option.default or null
        else defaultsOf option
    )
    options;
  optionNames = prefix: options:
    builtins.concatLists (builtins.attrValues (builtins.mapAttrs (
        name: option:
          if isOption option
          then ["${prefix}${name}"]
          else optionNames "${prefix}${name}." option
      )
      options));

  config = {
    services.ferry-agent = overDefaults (defaultsOf module.options.services.ferry-agent) user;
    networking.hostName = hostName;
    services.caddy = {
      enable = caddyElsewhere;
      group = "caddy";
      package.version = caddyVersion;
    };
    services.prometheus.exporters.node = {
      enable = nodeExporter;
      extraFlags = nodeExporterFlags;
    };
    nix.package = nixPackage;
    systemd.package = systemdPackage;
    users.users = builtins.mapAttrs (name: user:
      {
        inherit name;
        group = "";
        ferry.allowServices = false;
      }
      // user)
    users;
    users.groups = builtins.mapAttrs (name: group: {gid = null;} // group) groups;
  };

  module = import ../module.nix {inherit config lib pkgs;};
in {
  options = optionNames "" module.options.services.ferry-agent;
  inherit (module) config;
  # The messages of the module's assertions that fail: NixOS refuses to build the system
  # while any does.
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) (module.config.assertions or []));
  # What pkgs.formats.toml would be given for /etc/ferry/agent.toml.
  agentToml =
    if module.config ? environment
    then module.config.environment.etc."ferry/agent.toml".source.value
    else null;
}
