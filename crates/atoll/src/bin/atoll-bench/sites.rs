//! `atoll-bench sites`: many virtual sites in this process against a real control plane in
//! another, over the real protocol and real TLS, and the figures the scale targets are about.
//!
//! The run: apply N sites and an application placed on all of them; make a join token per
//! site; enroll every site (bounded concurrency, as a fleet being rolled out would be); wait
//! until each holds its first manifest and has reported; apply changes that reach every site
//! and time each site's new manifest from the moment the apply was sent; then leave the fleet
//! idle and read the control plane's CPU time, memory and the traffic. The control plane is a
//! child process (`atoll control`, from the `atoll` binary beside this one) so that `/proc`
//! tells its usage apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use atoll_api::agent::{CreateTokenRequest, CreateTokenResponse};
use atoll_api::{ApplyRequest, ApplyResponse};
use atoll_spec::Source;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::Semaphore;

use crate::control::{ControlPlane, Usage, raise_open_files, usage};
use crate::site::{self, Sites, Slot};
use crate::wire::{Counters, Endpoint};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run N virtual sites against a control plane and print enrollment time, propagation
    /// latency, the control plane's CPU and memory, requests served and idle traffic.
    Sites(SitesArgs),
}

#[derive(Debug, clap::Args)]
pub struct SitesArgs {
    /// How many virtual sites.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Benchmark this running control plane instead of starting one (needs --token and
    /// --ca-file; its CPU and memory are read only with --pid).
    #[arg(long, requires_all = ["token", "ca_file"])]
    control: Option<String>,
    /// An admin token for --control.
    #[arg(long, env = "ATOLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA certificate of --control.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The process id of --control, to read its CPU time and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// The data folder of the control plane this run starts (default: a scratch folder,
    /// removed at the end); with several replicas, each gets `replica-N` in it.
    #[arg(long, conflicts_with = "control")]
    data_dir: Option<PathBuf>,
    /// The store of the control planes this run starts, such as
    /// postgres://atoll@127.0.0.1:5432/bench: an empty database (default: SQLite in the
    /// data folder).
    #[arg(long, conflicts_with = "control")]
    store: Option<String>,
    /// How many control-plane replicas this run starts, on the database of --store (needed
    /// past one); site N talks to replica N modulo this, and changes are applied through the
    /// first, so most sites learn of them through another replica.
    #[arg(long, default_value_t = 1, conflicts_with = "control")]
    replicas: usize,
    /// Enrollments under way at once.
    #[arg(long, default_value_t = 64)]
    enroll_concurrency: usize,
    /// How many changes to apply and time, one after another.
    #[arg(long, default_value_t = 3)]
    changes: usize,
    /// How long the idle fleet is watched at the end, such as 120s (at least two --poll-wait).
    #[arg(long, default_value = "120s")]
    steady: String,
    /// How long each long-poll asks to be held, as the agent does (at most 60s).
    #[arg(long, default_value = "30s")]
    poll_wait: String,
}

pub async fn run(command: Command) -> Result<()> {
    let Command::Sites(args) = command;
    sites(args).await
}

/// The image the bench application names; no site runs it, the runtime is fake.
const IMAGE: &str = "atoll.local/demo:bench";
/// How long to wait for the whole fleet at any step before giving up.
const PATIENCE: Duration = Duration::from_secs(600);

