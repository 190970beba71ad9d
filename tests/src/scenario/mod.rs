//! The end-to-end scenario: a developer uses `ferry`; two hosts run `ferry-agent` from its
//! systemd timer with the configuration the NixOS module writes; Garage is the bucket; Caddy
//! in each host routes HTTP. Push → deploy → update → automatic rollback → manual rollbacks →
//! removal → outage and reboot → back. The CI test (tests/tests/end_to_end.rs) and the
//! README's demo (`ferry-demo`) run exactly these steps; every step checks what it claims and
//! fails with what it saw instead.

mod developer;
mod manifest;
pub mod narrate;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use crate::module_unit::AGENT;
use developer::Developer;
pub use manifest::{HOST_A, HOST_B, WEB_DOMAIN, WEB_PORT};
use narrate::{banner, done, output, say};

use crate::agent_bed::eventually;
use crate::agent_config::{install_module_agent_config, module_unit_options};
use crate::module_unit;
use crate::process::{capture, cmd};
use crate::{Bed, BedOptions, BindRo, Closures, Host, TickSummary};

/// The binaries the scenario runs: `ferry` on the machine, `ferry-agent` in the hosts.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The developer's `ferry`.
    pub ferry: PathBuf,
    /// The agent, bound read-only into every host.
    pub agent: PathBuf,
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The agent timer's interval.
    pub interval: Duration,
    /// When set, one more push is measured with the timer at this (longer) interval.
    pub slow_interval: Option<Duration>,
}

/// What the scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Timer interval → time from `ferry push` returning to the new version answering
    /// through Caddy.
    pub push_to_serving: Vec<(Duration, Duration)>,
    /// During the broken push: requests through Caddy answered by the old version, and the
    /// others (errors, or anything else).
    pub during_bad_push: (u32, u32),
    /// Every `tick:` summary line host A's agent printed.
    pub ticks: Vec<TickSummary>,
    /// Every `phases:` line host A's agent printed.
    pub phases: Vec<String>,
}

/// A running scenario: the bed (two hosts with the agent on a timer), the closures in the
/// bucket, and the developer.
pub struct Scenario {
    /// The bed; the demo keeps it running after the last step.
    pub bed: Bed,
    closures: &'static Closures,
    dev: Developer,
    options: Options,
    /// Filled in as the steps run.
    pub figures: Figures,
    /// The generation that first deployed web v1 (for `ferry rollback --to`).
    first_generation: String,
    /// The journal cursor: ticks since the scenario began.
    since: String,
    /// Host A's `services.ferry-agent` options (to re-render its timer).
    host_a_options: Value,
}

/// How long one agent reaction may take: a few timer intervals plus a tick with pulls.
fn reaction(options: &Options) -> Duration {
    options.interval * 4 + Duration::from_secs(60)
}

impl Scenario {
    /// Step 1: Garage, two hosts with the agent configured as the NixOS module writes it and
    /// its timer running, and the developer's `ferry` with the signing key.
    pub async fn start(bins: &Binaries, options: Options) -> Result<Scenario> {
        let t = Instant::now();
        banner("Building the test service's Nix closures (v1, v2, a broken v3), signed");
        let closures = Closures::get()?;
        say(&format!("v1 {}", closures.v1));
        say(&format!("v2 {}", closures.v2));
        say(&format!("v3 {} (its /health answers 503)", closures.broken));
        done(t);

        let t = Instant::now();
        banner("Starting the test bed: Garage (S3) and two systemd hosts with Caddy");
        let bed = Bed::start(BedOptions {
            hosts: 2,
            bind_ro: vec![BindRo {
                source: bins.agent.clone(),
                target: AGENT.into(),
            }],
            ..Default::default()
        })?;
        say(&format!(
            "bucket s3://{} at {}",
            bed.s3().bucket,
            bed.s3().endpoint
        ));
        for (i, name) in [HOST_A, HOST_B].iter().enumerate() {
            say(&format!("{name} at {} (Caddy on :80)", bed.host(i).ip()));
        }
        done(t);

        let t = Instant::now();
        banner(&format!(
            "Configuring ferry-agent on both hosts (NixOS module format), timer every {}s",
            options.interval.as_secs()
        ));
        let key = [closures.public_key.clone()];
        // A dead bucket must not hold a boot tick for long.
        // A short drain keeps the ticks that retire web's old instance short.
        let extra = "[timeouts]\nsettleSec = 1\nfetchSec = 10\ndrainSec = 1\n";
        let mut host_a_options = Value::Null;
        for (i, name) in [HOST_A, HOST_B].iter().enumerate() {
            let options = module_unit_options(bed.s3(), name, &key, &key, extra, options.interval)?;
            install_module_agent_config(bed.host(i), bed.s3(), &options)?;
            module_unit::install(bed.host(i), &options)?;
            if i == 0 {
                host_a_options = options;
            }
        }
        say("/etc/ferry/agent.toml: bucket, closure and manifest keys, Caddy's admin socket");
        say(
            "ferry-agent.service (oneshot, also at boot, sandboxed as the module declares it) \
             + ferry-agent.timer, enabled; nix-daemon writes the store",
        );
        done(t);

        let since = format!("@{}", unix_now());
        let dev = Developer::new(&bins.ferry, bed.s3(), &closures.secret_key_file)?;
        say(&format!(
            "the developer runs ferry with --bucket '{}' and the signing key {}",
            dev.bucket_url(),
            closures.secret_key_file.display()
        ));
        Ok(Scenario {
            bed,
            closures,
            dev,
            options,
            figures: Figures::default(),
            first_generation: String::new(),
            since,
            host_a_options,
        })
    }

