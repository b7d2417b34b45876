//! The `ferry` binary: argument parsing and printing. All logic lives in the
//! library; this file only turns arguments into calls and errors into one
//! line and an exit status.

use std::io::{self, IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use ferry::client::{self, Client, ClientError, HostPort, Progress};
use ferry::display::{escape_bytes, escape_controls};
use ferry::protocol::EntryKind;
use ferry::raw;
use ferry::server::{self, Config, RawMode, DEFAULT_PORT};

/// Move files over TCP: a server that serves a directory to many clients at
/// once, and a client that downloads from it, resumably and verified.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a directory, read-only, to ferry clients, the tutorial's
    /// programs and netcat.
    Serve(ServeArgs),
    /// Download files (resumable, BLAKE3-verified).
    Get(GetArgs),
    /// List a remote directory.
    Ls(LsArgs),
    /// Send a message (or each line typed at a `> ` prompt) and print the
    /// server's acknowledgement.
    Say(SayArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory to serve.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// TCP port; 0 picks a free one (the startup line shows it).
    #[arg(short, long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on [default: all interfaces, IPv4 and IPv6].
    #[arg(short, long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Most connections served at once; beyond it, the longest-idle
    /// connection is closed to make room, or the newcomer told "server busy".
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// What to do with clients that do not speak ferry's protocol (the
    /// tutorial's programs, netcat).
    #[arg(long, value_enum, default_value_t = RawArg::File)]
    raw: RawArg,
    /// Acknowledgement sent for each message.
    #[arg(long, value_name = "TEXT", default_value = server::DEFAULT_ACK)]
    ack: String,
    /// Seconds a connection may stay silent before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    idle_timeout: u64,
    /// Seconds transfers in flight may continue after Ctrl-C / SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    grace: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RawArg {
    /// Serve the file whose name the client sends (the tutorial's downloader).
    File,
    /// Print each message and acknowledge it (the tutorial's message servers).
    Message,
    /// Refuse raw clients.
    Off,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// Server: HOST[:PORT], HOST a name, an IPv4 address or [IPv6].
    host: String,
    /// Remote files, relative to the served directory. With none, asks for one.
    remote_paths: Vec<String>,
    /// Directory to save into (created if missing); `-` writes the file to
    /// standard output (still verified: a mismatch exits non-zero).
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    output: PathBuf,
    /// Download directories recursively, as OUT/<last component of DIR>/...
    #[arg(short, long)]
    recursive: bool,
    /// Parallel connections: a large file is split into ranges, a tree's
    /// files are spread over them.
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// Talk to a tutorial-style server: send the bare name, save until close.
    #[arg(long)]
    raw: bool,
    /// No progress bar and no summary lines.
    #[arg(short, long)]
    quiet: bool,
    /// Skip the BLAKE3 check (saves the client a core of hashing; a
    /// corrupted transfer then goes unnoticed). For benchmarks and trusted
    /// links only.
    #[arg(long)]
    no_verify: bool,
}

#[derive(Debug, clap::Args)]
struct LsArgs {
    /// Server: HOST[:PORT].
    host: String,
    /// Remote directory [default: the served directory itself].
    #[arg(default_value = "")]
    remote_path: String,
}

#[derive(Debug, clap::Args)]
struct SayArgs {
    /// Server: HOST[:PORT].
    host: String,
    /// The message. With none, sends each line typed at a `> ` prompt until
    /// end of input.
    message: Option<String>,
    /// Talk to a tutorial-style server: send the text as is.
    #[arg(long)]
    raw: bool,
    /// With --raw: seconds to wait for an answer (none is not an error).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    wait: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    // The server spreads connections over every core, and so does a client
    // with several connections (-j: each lane's file creation is kernel work
    // that another core can do meanwhile). A single sequence of requests runs
    // on one thread, where cross-thread wake-ups would only add latency (its
    // bulk work happens in the kernel and on its hashing thread).
    let parallel = match &cli.command {
        Command::Serve(_) => true,
        Command::Get(g) => g.jobs > 1,
        _ => false,
    };
    let runtime = match parallel {
        true => tokio::runtime::Runtime::new(),
        false => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ferry: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause that
/// the message above it already includes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if line.contains(&s) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&s);
    }
    line.replace('\n', " ")
}

/// Whether `e` is our own stdout closing under us (`ferry ls | head`),
/// which is a clean exit. Only a bare IO error from printing counts: a
/// broken pipe towards the server is a real failure and is wrapped in a
/// `ClientError`.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Get(a) => get(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Say(a) => say(a).await,
    }
}