async fn sites(args: SitesArgs) -> Result<()> {
    let n = args.count;
    if n == 0 || n > 99_999 {
        bail!("--count must be between 1 and 99999");
    }
    let span = |text: &str, what: &str| {
        atoll_spec::units::Span::parse(text)
            .map(|s| s.0)
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))
    };
    let steady = span(&args.steady, "--steady")?;
    let poll_wait = span(&args.poll_wait, "--poll-wait")?.clamp(
        Duration::from_secs(1),
        atoll_control::shell::agents::MAX_WAIT,
    );
    if steady < poll_wait * 2 {
        eprintln!(
            "warning: --steady shorter than two --poll-wait sees too few long-polls end for the idle figures to mean much"
        );
    }
    // Each site holds one connection, and the control plane the other end; enrollments under
    // way and reconnections need a few more.
    let wanted = u64::try_from(n).unwrap_or(u64::MAX) + 2048;
    let open_files = raise_open_files(wanted);
    if open_files < wanted {
        eprintln!(
            "warning: open files are limited to {open_files}, {n} sites may need {wanted}; raise `ulimit -n`"
        );
    }
    if args.replicas == 0 || args.replicas > 16 {
        bail!("--replicas must be between 1 and 16");
    }
    if args.replicas > 1
        && !args
            .store
            .as_deref()
            .is_some_and(|s| s.starts_with("postgres"))
    {
        bail!(
            "--replicas {} needs --store postgres://…: replicas share one PostgreSQL database",
            args.replicas
        );
    }
    let mut cps = Vec::new();
    let started = match &args.control {
        Some(url) => ControlPlane::existing(
            url.clone(),
            args.token.clone().unwrap_or_default(),
            args.ca_file.as_deref().unwrap_or(std::path::Path::new("")),
            args.pid,
        )
        .map(|cp| cps.push(cp)),
        None => spawn_replicas(&args, &mut cps).await,
    };
    let result = match started {
        Ok(()) => drive(&cps, n, &args, steady, poll_wait).await,
        Err(e) => Err(e),
    };
    for cp in cps {
        cp.stop().await;
    }
    result
}

/// Starts `--replicas` control planes into `cps`, the first making the keys the others are
/// given; each started one is in `cps` even if a later one fails, so that all are stopped.
async fn spawn_replicas(args: &SitesArgs, cps: &mut Vec<ControlPlane>) -> Result<()> {
    for i in 0..args.replicas {
        let dir = match (&args.data_dir, args.replicas) {
            (Some(dir), 1) => Some(dir.clone()),
            (Some(dir), _) => Some(dir.join(format!("replica-{i}"))),
            (None, _) => None,
        };
        let keys_from = cps.first().map(|first: &ControlPlane| first.dir.clone());
        let cp = ControlPlane::spawn(dir, args.store.as_deref(), keys_from.as_deref())
            .await
            .with_context(|| format!("replica {i}"))?;
        cps.push(cp);
    }
    Ok(())
}

/// Everything read at one moment: each control plane's usage, the generator's, the counters.
#[derive(Debug, Clone)]
struct Mark {
    at: Instant,
    /// Each replica's, in order.
    control: Vec<Option<Usage>>,
    generator: Option<Usage>,
    counters: [u64; 6],
}

impl Mark {
    fn now(pids: &[Option<u32>], counters: &Counters) -> Mark {
        Mark {
            at: Instant::now(),
            control: pids
                .iter()
                .map(|p| p.and_then(|p| usage(Some(p))))
                .collect(),
            generator: usage(None),
            counters: counters.snapshot(),
        }
    }
}

/// What happened between two marks, in words.
fn between(a: &Mark, b: &Mark) -> String {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let delta = |i: usize| b.counters[i].saturating_sub(a.counters[i]);
    let cpu = |x: Option<Usage>, y: Option<Usage>| match cpu_seconds(x, y) {
        Some(s) => format!("{s:.1} CPU s ({:.1}% of one core)", 100.0 * s / secs),
        None => "CPU not known".to_owned(),
    };
    let control = match (a.control.as_slice(), b.control.as_slice()) {
        ([x], [y]) => format!("control plane {}", cpu(*x, *y)),
        (xs, ys) => {
            let each: Vec<String> = xs
                .iter()
                .zip(ys)
                .enumerate()
                .map(|(i, (x, y))| format!("replica {i} {}", cpu(*x, *y)))
                .collect();
            format!("control planes {}", each.join(", "))
        }
    };
    format!(
        "{:.1} s: {} requests ({:.0}/s), {} answered 503, {} errors; {control}; generator {}",
        secs,
        delta(2),
        delta(2) as f64 / secs,
        delta(3),
        delta(4),
        cpu(a.generator, b.generator),
    )
}

/// The CPU time spent between two readings of one process, when both were made.
fn cpu_seconds(x: Option<Usage>, y: Option<Usage>) -> Option<f64> {
    Some(y?.cpu.saturating_sub(x?.cpu).as_secs_f64())
}

