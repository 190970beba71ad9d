# NixOS module for ferry-agent: writes /etc/ferry/agent.toml, runs one reconcile tick at
# boot and then from a timer, and (optionally) sets up Caddy for the agent's routes.
{
  config,
  lib,
  pkgs,
  ...
}: let
  cfg = config.services.ferry-agent;
  defaults = import ./agent-defaults.nix;
  toml = pkgs.formats.toml {};

  unitName = "ferry-agent.service";
  # systemd (>= 250) puts LoadCredential= files here, readable only by the unit; the agent
  # cannot expand `%d`, so agent.toml names the resolved path.
  credentialName = "aws";
  credentialsPath = "/run/credentials/${unitName}/${credentialName}";
  # The status store's own key, handed over the same way.
  statusCredentialName = "aws-status";
  statusCredentialsPath = "/run/credentials/${unitName}/${statusCredentialName}";
  # A `file://` status store is a directory the sandboxed unit must be able to write.
  statusDir =
    if cfg.status.bucket == null
    then null
    else let
      m = builtins.match "file://(/.*)" cfg.status.bucket;
    in
      if m == null
      then null
      else builtins.head m;

  # Where caddy.enable puts Caddy's admin API, and so where the agent adds its routes: a unix
  # socket in Caddy's runtime directory (0750 caddy:caddy), which only Caddy and members of
  # its group (the agent, through SupplementaryGroups) can reach. On loopback TCP any
  # process of the host could rewrite Caddy's config, deployed services included.
  caddySocket = "/run/caddy/admin.sock";
  caddyAdmin = "unix/${caddySocket}";
  caddyGroup = config.services.caddy.group;
  # The socket's mode: Caddy >= 2.8 takes it from the address (`|0220`: owner and group may
  # connect; its default 0200 would shut the agent out); older ones from their umask.
  caddyAdminListen =
    if lib.versionAtLeast config.services.caddy.package.version "2.8"
    then "${caddyAdmin}|0220"
    else caddyAdmin;

  # node_exporter's textfile collector reads the directory its
  # `--collector.textfile.directory` flag names; nixpkgs' module has no option for it (the
  # flag goes in `extraFlags`, one string or two) and sets none, so the collector reads
  # nothing until the host names one. The module reads it from there (without adding to
  # the exporter's flags: a second such flag is an error to node_exporter).
  nodeExporter = config.services.prometheus.exporters.node;
  textfileFlag = "--collector.textfile.directory";
  textfileDir = let
    words = builtins.filter (w: builtins.isString w && w != "") (
      builtins.split "[ \t\n]+" (builtins.concatStringsSep " " nodeExporter.extraFlags)
    );
    find = ws:
      if ws == []
      then null
      else let
        w = builtins.head ws;
        rest = builtins.tail ws;
        joined = builtins.match "--collector\\.textfile\\.directory=(.+)" w;
      in
        if joined != null
        then builtins.head joined
        else if w == textfileFlag && rest != []
        then builtins.head rest
        else find rest;
  in
    if nodeExporter.enable
    then find words
    else null;
  # The directory the agent writes metrics.file in (whoever set it): writable in its
  # sandbox, and made if missing.
  metricsFile = (agentSettings.metrics or {}).file or null;
  metricsDir =
    if metricsFile == null
    then null
    else dirOf metricsFile;

  # The agent's own time limits (agent.toml), which the unit's TimeoutStartSec follows.
  tickSec = (agentSettings.timeouts or {}).tickSec or defaults.timeouts.tickSec;
  bootSec = (agentSettings.timeouts or {}).bootSec or defaults.timeouts.bootSec;
  longerTickSec =
    if tickSec > bootSec
    then tickSec
    else bootSec;
  # A tick that switches the system may run switch-to-configuration three times (test,
  # boot; or test, then the previous system's test after a failed check).
  systemSwitchSec =
    if cfg.system.enable
    then 3 * ((agentSettings.system or {}).switchTimeoutSec or cfg.system.switchTimeoutSec)
    else 0;

  # Accounts the host's own NixOS config lets Ferry's services use
  # (`users.users.<name>.ferry.allowServices`), next to where it declares them.
  ferryUsers = builtins.filter (u: u.ferry.allowServices) (builtins.attrValues config.users.users);
  ferryGroups = builtins.filter (g: g != "") (map (u: u.group) ferryUsers);
  # Each name once, in the order first seen.
  uniq = builtins.foldl' (seen: x:
    if builtins.elem x seen
    then seen
    else seen ++ [x]) [];
  # A group without a fixed GID gets one below 1000 from NixOS, which the agent refuses for
  # services (the distribution's system groups live there).
  lowGidGroups = builtins.filter (g: ((config.users.groups.${g} or {}).gid or null) == null || config.users.groups.${g}.gid < 1000) (uniq ferryGroups);

  agentSettings = import ./agent-settings.nix {
    inherit (cfg) bucket endpoint region credentialsProfile trustedKeys manifestKeys secretsDir generationsToKeep settings;
    inherit (cfg) allowUnsignedManifests rollbackByCopy allowedUnits allowedPorts allowedWritePaths;
    allowedUsers = uniq (cfg.allowedUsers ++ map (u: u.name) ferryUsers);
    allowedGroups = uniq (cfg.allowedGroups ++ ferryGroups);
    caddyDomains = cfg.caddy.domains;
    # An empty networking.hostName (taken from DHCP) leaves the agent to read the kernel's.
    hostName =
      if cfg.hostName == ""
      then null
      else cfg.hostName;
    credentialsPath =
      if cfg.credentialsFile == null
      then null
      else credentialsPath;
    nixBin = "${config.nix.package}/bin/nix";
    # Route through Caddy only when this host runs one (ours or the user's own): otherwise
    # every tick with an HTTP service would fail on an unreachable admin API.
    caddyEnable = cfg.caddy.enable || config.services.caddy.enable;
    caddyAdmin =
      if cfg.caddy.enable
      then caddyAdmin
      else null;
    metricsFile = cfg.metrics.file;
    statusBucket = cfg.status.bucket;
    statusCredentialsPath =
      if cfg.status.credentialsFile == null
      then null
      else statusCredentialsPath;
    statusCredentialsProfile = cfg.status.credentialsProfile;
    statusEverySec = cfg.status.everySec;
    # Only when on: an agent older than [system] refuses an agent.toml that has it.
    systemEnable =
      if cfg.system.enable
      then true
      else null;
    systemSwitchTimeoutSec =
      if cfg.system.enable
      then cfg.system.switchTimeoutSec
      else null;
  };
  configFile = toml.generate "agent.toml" agentSettings;

  stateDir = agentSettings.stateDir or defaults.stateDir;
  unitDir = agentSettings.unitDir or defaults.unitDir;
  profileDir = agentSettings.profileDir or defaults.profileDir;
  secretsDir = agentSettings.secretsDir or defaults.secretsDir;

  systemctl = "${config.systemd.package}/bin/systemctl";
  # `+`: Caddy runs unprivileged, but starting another unit needs root. --no-block: the
  # tick is ordered after caddy.service, so waiting for it here would deadlock.
  triggerTick = "+${systemctl} --no-block start ${unitName}";