    /// Steps 2–9, then the figures.
    pub async fn run(&mut self) -> Result<()> {
        self.first_deploy()?;
        self.push_update()?;
        self.bad_push()?;
        self.rollbacks().await?;
        self.remove_worker()?;
        self.outage_and_reboot()?;
        if let Some(slow) = self.options.slow_interval {
            self.push_with_interval(slow)?;
        }
        self.collect_figures()
    }

    fn host_a(&self) -> &Host {
        self.bed.host(0)
    }

    /// Steps 2, 3 and 9: upload v1, publish web + worker on host A and batch on host B; both
    /// come up, web answers through Caddy, batch runs on host B only.
    fn first_deploy(&mut self) -> Result<()> {
        let t = Instant::now();
        banner("Uploading the v1 closure and publishing the first manifest");
        let v1 = self.closures.v1.as_str();
        let upload = self.dev.ferry(&["upload", v1])?;
        say(&Developer::shown(&["upload", v1]));
        output(&upload.stdout);
        let file = self
            .dev
            .write_manifest("manifest.json", &manifest::initial(v1, v1, v1))?;
        let file = file.to_string_lossy().into_owned();
        let publish = self.dev.ferry(&["publish", &file])?;
        say(&Developer::shown(&["publish", "manifest.json"]));
        output(&publish.stdout);
        output(&publish.stderr);
        self.first_generation = generation(&self.dev.live()?)?;
        done(t);

        let t = Instant::now();
        banner("Waiting for the agents' timers: web and worker on host A, batch on host B");
        self.wait_web("1.0.0")?;
        say(&format!(
            "curl -H 'Host: {WEB_DOMAIN}' http://{}/version → 1.0.0",
            self.host_a().ip()
        ));
        let a = self.host_a();
        eventually("worker active on host A", reaction(&self.options), || {
            unit_active(a, "ferry-worker.service")
        })?;
        let b = self.bed.host(1);
        eventually("batch active on host B", reaction(&self.options), || {
            unit_active(b, "ferry-batch.service")
        })?;
        if unit_file_exists(a, "ferry-batch.service") {
            bail!("batch is listed for {HOST_B} only, yet {HOST_A} has a unit for it");
        }
        if unit_file_exists(b, "ferry-web@.service") {
            bail!("web is listed for {HOST_A} only, yet {HOST_B} has a unit for it");
        }
        say("worker active on host A; batch active on host B and absent from host A");
        done(t);
        Ok(())
    }