async fn drive(
    cps: &[ControlPlane],
    n: usize,
    args: &SitesArgs,
    steady: Duration,
    poll_wait: Duration,
) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let planes: Vec<String> = cps
        .iter()
        .map(|cp| {
            format!(
                "{} (pid {})",
                cp.url,
                cp.pid
                    .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
            )
        })
        .collect();
    println!(
        "atoll-bench sites: {n} virtual sites, {} {}, {cores} CPUs shared with this generator",
        if cps.len() == 1 {
            "control plane".to_owned()
        } else {
            format!(
                "{} control-plane replicas on one PostgreSQL database, sites spread over them round robin, changes applied through the first:",
                cps.len()
            )
        },
        planes.join(", ")
    );
    let cp = &cps[0];
    let pids: Vec<Option<u32>> = cps.iter().map(|cp| cp.pid).collect();
    let admin = atoll_cli::client::Client::new(cp.url.clone(), cp.token.clone(), &cp.ca_pem)
        .map_err(|e| anyhow::anyhow!("admin client: {}", e.message))?;
    let names: Vec<String> = (1..=n).map(|i| format!("bench-{i:05}")).collect();

    // The fleet's desired state: the sites, and an application placed on all of them.
    let started = Instant::now();
    let mut yaml = String::with_capacity(n * 100);
    for name in &names {
        yaml.push_str(&format!(
            "kind: Site\nname: {name}\nlabels: {{ bench: \"yes\" }}\nvariables: {{ greeting: \"hello from {name}\" }}\n---\n"
        ));
    }
    yaml.push_str(&application());
    yaml.push_str(&deployment("bench"));
    let setup = apply(&admin, yaml).await?;
    println!(
        "setup: {n} sites and an application placed on every one applied in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let tokens = join_tokens(&admin, &names).await?;
    println!(
        "setup: {n} join tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let sites = Arc::new(fleet(cps, names, args, poll_wait)?);
    let counters = sites.counters.clone();
    let before = Mark::now(&pids, &counters);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        tasks.spawn(site::run(sites.clone(), i, token));
    }
    wait_for(&sites, "every site enrolled", || {
        sites.enrolled.load(Ordering::Relaxed) as usize >= n
    })
    .await?;
    let enrolled = Mark::now(&pids, &counters);
    let took = enrolled.at.duration_since(before.at).as_secs_f64();
    println!(
        "enrollment: {n} sites in {took:.1} s ({:.0} enrollments/s)",
        n as f64 / took
    );
    // Every site holds a manifest and has reported the status of running it.
    let first = targets(&sites, &setup)?;
    wait_for(&sites, "every site holding its first manifest", || {
        sites.all_accepted(&first)
    })
    .await?;
    let holding = Mark::now(&pids, &counters);
    wait_for(&sites, "every site's first report", || {
        sites.all_reported(&first)
    })
    .await?;
    let settled = Mark::now(&pids, &counters);
    println!(
        "  every site holding its first manifest {:.1} s after the first enrollment began; reports all in after {:.1} s",
        holding.at.duration_since(before.at).as_secs_f64(),
        settled.at.duration_since(before.at).as_secs_f64()
    );
    println!("  enrollment phase: {}", between(&before, &settled));

    let mut worst = Duration::ZERO;
    let mut worst_p99 = Duration::ZERO;
    for change in 1..=args.changes {
        let start = Mark::now(&pids, &counters);
        let response = apply(&admin, deployment(&format!("bench-change-{change}"))).await?;
        let applied = start.at.elapsed();
        let targets = targets(&sites, &response)?;
        wait_for(&sites, "every site holding the new manifest", || {
            sites.all_accepted(&targets)
        })
        .await?;
        let held = Mark::now(&pids, &counters);
        let mut latencies: Vec<Duration> = sites
            .slots
            .iter()
            .map(|s| {
                s.accepted()
                    .1
                    .map_or(Duration::MAX, |t| t.saturating_duration_since(start.at))
            })
            .collect();
        latencies.sort_unstable();
        let pick =
            |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, n) - 1];
        let (p50, p99, max) = (pick(0.5), pick(0.99), pick(1.0));
        let within = |limit: Duration| latencies.iter().filter(|l| **l <= limit).count();
        worst = worst.max(max);
        worst_p99 = worst_p99.max(p99);
        println!(
            "propagation, change {change}: apply answered in {:.2} s; every site holds the new manifest: p50 {:.2} s, p99 {:.2} s, max {:.2} s ({:.1}% within 2 s, {:.1}% within 5 s)",
            applied.as_secs_f64(),
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            max.as_secs_f64(),
            100.0 * within(Duration::from_secs(2)) as f64 / n as f64,
            100.0 * within(Duration::from_secs(5)) as f64 / n as f64,
        );
        println!("  until every site held it: {}", between(&start, &held));
        wait_for(&sites, "every site's report of the new manifest", || {
            sites.all_reported(&targets)
        })
        .await?;
        let reported = Mark::now(&pids, &counters);
        println!(
            "  until every report was in ({:.1} s after the apply): {}",
            reported.at.duration_since(start.at).as_secs_f64(),
            between(&start, &reported)
        );
    }

    // The idle fleet: every site holds a long-poll, nothing changes.
    let quiet = Mark::now(&pids, &counters);
    tokio::time::sleep(steady).await;
    let idle = Mark::now(&pids, &counters);
    let secs = idle.at.duration_since(quiet.at).as_secs_f64();
    let bytes = (idle.counters[0] - quiet.counters[0]) + (idle.counters[1] - quiet.counters[1]);
    let per_site_hour = bytes as f64 / n as f64 * 3600.0 / secs;
    println!("steady state, idle: {}", between(&quiet, &idle));
    // Each replica's share of a core, resident memory and peak, when /proc was read.
    let steady_usage: Vec<Option<(f64, u64, u64)>> = quiet
        .control
        .iter()
        .zip(&idle.control)
        .map(|(a, b)| {
            let share = 100.0 * cpu_seconds(*a, *b)? / secs;
            let b = (*b)?;
            Some((share, b.rss_kb, b.peak_rss_kb))
        })
        .collect();
    let label = |i: usize| {
        if steady_usage.len() == 1 {
            "control plane".to_owned()
        } else {
            format!("replica {i}")
        }
    };
    let mb = |kb: u64| kb as f64 / 1024.0;
    for (i, usage) in steady_usage.iter().enumerate() {
        if let Some((share, rss, peak)) = usage {
            println!(
                "  {} at steady state: {share:.2}% of one core, RSS {:.0} MiB (peak over the run {:.0} MiB)",
                label(i),
                mb(*rss),
                mb(*peak)
            );
        }
    }
    println!(
        "  requests per second served at steady state: {:.0}; idle traffic: {:.1} KB per site per hour ({} bytes of TLS records both ways over {secs:.0} s, TCP/IP headers not counted)",
        (idle.counters[2] - quiet.counters[2]) as f64 / secs,
        per_site_hour / 1000.0,
        bytes
    );
    let generator = idle.generator.unwrap_or_default();
    println!(
        "  generator: RSS {:.0} MiB, {} connections opened over the run",
        mb(generator.rss_kb),
        idle.counters[5]
    );

    println!("summary for {n} sites (target in brackets):");
    let enroll_secs = enrolled.at.duration_since(before.at).as_secs_f64();
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "  enrollment of every site: {enroll_secs:.1} s [< 120 s for 10,000]: {}",
        mark(enroll_secs < 120.0 * n as f64 / 10_000.0)
    );
    if args.changes > 0 {
        println!(
            "  propagation, worst p99 {:.2} s [<= 2 s], worst max {:.2} s [<= 5 s]: {}",
            worst_p99.as_secs_f64(),
            worst.as_secs_f64(),
            mark(worst_p99 <= Duration::from_secs(2) && worst <= Duration::from_secs(5))
        );
    }
    for (i, usage) in steady_usage.iter().enumerate() {
        if let Some((share, rss, _)) = usage {
            println!(
                "  {} at steady state: {share:.2}% of one core [< 10%], RSS {:.0} MiB [< 1024]: {}",
                label(i),
                mb(*rss),
                mark(*share < 10.0 && mb(*rss) < 1024.0)
            );
        }
    }
    println!(
        "  idle traffic: {:.1} KB per site per hour [< 50]: {}",
        per_site_hour / 1000.0,
        mark(per_site_hour < 50_000.0)
    );
    tasks.abort_all();
    Ok(())
}

