# Maps the module's typed options to the agent's settings (the keys of agent.toml).
# Pure Nix with no nixpkgs, so CI evaluates exactly this mapping and feeds the result to the
# real agent (tests/tests/nix_agent_config.rs). The module renders the result with
# pkgs.formats.toml.
#
# `settings` (the module's freeform option) wins over every typed option, key by key, and a
# `null` anywhere removes that key, so `settings.hostName = null` makes the agent read the
# machine's hostname itself.
{
  # A whole `s3://…` (Nix's S3 store URL) or `file://…` URL, passed on as it is; or a
  # bucket name, with `endpoint` and `region` as the URL's query. `settings.bucket`
  # replaces either.
  bucket ? null,
  endpoint ? null,
  region ? null,
  # The credentials file's profile (agent.toml `credentials.profile`).
  credentialsProfile ? null,
  # Where the agent reads the shared-credentials file at run time (the LoadCredential=
  # path), or null for the AWS default chain.
  credentialsPath ? null,
  trustedKeys ? [],
  manifestKeys ? [],
  hostName ? null,
  secretsDir ? null,
  generationsToKeep ? null,
  # Host policy (agent.toml keys of the same names; `caddyDomains` is `caddy.domains`).
  allowUnsignedManifests ? null,
  rollbackByCopy ? null,
  allowedUsers ? null,
  allowedGroups ? null,
  allowedUnits ? null,
  allowedPorts ? null,
  allowedWritePaths ? null,
  caddyDomains ? null,
  nixBin ? null,
  # The agent's [caddy] table: whether it routes HTTP services through Caddy at all, and
  # where Caddy's admin API listens.
  caddyEnable ? null,
  caddyAdmin ? null,
  # agent.toml `metrics.file`: where the agent writes its Prometheus metrics.
  metricsFile ? null,
  # The agent's [status] table: the status store's URL (passed on as it is), where the
  # agent reads its credentials file at run time (its LoadCredential= path) and which
  # profile of it, and how often a quiet host reports.
  statusBucket ? null,
  statusCredentialsPath ? null,
  statusCredentialsProfile ? null,
  statusEverySec ? null,
  # The agent's [system] table: whole NixOS system deploys, and the bound of one
  # switch-to-configuration.
  systemEnable ? null,
  systemSwitchTimeoutSec ? null,
  settings ? {},
}: let
  # "a=1&b=2" from the non-null entries, in a fixed order so the file is reproducible.
  query = params: let
    set = builtins.filter (p: p.value != null) params;
  in
    builtins.concatStringsSep "&" (map (p: "${p.name}=${p.value}") set);

  bucketUrl =
    if bucket == null
    then null
    else if builtins.match ".*://.*" bucket != null
    then bucket
    else let
      q = query [
        {
          name = "endpoint";
          value = endpoint;
        }
        {
          name = "region";
          value = region;
        }
      ];
    in
      "s3://${bucket}"
      + (
        if q == ""
        then ""
        else "?${q}"
      );

  fromOptions = {
    inherit hostName trustedKeys manifestKeys secretsDir generationsToKeep nixBin;
    inherit allowUnsignedManifests rollbackByCopy allowedUsers allowedGroups allowedUnits allowedPorts allowedWritePaths;
    bucket = bucketUrl;
    credentials = {
      file = credentialsPath;
      profile = credentialsProfile;
    };
    caddy = {
      enable = caddyEnable;
      admin = caddyAdmin;
      domains = caddyDomains;
    };
    metrics.file = metricsFile;
    status = {
      bucket = statusBucket;
      credentials = {
        file = statusCredentialsPath;
        profile = statusCredentialsProfile;
      };
      everySec = statusEverySec;
    };
    system = {
      enable = systemEnable;
      switchTimeoutSec = systemSwitchTimeoutSec;
    };
  };

  # Right wins; attribute sets are merged key by key, anything else is replaced.
  merge = left: right:
    left
    // builtins.mapAttrs (
      name: value:
        if builtins.isAttrs value && builtins.isAttrs (left.${name} or null)
        then merge left.${name} value
        else value
    )
    right;

  # TOML cannot say null: drop null keys, and tables left empty by that.
  dropNulls = attrs: let
    cleaned =
      builtins.mapAttrs (
        _: value:
          if builtins.isAttrs value
          then dropNulls value
          else value
      )
      attrs;
  in
    builtins.removeAttrs cleaned (builtins.filter (
      name: let
        value = cleaned.${name};
      in
        value == null || value == {}
    ) (builtins.attrNames cleaned));
in
  dropNulls (merge fromOptions settings)