    /// Step 4: `ferry push web <v2>`; the agent picks it up on its own and v2 answers
    /// through Caddy.
    fn push_update(&mut self) -> Result<()> {
        banner("ferry push web v2: the agent deploys it at its next tick");
        let latency = self.push_and_wait(&self.closures.v2.clone(), "2.0.0")?;
        self.figures
            .push_to_serving
            .push((self.options.interval, latency));
        // Blue-green: v2 started beside v1 on the other port; v1 stops after the drain.
        let a = self.host_a();
        let live = self.web_unit()?;
        let old = format!("ferry-web@{WEB_PORT}.service");
        if live != format!("ferry-web@{}.service", WEB_PORT + 1) {
            bail!("web's live instance after the update is {live}, not the second port's");
        }
        eventually(
            "web's old instance stopped after the drain",
            reaction(&self.options),
            || Ok(!unit_active(a, &old)?),
        )?;
        say(&format!(
            "v2 runs as {live}; {old} (v1) was stopped after Caddy switched and a 1 s drain"
        ));
        Ok(())
    }

    /// Pushes `path` as web, prints ferry's output, and returns the time from the push
    /// returning to `version` answering through Caddy.
    fn push_and_wait(&self, path: &str, version: &str) -> Result<Duration> {
        let t = Instant::now();
        let out = self.dev.ferry(&["push", "web", path])?;
        say(&Developer::shown(&["push", "web", path]));
        output(&out.stdout);
        let pushed = Instant::now();
        self.wait_web(version)?;
        let latency = pushed.elapsed();
        say(&format!(
            "web answers {version} through Caddy {:.1} s after the push returned",
            latency.as_secs_f64()
        ));
        done(t);
        Ok(latency)
    }