/// Waits, checking every 50 ms, until `done` holds, or fails after [`PATIENCE`].
async fn wait_for(sites: &Sites, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() > deadline {
            let c = sites.counters.snapshot();
            bail!(
                "gave up waiting for {what} after {} s ({} enrolled, {} errors, {} answered 503)",
                PATIENCE.as_secs(),
                sites.enrolled.load(Ordering::Relaxed),
                c[4],
                c[3]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn application() -> String {
    format!(
        "kind: Application\nname: bench\nversion: \"1\"\nservices:\n  - name: web\n    image: {IMAGE}\n    args: [demo, serve, --listen, \"0.0.0.0:8080\"]\n    env:\n      GREETING: \"{{{{ site.variables.greeting }}}}\"\n---\n"
    )
}

/// A deployment of the bench application on every bench site: the first one at setup, one
/// more for each change (a deployment's first version goes everywhere at once, no rollout).
fn deployment(name: &str) -> String {
    format!(
        "kind: Deployment\nname: {name}\napplication: bench\nplacement:\n  sites: \"bench == yes\"\n"
    )
}

async fn apply(admin: &atoll_cli::client::Client, yaml: String) -> Result<ApplyResponse> {
    let request = ApplyRequest {
        sources: vec![Source {
            name: "bench.yaml".into(),
            text: yaml,
        }],
        dry_run: false,
    };
    admin
        .post("/v1/apply", &request)
        .await
        .map_err(|e| anyhow::anyhow!("apply: {}", e.message))
}

/// One join token per site, a few requests at a time.
async fn join_tokens(admin: &atoll_cli::client::Client, names: &[String]) -> Result<Vec<String>> {
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (admin, gate, site) = (admin.clone(), gate.clone(), name.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await;
            let request = CreateTokenRequest {
                site,
                ttl_seconds: Some(3600),
                uses: Some(1),
            };
            let made: Result<CreateTokenResponse, _> = admin.post("/v1/tokens", &request).await;
            (i, made.map(|r| r.token).map_err(|e| e.message))
        });
    }
    let mut tokens = vec![String::new(); names.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, token) = joined.context("a token request failed")?;
        tokens[i] = token.map_err(|e| anyhow::anyhow!("join token for {}: {e}", names[i]))?;
    }
    Ok(tokens)
}

