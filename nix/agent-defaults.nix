# The agent's built-in defaults (agent/src/config.rs), with the agent's own key names.
# Plain Nix with no nixpkgs, so CI can evaluate it with
#   nix-instantiate --eval --strict --json nix/agent-defaults.nix
# and compare it with `ferry-agent config --defaults --json` (tests/tests/nix_defaults.rs).
# The module takes its defaults from here; `null` means "unset" (TOML has no null, so the
# module drops such keys from agent.toml).
{
  hostName = null;
  bucket = null;
  credentials = {
    profile = null;
    file = null;
  };
  trustedKeys = [];
  manifestKeys = [];
  stateDir = "/var/lib/ferry";
  unitDir = "/run/systemd/system";
  profileDir = "/nix/var/nix/profiles/ferry";
  generationsToKeep = 5;
  removedProfileRetentionDays = 30;
  secretsDir = "/var/lib/ferry-secrets";
  allowRoot = false;
  allowUnsignedManifests = false;
  rollbackByCopy = true;
  allowedUsers = [];
  allowedGroups = [];
  allowedUnits = ["network-online.target"];
  allowedPorts = "1024-65535";
  allowedWritePaths = [];
  timeouts = {
    fetchSec = 30;
    pullSec = 600;
    jobSec = 90;
    settleSec = 2;
    lockWaitSec = 10;
    drainSec = 5;
    tickSec = 900;
    bootSec = 120;
  };
  busAddress = null;
  nixBin = "nix";
  caddy = {
    enable = true;
    admin = "localhost:2019";
    server = "srv0";
    createServer = true;
    listen = [":443"];
    automaticHttps = true;
    timeoutSec = 5;
    domains = ["*"];
  };
  metrics.file = null;
  hooks = {
    onChange = [];
    onFailure = [];
    webhook = null;
    timeoutSec = 10;
  };
  status = {
    bucket = null;
    credentials = {
      profile = null;
      file = null;
    };
    everySec = 300;
  };
  system = {
    enable = false;
    switchTimeoutSec = 600;
  };
}