    /// Step 5: a broken v3 fails its health check on the idle instance; nothing switches, v2
    /// keeps serving, the tick says so, and v3 is not retried.
    fn bad_push(&mut self) -> Result<()> {
        let t = Instant::now();
        banner(
            "ferry push web v3 (broken: /health answers 503): the agent tries it beside v2 and keeps v2",
        );
        let broken = self.closures.broken.clone();
        let out = self.dev.ferry(&["push", "web", &broken])?;
        say(&Developer::shown(&["push", "web", &broken]));
        output(&out.stdout);
        // Watch what clients see while the agent tries v3 and rolls back.
        let (mut old, mut other) = (0u32, 0u32);
        let deadline = Instant::now() + reaction(&self.options);
        let status = loop {
            match self.web_version()? {
                Some(v) if v == "2.0.0" => old += 1,
                _ => other += 1,
            }
            let status = self.agent_status()?;
            if status["quarantine"]["web"]["storePath"].as_str() == Some(broken.as_str()) {
                break status;
            }
            if Instant::now() > deadline {
                bail!("the agent did not quarantine web's v3 in time; status: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.wait_web("2.0.0")?;
        self.figures.during_bad_push = (old, other);
        say(&format!(
            "requests through Caddy meanwhile: {old} answered by v2, {other} not"
        ));
        say(&format!(
            "ferry-agent status: web quarantined {}",
            status["quarantine"]["web"]
        ));
        let journal = module_unit::journal(self.host_a(), &self.since)?;
        let line = journal
            .lines()
            .find(|l| l.starts_with("web:") && l.contains("FAILED") && l.contains("keeps serving"))
            .with_context(|| {
                format!("no tick said web's v3 failed and v2 kept serving:\n{journal}")
            })?;
        say(&format!("the tick said: {line}"));
        // The tick that rolled back exited 1, which systemd logs for the oneshot unit.
        let exits = self.host_a().sh_ok(
            "journalctl -q -u ferry-agent.service --no-pager -o cat | grep -c 'status=1/FAILURE' || true",
        )?;
        if exits.trim() == "0" {
            bail!(
                "no agent tick exited 1 although web's v3 failed:\n{}",
                self.diagnosis()
            );
        }
        say("that tick exited 1 (ferry-agent.service: status=1/FAILURE), so monitoring sees it");

        // Quarantine holds: later ticks leave web's v2 alone.
        let a = self.host_a();
        let show = format!(
            "systemctl show -p ActiveEnterTimestampMonotonic --value {}",
            self.web_unit()?
        );
        let started = a.sh_ok(&show)?;
        self.wait_ticks(2)?;
        let again = a.sh_ok(&show)?;
        if started != again {
            bail!("web was restarted after its v3 was quarantined");
        }
        say("two more ticks: web untouched (v3 is not retried)");
        done(t);
        Ok(())
    }

    /// Step 6: `ferry rollback --to` the first generation → v1; then a plain bucket copy of
    /// an archived manifest over manifest.json → the agent follows (v2).
    async fn rollbacks(&mut self) -> Result<()> {
        let t = Instant::now();
        banner("ferry rollback --to the first generation: web goes back to v1");
        let first = self.first_generation.clone();
        let out = self.dev.ferry(&["rollback", "--to", &first])?;
        say(&Developer::shown(&["rollback", "--to", &first]));
        output(&out.stdout);
        self.wait_web("1.0.0")?;
        say("web answers 1.0.0 through Caddy");
        done(t);

        let t = Instant::now();
        banner("Rollback without Ferry: copy an archived manifest over manifest.json");
        let key = self.archive_naming_web(&self.closures.v2).await?;
        let s3 = self.bed.s3();
        s3.client()
            .copy_object()
            .bucket(&s3.bucket)
            .copy_source(format!("{}/{key}", s3.bucket))
            .key("manifest.json")
            .send()
            .await
            .with_context(|| format!("copying {key} over manifest.json"))?;
        say(&format!(
            "copied {key} over manifest.json with a plain S3 CopyObject"
        ));
        self.wait_web("2.0.0")?;
        say("web answers 2.0.0 through Caddy");
        done(t);
        Ok(())
    }

    /// The newest archived manifest (under `manifests/`) whose web is `path`.
    async fn archive_naming_web(&self, path: &str) -> Result<String> {
        let s3 = self.bed.s3();
        let client = s3.client();
        let listed = client
            .list_objects_v2()
            .bucket(&s3.bucket)
            .prefix("manifests/")
            .send()
            .await
            .context("listing manifests/")?;
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        // Archive names carry the generation (RFC 3339, UTC): newest last when sorted.
        keys.sort();
        for key in keys.iter().rev() {
            let got = client
                .get_object()
                .bucket(&s3.bucket)
                .key(key)
                .send()
                .await
                .with_context(|| format!("reading {key}"))?;
            let bytes = got.body.collect().await?.into_bytes();
            let archived: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{key} is not JSON"))?;
            if manifest::store_path(&archived, "web") == Some(path) {
                return Ok(key.clone());
            }
        }
        bail!("no archived manifest under manifests/ names web {path}: {keys:?}")
    }

    /// Step 7: publish without worker → its unit stops and disappears; its profile stays.
    fn remove_worker(&mut self) -> Result<()> {
        let t = Instant::now();
        banner("ferry publish without worker: its unit goes, its profile (GC root) stays");
        let live = self.dev.live()?;
        let file = self
            .dev
            .write_manifest("without-worker.json", &manifest::without(&live, "worker"))?;
        let out = self.dev.ferry(&["publish", &file.to_string_lossy()])?;
        say(&Developer::shown(&["publish", "without-worker.json"]));
        output(&out.stdout);
        let a = self.host_a();
        eventually(
            "worker's unit removed on host A",
            reaction(&self.options),
            || Ok(!unit_file_exists(a, "ferry-worker.service")),
        )?;
        if unit_active(a, "ferry-worker.service")? {
            bail!("worker's unit file is gone but the service still runs");
        }
        // Removal keeps the profile (the GC root and rollback) at what worker last ran.
        let live_worker = manifest::store_path(&live, "worker")
            .context("the live manifest before the removal names no worker")?;
        let profile = a.sh_ok("readlink -f /nix/var/nix/profiles/ferry/worker")?;
        if profile.trim() != live_worker {
            bail!(
                "worker's profile after its removal points at {:?}, not at the closure it ran ({live_worker})",
                profile.trim()
            );
        }
        say(&format!(
            "worker stopped, unit deleted; profile kept → {}",
            profile.trim()
        ));
        done(t);
        Ok(())
    }

    /// Step 8: Garage down, host A rebooted → web and its route come back from local state;
    /// Garage back → the next tick finds nothing to do.
    fn outage_and_reboot(&mut self) -> Result<()> {
        let t = Instant::now();
        banner("Outage: Garage stops, host A reboots (/run is empty again)");
        self.bed.halt_garage();
        // The hosts' journal lives in /run: keep the figures of the ticks so far.
        self.harvest_ticks()?;
        self.since = format!("@{}", unix_now());
        self.bed.host_mut(0).poweroff()?;
        self.bed.host_mut(0).boot()?;
        say("host A booted; its boot tick cannot reach the bucket and restores from state");
        self.wait_web("2.0.0")?;
        let journal = module_unit::journal(self.host_a(), "-10min")?;
        if !journal.contains("restoring services from state") {
            bail!("host A's agent never said it restored from state:\n{journal}");
        }
        say("web answers 2.0.0 through Caddy again (unit, process and route restored)");
        done(t);

        let t = Instant::now();
        banner("Garage is back: the next tick finds nothing to do");
        self.bed.resume_garage()?;
        let a = self.host_a();
        let mut tick = None;
        eventually(
            "an ok tick after Garage came back",
            reaction(&self.options),
            || {
                // One tick now, in the unit (`systemctl start` waits for a oneshot): the
                // credentials exist only there.
                let since = format!("@{}", unix_now());
                let started = a.sh("systemctl start ferry-agent.service")?;
                let journal = module_unit::journal(a, &since)?;
                let Some(line) = journal.lines().rfind(|l| l.starts_with("tick:")) else {
                    return Ok(false);
                };
                let parsed = TickSummary::parse(line)?;
                let ok = started.success() && parsed.outcome()? == "ok";
                tick = Some(parsed);
                Ok(ok)
            },
        )?;
        let tick = tick.context("no tick ran after Garage came back")?;
        say(&tick.to_string());
        if tick.get("unitsTouched")? != 0 || tick.get("reloads")? != 0 {
            bail!("the first good tick after the outage changed something: {tick}");
        }
        done(t);
        Ok(())
    }

    /// Figures: the push latency with the timer at `interval`.
    fn push_with_interval(&mut self, interval: Duration) -> Result<()> {
        banner(&format!(
            "The same push with the timer at {}s (the latency is mostly the wait for the timer)",
            interval.as_secs()
        ));
        self.set_interval(interval)?;
        let slow = Options {
            interval,
            slow_interval: None,
        };
        let live = self.dev.live()?;
        let (path, version) =
            if manifest::store_path(&live, "web") == Some(self.closures.v1.as_str()) {
                (self.closures.v2.clone(), "2.0.0")
            } else {
                (self.closures.v1.clone(), "1.0.0")
            };
        let before = self.options.clone();
        self.options = slow;
        let latency = self.push_and_wait(&path, version);
        self.options = before;
        let latency = latency?;
        self.figures.push_to_serving.push((interval, latency));
        self.set_interval(self.options.interval)?;
        Ok(())
    }

    /// Host A's timer at `interval`, rendered from the module again.
    fn set_interval(&self, interval: Duration) -> Result<()> {
        let mut options = self.host_a_options.clone();
        options["interval"] = Value::String(format!("{}s", interval.as_secs().max(1)));
        module_unit::reinstall_timer(self.host_a(), &options)
    }

    /// Adds host A's tick and phase lines since `self.since` to the figures.
    fn harvest_ticks(&mut self) -> Result<()> {
        let journal = module_unit::journal(self.host_a(), &self.since)?;
        for line in journal.lines() {
            if line.starts_with("tick:") {
                self.figures.ticks.push(TickSummary::parse(line)?);
            } else if line.starts_with("phases:") {
                self.figures.phases.push(line.to_owned());
            }
        }
        Ok(())
    }

    /// The agent's tick and phase lines from host A's journal, summed up.
    fn collect_figures(&mut self) -> Result<()> {
        self.harvest_ticks()?;
        banner("Figures");
        for (interval, latency) in &self.figures.push_to_serving {
            say(&format!(
                "push → serving through Caddy, timer {}s: {:.1} s",
                interval.as_secs(),
                latency.as_secs_f64()
            ));
        }
        let peak_rss = max_measured(&self.figures.ticks, "peakRssKiB")?;
        let cpu = max_measured(&self.figures.ticks, "cpuMs")?;
        say(&format!(
            "{} ticks on host A; peak RSS {}, CPU at most {} per tick",
            self.figures.ticks.len(),
            peak_rss.map_or_else(
                || "unknown".to_owned(),
                |kib| format!("{:.1} MiB", kib as f64 / 1024.0)
            ),
            cpu.map_or_else(|| "unknown".to_owned(), |ms| format!("{ms} ms")),
        ));
        for line in self
            .figures
            .phases
            .iter()
            .filter(|l| !l.contains("systemdMs=0 "))
        {
            say(line);
        }
        Ok(())
    }

    /// Waits until web answers `version` through host A's Caddy.
    fn wait_web(&self, version: &str) -> Result<()> {
        let mut seen = None;
        eventually(
            &format!("web {version} through Caddy"),
            reaction(&self.options),
            || {
                seen = self.web_version()?;
                Ok(seen.as_deref() == Some(version))
            },
        )
        .with_context(|| {
            format!(
                "last answer: {seen:?}; host A's agent said:\n{}",
                self.diagnosis()
            )
        })
    }

    /// The timer's state and the last ticks' output on host A, for a failed wait.
    fn diagnosis(&self) -> String {
        let script = "systemctl list-timers --all --no-pager ferry-agent.timer; \
                      systemctl status --no-pager -n 0 ferry-agent.service; \
                      journalctl -q -u ferry-agent.service -o cat --no-pager -n 60";
        match self.host_a().sh(script) {
            Ok(out) => format!("{}{}", out.stdout, out.stderr),
            Err(e) => format!("(cannot read it: {e:#})"),
        }
    }

    /// What web answers on /version through host A's Caddy (`None`: no 200 answer).
    fn web_version(&self) -> Result<Option<String>> {
        let url = format!("http://{}/version", self.host_a().ip());
        let out = capture(
            &mut cmd(
                "curl",
                [
                    "-s",
                    "-m",
                    "2",
                    "-f",
                    "-H",
                    &format!("Host: {WEB_DOMAIN}"),
                    &url,
                ],
            ),
            b"",
        )?;
        Ok(out.success().then(|| out.stdout.trim().to_owned()))
    }

    /// `ferry-agent status --json` on host A.
    /// The unit that serves web on host A (its live blue-green instance), from the agent.
    fn web_unit(&self) -> Result<String> {
        let status = self.agent_status()?;
        status["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "web"))
            .and_then(|s| s["unit"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("web is not in the agent's status: {status}"))
    }

    fn agent_status(&self) -> Result<Value> {
        let text = self.host_a().sh_ok(&format!("{AGENT} status --json"))?;
        serde_json::from_str(&text).with_context(|| format!("status is not JSON: {text}"))
    }

    /// Waits until the timer has run `n` more ticks on host A.
    fn wait_ticks(&self, n: usize) -> Result<()> {
        let count = |h: &Host| -> Result<usize> {
            Ok(module_unit::journal(h, &self.since)?
                .lines()
                .filter(|l| l.starts_with("tick:"))
                .count())
        };
        let a = self.host_a();
        let start = count(a)?;
        eventually(&format!("{n} more ticks"), reaction(&self.options), || {
            Ok(count(a)? >= start + n)
        })
    }
}

/// The manifest's generation.
fn generation(manifest: &Value) -> Result<String> {
    manifest["generation"]
        .as_str()
        .map(str::to_owned)
        .context("the live manifest has no generation")
}

fn unit_active(host: &Host, unit: &str) -> Result<bool> {
    Ok(host
        .sh(&format!("systemctl is-active -q {unit}"))?
        .success())
}

fn unit_file_exists(host: &Host, unit: &str) -> bool {
    host.path_in_host(&format!("/run/systemd/system/{unit}"))
        .exists()
}

/// The largest figure `key` among `ticks`; `None` when no tick could measure it (the
/// agent printed `unknown`), so an unreadable figure is never shown as 0.
fn max_measured(ticks: &[TickSummary], key: &str) -> Result<Option<u64>> {
    let mut max = None;
    for tick in ticks {
        max = max.max(tick.measured(key)?);
    }
    Ok(max)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_measured_reads_tick_lines_and_keeps_unknown_apart() -> Result<()> {
        let ticks = [
            "tick: outcome=ok cpuMs=12 peakRssKiB=16000",
            "tick: outcome=ok cpuMs=250 peakRssKiB=80720",
        ]
        .map(TickSummary::parse)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        assert_eq!(max_measured(&ticks, "peakRssKiB")?, Some(80720));
        assert_eq!(max_measured(&ticks, "cpuMs")?, Some(250));
        assert!(max_measured(&ticks, "nothing").is_err());
        let unknown = [TickSummary::parse("tick: cpuMs=unknown")?];
        assert_eq!(max_measured(&unknown, "cpuMs")?, None);
        Ok(())
    }
}