async fn serve(a: ServeArgs) -> Result<ExitCode> {
    raise_fd_limit();
    if !a.dir.is_dir() {
        bail!("cannot serve {}: not a directory", a.dir.display());
    }
    let listener = server::bind(a.bind, a.port)?;
    let addr = listener.local_addr().context("listening socket")?;
    let dir = a.dir.canonicalize().unwrap_or_else(|_| a.dir.clone());
    let stacks = if a.bind.is_none() && addr.is_ipv6() {
        " (IPv4 and IPv6)"
    } else {
        ""
    };
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ferry: serving {} on {addr}{stacks}", dir.display())?;
        out.flush()?;
    }
    let mut config = Config::new(&a.dir);
    config.max_connections = a.max_connections as usize;
    config.idle_timeout = Duration::from_secs(a.idle_timeout.max(1));
    config.grace = Duration::from_secs(a.grace);
    config.ack = a.ack;
    config.raw = match a.raw {
        RawArg::File => RawMode::File,
        RawArg::Message => RawMode::Message,
        RawArg::Off => RawMode::Off,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    server::run(listener, config, shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

/// Lifts the soft open-file limit to the hard one: each connection costs a
/// socket and, while transferring, a file.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// Reads one line from stdin after printing `prompt` (when stdin is a
/// terminal). `None` at end of input.
async fn prompt_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    prompt: &str,
) -> Result<Option<String>> {
    if io::stdin().is_terminal() {
        let mut out = io::stdout().lock();
        write!(out, "{prompt}")?;
        out.flush()?;
    }
    lines.next_line().await.context("reading standard input")
}

fn stdin_lines() -> tokio::io::Lines<BufReader<tokio::io::Stdin>> {
    BufReader::new(tokio::io::stdin()).lines()
}

async fn get(mut a: GetArgs) -> Result<ExitCode> {
    // Past a file-size limit (RLIMIT_FSIZE) the kernel kills the writer with
    // SIGXFSZ; with a handler installed the write fails with EFBIG instead,
    // and the user gets an error line and a kept .part.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::Xfsz as i32,
    ));
    let addr = HostPort::parse(&a.host, DEFAULT_PORT)?;
    let mut paths = std::mem::take(&mut a.remote_paths);
    if paths.is_empty() {
        let line = prompt_line(&mut stdin_lines(), "file to download: ").await?;
        match line.map(|l| l.trim_end_matches(['\r', '\n']).to_string()) {
            Some(l) if !l.is_empty() => paths.push(l),
            _ => bail!("no file name given"),
        }
    }
    let progress = if a.quiet {
        Progress::Hidden
    } else {
        Progress::Auto
    };
    if a.output.as_os_str() == "-" {
        return get_to_stdout(&a, &addr, &paths, progress).await;
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    if a.recursive {
        return get_trees(&a, &addr, &paths, progress).await;
    }
    let mut failures = 0usize;
    let mut session: Option<Client> = None;
    for path in &paths {
        let res = if a.raw {
            raw::client::get(&addr, path, &a.output, progress).await
        } else if a.jobs > 1 {
            client::download_split(
                &addr,
                path,
                &a.output,
                a.jobs as usize,
                progress,
                !a.no_verify,
            )
            .await
        } else {
            fetch_native(&mut session, &addr, path, &a.output, progress, !a.no_verify).await
        };
        match res {
            Ok(d) => {
                if !a.quiet {
                    let resumed = if d.resumed_from > 0 {
                        format!(", resumed at {}", d.resumed_from)
                    } else {
                        String::new()
                    };
                    let verified = if a.raw || a.no_verify {
                        ""
                    } else {
                        ", verified"
                    };
                    eprintln!(
                        "saved {} ({} bytes{verified}{resumed})",
                        escape_controls(&d.path.display().to_string()),
                        d.size
                    );
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("ferry: {e}");
                if matches!(e, ClientError::Refused(_) | ClientError::Resolve { .. }) {
                    // Nothing will work for the other paths either.
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(exit_for(failures))
}

fn exit_for(failures: usize) -> ExitCode {
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `get -o -`: each file in turn to stdout, verified.
async fn get_to_stdout(
    a: &GetArgs,
    addr: &HostPort,
    paths: &[String],
    progress: Progress,
) -> Result<ExitCode> {
    if a.recursive || a.raw {
        bail!("-o - writes one verified file stream; it cannot be combined with -r or --raw");
    }
    let mut client = Client::connect(addr).await?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    for path in paths {
        match client::download_to(&mut client, path, &mut out, progress, !a.no_verify).await {
            Ok(_) => {}
            Err(ClientError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                failures += 1;
                eprintln!("ferry: {e}");
                if e.breaks_connection() {
                    client = Client::connect(addr).await?;
                }
            }
        }
    }
    Ok(exit_for(failures))
}

/// `get -r`: each remote directory as a tree.
async fn get_trees(
    a: &GetArgs,
    addr: &HostPort,
    paths: &[String],
    progress: Progress,
) -> Result<ExitCode> {
    if a.raw {
        bail!("the raw protocol has no directories; -r cannot be combined with --raw");
    }
    let opts = ferry::tree::TreeOptions {
        jobs: a.jobs as usize,
        progress,
        verify: !a.no_verify,
        ..Default::default()
    };
    let mut failures = 0;
    for path in paths {
        match ferry::tree::download_tree(addr, path, &a.output, opts).await {
            Ok(r) => {
                for f in &r.failures {
                    eprintln!("ferry: {f}");
                }
                for s in &r.skipped {
                    eprintln!("skipped {s} (not a regular file or directory)");
                }
                failures += r.failures.len();
                if !a.quiet {
                    eprintln!(
                        "saved {} ({} files, {} bytes{})",
                        escape_controls(&r.root.display().to_string()),
                        r.files,
                        r.bytes,
                        if a.no_verify { "" } else { ", verified" }
                    );
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("ferry: {e}");
            }
        }
    }
    Ok(exit_for(failures))
}

/// Downloads over the session, (re)connecting when there is none or the
/// last error broke it.
async fn fetch_native(
    session: &mut Option<Client>,
    addr: &HostPort,
    path: &str,
    out: &Path,
    progress: Progress,
    verify: bool,
) -> Result<client::Downloaded, ClientError> {
    let client = match session {
        Some(c) => c,
        None => session.insert(Client::connect(addr).await?),
    };
    let job = client::FileJob::new(path.to_string(), out.join(client::local_name(path)?));
    let res = client::download_job(client, job.verify(verify), progress).await;
    if res.as_ref().is_err_and(ClientError::breaks_connection) {
        *session = None;
    }
    res
}

async fn ls(a: LsArgs) -> Result<ExitCode> {
    let addr = HostPort::parse(&a.host, DEFAULT_PORT)?;
    let mut client = Client::connect(&addr).await?;
    let path = a.remote_path.trim_end_matches('/');
    let entries = match client.list(path).await {
        Ok(e) => e,
        Err(e) if e.remote_code() == Some(ferry::protocol::ErrorCode::NotADirectory) => {
            // `ls FILE` describes the file, as ls(1) does.
            let s = client.stat(path).await?;
            vec![ferry::protocol::ListEntry {
                name: path.as_bytes().to_vec(),
                kind: s.kind,
                size: s.size,
                mtime_ns: s.mtime_ns,
            }]
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = io::stdout().lock();
    for e in entries {
        let (kind, suffix) = match e.kind {
            EntryKind::File => ("file", ""),
            EntryKind::Dir => ("dir", "/"),
            EntryKind::Symlink => ("link", ""),
            EntryKind::Other => ("other", ""),
        };
        writeln!(
            out,
            "{kind:<5} {:>14} {}  {}{suffix}",
            e.size,
            format_mtime(e.mtime_ns),
            escape_bytes(&e.name)
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn format_mtime(ns: i64) -> String {
    let t = if ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn say(a: SayArgs) -> Result<ExitCode> {
    let addr = HostPort::parse(&a.host, DEFAULT_PORT)?;
    let wait = Duration::try_from_secs_f64(a.wait).context("--wait must be a number of seconds")?;
    enum Session {
        Native(Box<Client>),
        Raw(raw::client::RawSay),
    }
    let mut session = if a.raw {
        Session::Raw(raw::client::RawSay::connect(&addr, wait).await?)
    } else {
        Session::Native(Box::new(Client::connect(&addr).await?))
    };
    let mut lines = stdin_lines();
    let mut one = a.message.map(String::into_bytes);
    let interactive = one.is_none();
    loop {
        let msg = if interactive {
            match prompt_line(&mut lines, "> ").await? {
                Some(l) => l.into_bytes(),
                None => break,
            }
        } else {
            match one.take() {
                Some(m) => m,
                None => break,
            }
        };
        let answer = match &mut session {
            Session::Native(c) => c.message(&msg).await?,
            Session::Raw(r) => r.say(&msg).await?,
        };
        if !answer.is_empty() {
            let mut out = io::stdout().lock();
            writeln!(out, "{}", escape_bytes(&answer))?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