fn fleet(
    cps: &[ControlPlane],
    names: Vec<String>,
    args: &SitesArgs,
    poll_wait: Duration,
) -> Result<Sites> {
    let counters = Arc::new(Counters::default());
    let endpoints = cps
        .iter()
        .map(|cp| endpoint(cp, counters.clone()))
        .collect::<Result<Vec<_>>>()?;
    // Replicas share their CA: the first one's is every one's.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cps[0].ca_pem) {
        roots.add(cert.context("the CA certificate")?)?;
    }
    let roots = Arc::new(roots);
    let mut enroll_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    enroll_tls.alpn_protocols = vec![b"h2".to_vec()];
    // On loopback, connect from many addresses: each has its own range of ports, and tens of
    // thousands of connections (and their TIME_WAITs) would exhaust one.
    let addr = endpoints[0].addr;
    let sources: Vec<IpAddr> = if addr.ip().is_loopback() && addr.is_ipv4() {
        (2..34)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect()
    } else if addr.is_ipv4() {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
    } else {
        vec![IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)]
    };
    Ok(Sites {
        endpoints,
        counters,
        enroll_tls: Arc::new(enroll_tls),
        roots,
        poll_wait,
        enroll_gate: Semaphore::new(args.enroll_concurrency.max(1)),
        enrolled: std::sync::atomic::AtomicU64::new(0),
        slots: names.into_iter().map(Slot::new).collect(),
        sources,
    })
}

/// Where one control plane is, counting into `counters`.
fn endpoint(cp: &ControlPlane, counters: Arc<Counters>) -> Result<Endpoint> {
    let url = cp.url.trim_end_matches('/');
    let authority = url
        .strip_prefix("https://")
        .context("the control plane's URL is not https://")?
        .to_owned();
    let addr: SocketAddr = authority
        .to_socket_addrs()?
        .next()
        .context("the control plane's address does not resolve")?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Endpoint {
        addr,
        server_name: ServerName::try_from(host).context("the control plane's host name")?,
        authority,
        counters,
    })
}

/// The revision each site must reach for a change: from the apply's answer.
fn targets(sites: &Sites, response: &ApplyResponse) -> Result<Vec<u64>> {
    let by_site: std::collections::HashMap<&str, u64> = response
        .manifests
        .iter()
        .map(|m| (m.site.as_str(), m.revision))
        .collect();
    sites
        .slots
        .iter()
        .map(|s| {
            by_site
                .get(s.name.as_str())
                .copied()
                .with_context(|| format!("the change did not reach site {}", s.name))
        })
        .collect()
}
