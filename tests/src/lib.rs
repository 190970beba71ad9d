//! The test bed: real Garage, real systemd hosts in nspawn containers, Nix and Caddy.