in {
  # One line next to where the host declares an account lets Ferry's services use it.
  options.users.users = lib.mkOption {
    type = lib.types.attrsOf (lib.types.submodule {
      options.ferry.allowServices = lib.mkOption {
        type = lib.types.bool;
        default = false;
        example = true;
        description = ''
          Let services deployed by Ferry run as this user (`exec.user`) and with its
          primary group (`group`, as `exec.group`): adds both to
          `services.ferry-agent.allowedUsers` and `allowedGroups`. The group needs a fixed
          GID of 1000 or more (`users.groups.<group>.gid`): the agent refuses services in
          groups below 1000, where NixOS puts groups without one.
        '';
      };
    });
  };

  options.services.ferry-agent = {
    enable = lib.mkEnableOption "ferry-agent, which deploys services from a Ferry bucket to this host";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix {
        pname = "ferry-agent";
        crates = ["ferry-agent"];
        mainProgram = "ferry-agent";
      };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { crates = [\"ferry-agent\"]; }";
      description = "The package providing `bin/ferry-agent`.";
    };

    settings = lib.mkOption {
      type = lib.types.submodule {freeformType = toml.type;};
      default = {};
      example = lib.literalExpression ''
        {
          timeouts.pullSec = 1200;
          allowRoot = false;
          removedProfileRetentionDays = 7;
        }
      '';
      description = ''
        Contents of /etc/ferry/agent.toml, with the agent's own (camelCase) key names; see
        `ferry-agent config --defaults` for every key and its default. Values here win over
        the typed options below; `null` removes a key.
      '';
    };

    bucket = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "s3://acme-deploys?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com";
      description = ''
        The bucket holding manifest.json and the binary cache: either a whole URL, as Nix
        writes S3 stores (`s3://NAME?endpoint=HOST&scheme=https&region=…&profile=…`) or
        `file:///DIR`, passed to the agent as it is; or just the bucket's name, combined
        with `endpoint` and `region` into that URL.
      '';
    };

    endpoint = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "nyc3.digitaloceanspaces.com";
      description = ''
        S3 endpoint when `bucket` is a name: a host (reached over https) or a URL
        (`http://10.0.0.1:3900`); null for AWS itself.
      '';
    };

    region = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "nyc3";
      description = "Signing region when `bucket` is a name (the agent's default: us-east-1, as Nix).";
    };

    credentialsProfile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "digitalocean";
      description = ''
        Profile (section) of the credentials file to use, e.g. `digitalocean` for a
        `[digitalocean]` section. Wins over the bucket URL's `profile=`. Null: the URL's
        profile, else `[default]`.
      '';
    };

    credentialsFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/root/.aws/credentials";
      description = ''
        Absolute path of an AWS shared-credentials file (`[default]` or `[PROFILE]`
        sections with `aws_access_key_id` and `aws_secret_access_key`), such as the host's
        existing `/root/.aws/credentials`. systemd reads it when the tick starts and hands
        it to the agent with `LoadCredential=`, so it is never copied into the Nix store,
        only the agent can read it, and it may sit in a home directory the agent's sandbox
        hides (`ProtectHome=`). A string, not a Nix path, for exactly that reason. When the
        file is missing (e.g. /run/keys after a reboot) the agent still runs and restores
        the host's services from its state, saying why it did not ask the bucket. Null:
        the AWS default chain, whose `~/.aws` is the unit's own
        `/var/cache/ferry-agent/.aws`, not root's.
      '';
    };

    trustedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.trustedKeys;
      example = ["acme-deploy-1:Bq0...="];
      description = ''
        Public keys (`name:base64`) whose signatures make a closure trusted. Also added to
        `nix.settings.trusted-public-keys`, since Nix itself checks them during `nix copy`.
      '';
    };

    manifestKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.manifestKeys;
      example = ["acme-deploy-1:Bq0...="];
      description = ''
        Public keys (`name:base64`) allowed to sign manifest.json; a manifest without a valid
        signature by one of them is refused. Required: the module does not evaluate without
        it unless `allowUnsignedManifests` is set.
      '';
    };

    allowUnsignedManifests = lib.mkOption {
      type = lib.types.bool;
      default = defaults.allowUnsignedManifests;
      description = ''
        Apply manifests without any signature check when `manifestKeys` is empty. Anyone
        who can write to the bucket then runs code on this host as the services; for a
        throw-away test bucket only.
      '';
    };

    rollbackByCopy = lib.mkOption {
      type = lib.types.bool;
      default = defaults.rollbackByCopy;
      description = ''
        Apply an archived manifest copied back over manifest.json (a generation older than
        the last one applied). With false such a manifest is refused and rollback is
        `ferry rollback`, which re-signs the old content as a new generation. Either way a
        store path that failed here stays quarantined when an older manifest names it again.
      '';
    };

    allowedUsers = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.allowedUsers;
      example = ["web"];
      description = ''
        Host accounts a service's `exec.user` may name (never root; the account's primary
        group needs a GID of 1000 or more unless `exec.group` names another). Empty: every
        service runs as systemd's DynamicUser.
      '';
    };

    allowedGroups = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.allowedGroups;
      example = ["web"];
      description = ''
        Host groups a service's `exec.group` may name; groups with a GID below 1000 are
        refused even when listed. Empty: each service gets a dynamic group.
      '';
    };

    allowedUnits = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.allowedUnits;
      example = ["network-online.target" "postgresql.service"];
      description = ''
        Units of this host a service's `systemd.requires` and `systemd.after` may name,
        besides the units of this host's Ferry services.
      '';
    };

    allowedPorts = lib.mkOption {
      type = lib.types.str;
      default = defaults.allowedPorts;
      example = "8000-8999";
      description = ''
        Loopback ports (`FIRST-LAST`) a manifest may route to and health-check. A port
        something else on the host listens on is refused whatever the range.
      '';
    };

    allowedWritePaths = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.allowedWritePaths;
      example = ["/var/podcastitlater"];
      description = ''
        Directories under which a service's `hardening.readWritePaths` may name paths for
        it to write (`ReadWritePaths=`). Never a system directory (`/etc`, `/nix`, `/run`,
        …), one of the agent's own or `/var/lib/ferry-*`. Empty: services write only their
        own `StateDirectory`. The directories themselves are the host's to create, owned
        by the service's user (e.g. with `systemd.tmpfiles.rules`).
      '';
    };

    hostName = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This host's name as the manifest's `hosts` lists use it.";
    };

    interval = lib.mkOption {
      type = lib.types.str;
      default = "3min";
      example = "1min";
      description = ''
        Time between the starts of two ticks (a systemd time span). A push waits at most
        `interval` + `randomizedDelay` + 1 s (the timer's accuracy) for a host's next tick:
        3 min 31 s with the defaults.
      '';
    };

    randomizedDelay = lib.mkOption {
      type = lib.types.str;
      default = "30s";
      description = ''
        Random delay added to each timer tick (`RandomizedDelaySec=`), so a fleet does not
        hit the bucket in the same second.
      '';
    };

    secretsDir = lib.mkOption {
      type = lib.types.str;
      default = defaults.secretsDir;
      description = ''
        The only directory a manifest's `envFile` may point into. Created root-owned with
        mode 0700; put the services' environment files here (not in the bucket).
      '';
    };

    generationsToKeep = lib.mkOption {
      type = lib.types.ints.between 2 1000;
      default = defaults.generationsToKeep;
      description = "Profile generations kept per service (at least 2, so rollback has a target).";
    };

    metrics.file = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default =
        if textfileDir == null
        then null
        else "${textfileDir}/ferry.prom";
      defaultText = lib.literalExpression ''"<the directory of --collector.textfile.directory in services.prometheus.exporters.node.extraFlags>/ferry.prom" when the node exporter is enabled, else null'';
      example = "/var/lib/prometheus-node-exporter-text-files/ferry.prom";
      description = ''
        Where the agent writes its Prometheus metrics after every tick (agent.toml
        `metrics.file`; the name must end in `.prom`), replaced atomically. With
        `services.prometheus.exporters.node` enabled it defaults to `ferry.prom` in the
        directory of node_exporter's textfile collector. nixpkgs sets no such directory:
        name one explicitly, e.g. `services.prometheus.exporters.node.extraFlags =
        [ "--collector.textfile.directory=/var/lib/prometheus-node-exporter-text-files" ];`
        (until then the module warns and no metrics are written). The directory is made
        if missing (root's, 0755) and is writable in the agent's sandbox. Null: no metrics.
      '';
    };

    caddy.enable = lib.mkEnableOption ''
      Caddy as the reverse proxy for Ferry's services: its admin API is a unix socket
      (${caddySocket}) only Caddy and the agent can open (deployed services cannot change
      Caddy's config), the agent adds its routes there, and a tick runs whenever Caddy
      starts or reloads, because a Caddy (re)load drops routes added through the API.
      Without it the agent routes through Caddy only if `services.caddy` is enabled
      otherwise (at Caddy's default admin address)
    '';

    caddy.domains = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = defaults.caddy.domains;
      example = ["example.com" "*.example.com"];
      description = ''
        Domains a manifest may route: `example.com`, `*.example.com` (any name under it) or
        `*`. A domain the host's own Caddy configuration serves is never taken over.
      '';
    };

    status.bucket = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = defaults.status.bucket;
      example = "s3://acme-status?endpoint=https://nyc3.digitaloceanspaces.com&region=nyc3";
      description = ''
        The status store: a bucket URL of the same forms as `bucket` (`s3://…` or
        `file:///DIR`) where the agent writes `hosts/<hostName>.json` after its ticks, read
        by `ferry status` and `ferry push --wait`. Use a second bucket with a key of its
        own that may write it: the host keeps read-only access to the deploy bucket. A
        failed write never fails a tick; the next tick tries again. Null: nothing is
        reported.
      '';
    };

    status.credentialsFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/keys/ferry-status";
      description = ''
        Absolute path of the AWS shared-credentials file with the status store's key,
        handed to the agent with `LoadCredential=` like `credentialsFile` (never copied into
        the Nix store). Null: the AWS default chain.
      '';
    };

    status.credentialsProfile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "status";
      description = "Profile (section) of the status store's credentials file to use.";
    };

    system.enable = lib.mkEnableOption ''
      whole-system deploys: this host switches to the NixOS system that the manifest's
      `systems` names for it (`ferry push --system HOST TARGET`), pulled and signature-checked
      like a service's closure. The agent runs `switch-to-configuration test`, checks the
      host (the bucket still answers, no unit newly failed, Ferry's services still up), and
      only then `boot`; a system that fails is switched back and quarantined. A reboot the
      new system needs is reported, never done'';

    system.switchTimeoutSec = lib.mkOption {
      type = lib.types.ints.positive;
      default = defaults.system.switchTimeoutSec;
      description = "Seconds one `switch-to-configuration` may run before it counts as failed.";
    };

    status.everySec = lib.mkOption {
      type = lib.types.ints.positive;
      default = defaults.status.everySec;
      example = 60;
      description = ''
        Seconds between reports while nothing happens (a tick that changed or failed
        something reports at once). `ferry status` calls a host stale after three of these
        without a report, so keep it above `interval`.
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = (agentSettings.manifestKeys or []) != [] || (agentSettings.allowUnsignedManifests or false);
          message = "services.ferry-agent: manifestKeys is empty, so the agent would refuse every manifest; set manifestKeys to the public key that signs manifest.json (`ferry keygen` prints it), or allowUnsignedManifests = true to apply unsigned manifests (anyone who can write to the bucket then runs code on this host)";
        }
        {
          assertion = cfg.credentialsFile == null || lib.hasPrefix "/" cfg.credentialsFile;
          message = "services.ferry-agent.credentialsFile must be an absolute path, got ${toString cfg.credentialsFile}";
        }
        {
          assertion = cfg.credentialsFile == null || !(lib.hasPrefix builtins.storeDir cfg.credentialsFile);
          message = "services.ferry-agent.credentialsFile is in the Nix store, which every user can read; keep the S3 credentials outside it (e.g. /run/keys or /var/lib/ferry-secrets)";
        }
        {
          assertion = cfg.status.credentialsFile == null || (lib.hasPrefix "/" cfg.status.credentialsFile && !(lib.hasPrefix builtins.storeDir cfg.status.credentialsFile));
          message = "services.ferry-agent.status.credentialsFile must be an absolute path outside the Nix store (which every user can read), got ${toString cfg.status.credentialsFile}";
        }
        {
          assertion = lowGidGroups == [];
          message = "services.ferry-agent: users with ferry.allowServices have primary groups without a fixed GID of 1000 or more (${builtins.concatStringsSep ", " lowGidGroups}); the agent refuses services in groups below 1000, where NixOS puts groups without a GID: set users.groups.<group>.gid = 1000 or more (e.g. users.groups.${builtins.head (lowGidGroups ++ ["GROUP"])}.gid = 1300;)";
        }
        {
          assertion = cfg.bucket != null || agentSettings ? bucket;
          message = "services.ferry-agent: set `bucket` (a URL, or a name with `endpoint` and `region`) or `settings.bucket`";
        }
        {
          assertion = cfg.bucket == null || builtins.match ".*://.*" cfg.bucket == null || (cfg.endpoint == null && cfg.region == null);
          message = "services.ferry-agent: `bucket` is a whole URL (${toString cfg.bucket}); put the endpoint and region in it (endpoint=…&region=…) instead of the `endpoint`/`region` options";
        }
      ];

      warnings = lib.optional (nodeExporter.enable && textfileDir == null && metricsFile == null) "services.ferry-agent: services.prometheus.exporters.node is enabled, but its extraFlags name no ${textfileFlag}, so node_exporter reads no textfile metrics and Ferry writes none; add \"${textfileFlag}=/var/lib/prometheus-node-exporter-text-files\" to services.prometheus.exporters.node.extraFlags (Ferry then writes ferry.prom there), or set services.ferry-agent.metrics.file";

      environment.etc."ferry/agent.toml".source = configFile;
      environment.systemPackages = [cfg.package];

      nix.settings.trusted-public-keys = cfg.trustedKeys;

      systemd.tmpfiles.rules =
        [
          "d ${stateDir} 0700 root root -"
          "d ${secretsDir} 0700 root root -"
          "d ${profileDir} 0755 root root -"
        ]
        # Made (root's, 0755) when missing; an existing directory keeps its mode and owner.
        ++ lib.optional (metricsDir != null) "d ${metricsDir} - - - -";

      systemd.services.ferry-agent = {
        description = "Ferry agent: bring this host in line with the deployment manifest";
        documentation = ["file:${configFile}"];
        wants = ["network-online.target"];
        # The daemon is socket-activated on NixOS: order after the socket too, so the first
        # `nix copy` of a boot tick finds it.
        after = ["network-online.target" "nix-daemon.socket" "nix-daemon.service" "systemd-tmpfiles-setup.service"];
        # A tick at boot, before multi-user.target: units under /run are gone after a reboot
        # and the agent re-creates them from its state (even when the bucket is down).
        wantedBy = ["multi-user.target"];
        before = ["multi-user.target"];
        # A configuration switch must not kill a tick half-way; the timer picks up changes.
        restartIfChanged = false;
        path = [config.nix.package];
        environment = {
          # Root would otherwise open the store directly, which ProtectSystem makes read-only.
          NIX_REMOTE = "daemon";
          # Nix keeps caches (and, from 2.14, profile state) under $HOME; root's home is
          # hidden by ProtectHome, so give it the unit's own writable cache directory.
          # Without credentialsFile the AWS default chain then reads ~/.aws from here too.
          HOME = "/var/cache/ferry-agent";
          FERRY_LOG = lib.mkDefault "info";
        };
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${lib.getExe' cfg.package "ferry-agent"} --config /etc/ferry/agent.toml reconcile";
          LoadCredential =
            lib.optional (cfg.credentialsFile != null) "${credentialName}:${cfg.credentialsFile}"
            ++ lib.optional (cfg.status.credentialsFile != null) "${statusCredentialName}:${cfg.status.credentialsFile}";
          # The fallback when that file is missing (e.g. /run/keys after a reboot, until the
          # keys are deployed again): without it systemd fails the unit before the agent
          # starts (243/CREDENTIALS) and the boot tick restores nothing. A comment, since
          # systemd refuses an empty value; the agent reads a file of comments as "no
          # credentials", makes no request and restores the services from its state.
          SetCredential =
            lib.optional (cfg.credentialsFile != null) "${credentialName}:# no credentials: ${cfg.credentialsFile} was missing"
            ++ lib.optional (cfg.status.credentialsFile != null) "${statusCredentialName}:# no credentials: ${cfg.status.credentialsFile} was missing";
          # Relaxed: root, not DynamicUser. The agent asks systemd over D-Bus to reload and
          # start units, and writes unit files and Nix profiles, all of which need root.
          User = "root";
          CacheDirectory = "ferry-agent";
          # The agent bounds itself: after timeouts.tickSec nothing new starts, and the step
          # under way (at most one dependency level's health checks, capped at 900 s by
          # validation) ends; the boot tick gives up after timeouts.bootSec and restores from
          # state. systemd's limit is the later of the two plus that step, so it only ever
          # ends an agent that is itself stuck (30 min with the defaults).
          # With system deploys, the switches' own bound comes on top.
          TimeoutStartSec = "${toString (longerTickSec + 900 + systemSwitchSec)}s";
          # A tick peaks at about 50 MB (the manifest is read to at most its 4 MiB cap) and
          # `nix copy` streams NARs; the cap is ten times that, and ends a runaway (the issue
          # saw 615 MB for one oversized manifest) before it starves the host's services.
          MemoryMax = lib.mkDefault "512M";

          ProtectSystem = "strict";
          # Relaxed: exactly what the agent writes — its state, the unit files it
          # generates and the per-service Nix profiles (GC roots). The store itself is
          # written by nix-daemon, not by this unit.
          # And the directory of metrics.file, which the agent replaces atomically (a temp
          # file beside it, then a rename).
          # (And a `file://` status store's directory, when that is where it reports.)
          ReadWritePaths = [stateDir unitDir profileDir] ++ lib.optional (metricsDir != null) metricsDir ++ lib.optional (statusDir != null) statusDir;
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          ProtectProc = "invisible";
          NoNewPrivileges = true;
          RestrictSUIDSGID = true;
          RestrictRealtime = true;
          RestrictNamespaces = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          # Relaxed: not ~@resources, since nix calls setrlimit for its evaluator stack at
          # start-up.
          SystemCallFilter = ["@system-service" "~@privileged"];
          # A syscall outside the filter fails with EPERM (and the agent logs it) rather
          # than killing a tick half-way.
          SystemCallErrorNumber = "EPERM";
          # Relaxed: AF_UNIX for D-Bus and the nix daemon socket, AF_INET/AF_INET6 for the
          # bucket, Caddy's admin API, health probes and the loopback cache proxy that
          # `nix copy` pulls through. No PrivateNetwork or IPAddressDeny for the same reason.
          RestrictAddressFamilies = ["AF_UNIX" "AF_INET" "AF_INET6"];
          # Not relaxed: no capabilities at all. systemd (over D-Bus) and the nix daemon
          # authorise the agent by its UID 0, and root writes its own root-owned files
          # (state, units, profiles) without CAP_DAC_OVERRIDE.
          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          # Relaxed: no PrivateUsers. Inside a user namespace the agent's UID 0 would not be
          # root to systemd, the nix daemon or the file system, which is all it talks to.
          UMask = "0077";
        };
      };

      systemd.timers.ferry-agent = {
        description = "Run the Ferry agent every ${cfg.interval}";
        wantedBy = ["timers.target"];
        timerConfig = {
          OnBootSec = cfg.interval;
          OnUnitActiveSec = cfg.interval;
          RandomizedDelaySec = cfg.randomizedDelay;
          # systemd's default (1 min) lets a tick start up to a minute late to batch wake-ups;
          # the random delay already spreads a fleet, and a deploy should not wait for it.
          AccuracySec = "1s";
          # systemd honours Persistent= for OnCalendar= only; with the monotonic timers above
          # the boot tick is what catches up after downtime.
          Persistent = true;
          Unit = unitName;
        };
      };
    }

    (lib.mkIf cfg.caddy.enable {
      services.caddy = {
        enable = true;
        # The agent adds its routes through this API; no other process of the host may.
        globalConfig = ''
          admin "${caddyAdminListen}"
        '';
      };
      systemd.services.caddy.serviceConfig = {
        # A Caddy start or reload forgets routes added through the API: run a tick then, so
        # they are back in seconds rather than at the next timer tick.
        ExecStartPost = lib.mkAfter [triggerTick];
        ExecReload = lib.mkAfter [triggerTick];
        # The admin socket's directory: only Caddy's user and group may enter it.
        RuntimeDirectory = "caddy";
        RuntimeDirectoryMode = "0750";
        # Caddy < 2.8 creates the socket with its umask: owner and group may connect.
        UMask = "0007";
      };
      systemd.services.ferry-agent = {
        wants = ["caddy.service"];
        after = ["caddy.service"];
        # Caddy's group opens its admin socket (the agent holds no capability that would
        # bypass the socket's permissions).
        serviceConfig.SupplementaryGroups = [caddyGroup];
      };
    })
  ]);
}
