//! The command line: clap arguments, turned into library calls, and their
//! results into lines for people and an exit status.
//!
//! Arguments are parsed without side effects first ([`Cli`]), then each
//! command resolves them (IO, validation) once and calls the library.
//! Errors end as one line, `ferry: CAUSE`, escaped for the terminal, and a
//! status that means something: 0 success, 1 failure, 2 bad usage (clap),
//! 130 interrupted (Ctrl-C).

mod get;
mod put;
mod remote;
mod serve;
mod web;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::server;

/// Move files over TCP: a server that serves a directory to many clients at
/// once, and a client that downloads from it, resumably and verified.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a directory or an S3 bucket (read-only unless --upload) to
    /// ferry clients, browsers, curl and wget, the tutorial's programs and
    /// netcat, all on one port (runs in the foreground until Ctrl-C).
    Serve(ServeArgs),
    /// Download files (resumable, BLAKE3-verified).
    Get(GetArgs),
    /// Upload files to a server started with --upload (resumable,
    /// BLAKE3-verified, saved atomically).
    Put(PutArgs),
    /// List a remote directory.
    Ls(LsArgs),
    /// Send a message (or each line typed at a `> ` prompt) and print the
    /// server's acknowledgement.
    Say(SayArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell,
    /// elvish) to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `ferry man | man -l -`.
    Man,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory to serve, or an S3-compatible bucket as
    /// `s3://BUCKET[/PREFIX]` (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, endpoint from AWS_ENDPOINT_URL or
    /// --s3-endpoint) [default: the current directory; none with
    /// `--tutorial message`, which then shares no files].
    #[arg(value_name = "DIR|s3://BUCKET[/PREFIX]")]
    dir: Option<PathBuf>,
    /// TCP port; 0 picks a free one (the startup line shows it).
    #[arg(short, long, default_value_t = server::DEFAULT_PORT)]
    port: u16,
    /// Address (or host name) to listen on [default: all interfaces, IPv4
    /// and IPv6]; `127.0.0.1` or `localhost` for this machine only.
    #[arg(short, long, value_name = "ADDR")]
    bind: Option<String>,
    /// Also share hidden files and directories (names starting with `.`,
    /// such as `.git/`, `.env`, `.ssh/`), which are otherwise neither
    /// listed nor served.
    #[arg(long)]
    hidden: bool,
    /// Refuse files with more than one hard link (their other names may
    /// lie outside the served directory).
    #[arg(long)]
    no_hardlinks: bool,
    /// Also print a QR code of the first URL, for a phone.
    #[arg(long)]
    qr: bool,
    /// Most connections served at once; beyond it, the longest-idle
    /// connection is closed to make room, or the newcomer told "server busy".
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// What to do with clients of the tutorial's protocol (its programs,
    /// netcat): serve the file they name, or answer their messages.
    #[arg(long, value_enum, default_value_t = TutorialArg::File, alias = "raw")]
    tutorial: TutorialArg,
    /// Acknowledgement sent for each message.
    #[arg(long, value_name = "TEXT", default_value = server::DEFAULT_ACK)]
    ack: String,
    /// Seconds a connection may stay silent (or take no bytes we send)
    /// before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    idle_timeout: u64,
    /// Seconds transfers in flight may continue after Ctrl-C / SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    grace: u64,
    /// Hash files ahead of demand (at idle priority, so downloads find
    /// their BLAKE3 ready): `all` walks the tree at startup and the files
    /// of each listed directory, `listed` only the latter, `off` hashes
    /// only when a download needs it.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = PrehashArg::All)]
    prehash: PrehashArg,
    /// Encrypt: TLS on the same port (HTTPS for browsers and curl, HTTP/2
    /// included; `ferry get --tls`). Without --tls-cert, a self-signed
    /// certificate is made on first start and kept in
    /// $XDG_STATE_HOME/ferry/ (~/.local/state/ferry/); its fingerprint is
    /// printed. Plaintext clients are then told TLS is required.
    #[arg(long)]
    tls: bool,
    /// The certificate chain to present (PEM); implies --tls.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With TLS on, still serve plaintext clients on the same port.
    #[arg(long)]
    allow_plaintext: bool,
    /// Require this access token from every client (native: `ferry get
    /// --token`; HTTP: `Authorization: Bearer`, or any user name with the
    /// token as password). Prefer FERRY_TOKEN or --token-file: a command
    /// line is visible to every user of the machine.
    #[arg(long, value_name = "TOKEN", env = "FERRY_TOKEN", hide_env_values = true,
          conflicts_with_all = ["token_file", "auth"])]
    token: Option<String>,
    /// Read the access token from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "auth")]
    token_file: Option<PathBuf>,
    /// Require a fresh random token (128 bits), printed at start with a
    /// ready URL and `ferry get` command.
    #[arg(long)]
    auth: bool,
    /// Accept uploads: `ferry put`, HTTP PUT (`curl -T`) and the listing
    /// page's upload button. Files land atomically (a hidden temporary,
    /// renamed when whole and verified) and never outside the directory.
    #[arg(long)]
    upload: bool,
    /// With --upload, replace existing files (otherwise an upload to an
    /// existing name is refused).
    #[arg(long, requires = "upload")]
    overwrite: bool,
    /// With --upload, the largest file accepted: bytes, or with a K, M, G
    /// or T suffix (powers of 1024), e.g. 500M.
    #[arg(long, value_name = "SIZE", requires = "upload", value_parser = parse_size)]
    max_upload_size: Option<u64>,
    /// Behind a proxy (HAProxy `send-proxy-v2`, or v1 `send-proxy`): every
    /// connection from a --trusted-proxy must start with a PROXY protocol
    /// header, and the client it names is the address logged, printed
    /// with messages and rate-limited; one without a valid header is
    /// closed. Other peers are served directly and cannot claim an
    /// address.
    #[arg(long)]
    proxy_protocol: bool,
    /// With --proxy-protocol, a proxy address or network allowed (and
    /// required) to send PROXY headers; repeatable [default: 127.0.0.1 and
    /// ::1].
    #[arg(long, value_name = "ADDR[/PREFIX]", requires = "proxy_protocol")]
    trusted_proxy: Vec<server::proxy::TrustedNet>,
    /// With s3://: the store's endpoint, e.g. http://127.0.0.1:3900 for a
    /// local Garage or MinIO (plain HTTP only to loopback) [default:
    /// AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL", env = "FERRY_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// With s3://: the store's region [default: AWS_REGION, else
    /// AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, value_name = "NAME")]
    s3_region: Option<String>,
    /// With an https:// store: CA certificates (PEM) to trust besides the
    /// system's, for a store behind a private CA.
    #[arg(long, value_name = "FILE", env = "AWS_CA_BUNDLE")]
    s3_cacert: Option<PathBuf>,
}

/// Parses `1234`, `64K`, `500M`, `2G`, `1T` (powers of 1024; a trailing
/// `B` or `iB` allowed).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s} (bytes, or a number with K, M, G or T)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size too large: {s}"))
}

/// How a client reaches a server over TLS, and whom it trusts.
#[derive(Debug, Clone, clap::Args)]
struct TlsArgs {
    /// Connect with TLS. The server's certificate is trusted if a CA of
    /// the system (or --cacert) signed it for this name; otherwise on
    /// first use, like ssh: its fingerprint is recorded in
    /// $XDG_CONFIG_HOME/ferry/known_hosts (~/.config/ferry/known_hosts),
    /// and a different one later is refused.
    #[arg(long)]
    tls: bool,
    /// Trust exactly the certificate with this fingerprint (as `ferry
    /// serve --tls` prints it); implies --tls.
    #[arg(long, value_name = "sha256:HEX")]
    pin: Option<String>,
    /// Trust the CA certificates in this PEM file instead of the system's;
    /// implies --tls.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// The access token the server asks for.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FERRY_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

impl TlsArgs {
    /// Sets up TLS and the token on `addr` if asked for (`--tls`, or a
    /// `ferrys://` address: `scheme_tls`); `tutorial`: the tutorial's
    /// protocol, which has no TLS.
    fn apply(
        &self,
        addr: &mut crate::client::HostPort,
        tutorial: bool,
        scheme_tls: bool,
    ) -> Result<()> {
        let tls = self.tls || scheme_tls;
        if tutorial && tls {
            anyhow::bail!(
                "the tutorial's protocol has no TLS: drop --tls (or ferrys://) or --tutorial"
            );
        }
        if let Some(t) = &self.token {
            addr.token = Some(crate::auth::Secret::new(t).context("--token")?);
        }
        if !tls && self.pin.is_none() && self.cacert.is_none() {
            return Ok(());
        }
        let opts = crate::tls::client::TrustOptions {
            pin: self.pin.clone(),
            cacert: self.cacert.clone(),
            known_hosts: None,
        };
        let target = addr.to_string();
        addr.tls = Some(crate::tls::client::ClientTls::new(
            &target,
            &opts,
            &[crate::tls::ALPN_FERRY],
            std::sync::Arc::new(|line: &str| note(line)),
        )?);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrehashArg {
    /// The whole tree at startup, then each listed directory.
    All,
    /// Each directory's files when it is listed.
    Listed,
    /// Nothing ahead: hashes are computed when a download needs them.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TutorialArg {
    /// Serve the file whose name the client sends (the tutorial's downloader).
    File,
    /// Print each message and acknowledge it (the tutorial's message servers).
    Message,
    /// Refuse them.
    Off,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// Server: HOST[:PORT] (HOST a name, an IPv4 address or [IPv6]), or a
    /// file on it in one word: HOST[:PORT]/PATH or ferry://HOST[:PORT]/PATH
    /// (ferrys:// for TLS); or an http:// or https:// URL of any web server.
    host: String,
    /// Remote files, relative to the served directory (more URLs after a
    /// URL). With none, asks for one.
    remote_paths: Vec<String>,
    /// Where to save, as `cp` reads its target: an existing directory (or a
    /// path ending in `/`) receives the files under their own names; for a
    /// single file any other PATH is the name to save it as; several files
    /// or `-r` go into directory PATH, created if missing. `-` writes the
    /// file to standard output (still verified: a mismatch exits non-zero).
    /// [default: the current directory]
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Download directories recursively, as OUT/<last component of DIR>/...
    /// (`.` or `/`: the whole served tree, into OUT itself). Files already
    /// there from an earlier run are skipped.
    #[arg(short, long)]
    recursive: bool,
    /// Parallel connections: a large file is split into ranges (a
    /// connection that is done takes over half of the largest range left),
    /// a tree's files are spread over them. Split downloads resume too.
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// When the connection is lost or refused mid-download (a server
    /// restarting, a node behind a load balancer dying), reconnect up to N
    /// times, waiting 0.25 s, 0.5 s, 1 s... (at most 8 s) between tries,
    /// and resume where the bytes stopped (single-stream downloads).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    retry: u32,
    /// Replace existing files that differ from the server's (without it,
    /// they are left alone and reported).
    #[arg(short, long)]
    force: bool,
    /// Talk to a tutorial-style server: send the bare name, save until close.
    #[arg(long, alias = "raw")]
    tutorial: bool,
    /// No progress bar and no summary lines.
    #[arg(short, long)]
    quiet: bool,
    /// Skip the BLAKE3 check (saves the client a core of hashing; a
    /// corrupted transfer then goes unnoticed). For benchmarks and trusted
    /// links only.
    #[arg(long)]
    no_verify: bool,
    /// For an http(s):// URL: the BLAKE3 hash (64 hex digits) the file must
    /// have. A ferry server sends its own; other servers need this or
    /// --sha256 for the file to be verified.
    #[arg(long, value_name = "HEX", conflicts_with = "sha256")]
    blake3: Option<String>,
    /// For an http(s):// URL: the SHA-256 (64 hex digits) the file must
    /// have, as download pages publish it.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, clap::Args)]
struct PutArgs {
    /// Server: HOST[:PORT] (HOST a name, an IPv4 address or [IPv6]), or
    /// HOST[:PORT]/DIR to upload into DIR.
    host: String,
    /// Local files (and with -r, directories) to upload.
    #[arg(required = true, value_name = "LOCAL")]
    local: Vec<PathBuf>,
    /// Remote directory to upload into (created if missing) [default: the
    /// served directory itself].
    #[arg(long, value_name = "REMOTE_DIR")]
    to: Option<String>,
    /// Upload directories recursively, as REMOTE_DIR/<last component of
    /// DIR>/... (hidden names, links and special files are skipped).
    #[arg(short, long)]
    recursive: bool,
    /// Parallel connections, the files spread over them.
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// No progress bar and no summary lines.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, clap::Args)]
struct LsArgs {
    /// Server: HOST[:PORT], or HOST[:PORT]/DIR, ferry://HOST[:PORT]/DIR
    /// (ferrys:// for TLS); or http(s)://HOST[:PORT]/DIR/ of a ferry
    /// server (read from its JSON listing).
    host: String,
    /// Remote directory [default: the served directory itself].
    remote_path: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, clap::Args)]
struct SayArgs {
    /// Server: HOST[:PORT].
    host: String,
    /// The message. With none, sends each line typed at a `> ` prompt until
    /// end of input.
    message: Option<String>,
    /// Talk to a tutorial-style server: send the text as is.
    #[arg(long, alias = "raw")]
    tutorial: bool,
    /// With --tutorial: seconds to wait for an answer (none is not an error).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    wait: f64,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Exit status for a command interrupted by Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs the `ferry` command line: parses the arguments, runs the command,
/// prints its errors. What the binary's `main` calls.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        // The object store's client logs each retry at info: the server's
        // own lines say what failed, once.
        Command::Serve(_) => "info,object_store=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal());
    // The server's log lines go out through a thread of their own: a
    // stderr nobody reads must not stall the workers serving clients (when
    // its buffer is full, lines are dropped rather than waited for). The
    // guard flushes what is queued when `main` returns.
    let _log_guard = if matches!(cli.command, Command::Serve(_)) {
        let (writer, guard) = tracing_appender::non_blocking(io::stderr());
        logs.with_writer(writer).init();
        Some(guard)
    } else {
        logs.with_writer(io::stderr).init();
        None
    };
    // The server spreads connections over every core, and so does a client
    // with several connections (-j: each lane's file creation is kernel work
    // that another core can do meanwhile). A single sequence of requests runs
    // on one thread, where cross-thread wake-ups would only add latency (its
    // bulk work happens in the kernel and on its hashing thread).
    let parallel = match &cli.command {
        Command::Serve(_) => true,
        Command::Get(g) => g.jobs > 1,
        Command::Put(p) => p.jobs > 1,
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
/// the message above it already includes, escaped for the terminal.
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
    crate::display::escape_controls(&line.replace('\n', " ")).into_owned()
}

/// Prints `ferry: LINE` on stderr, escaped for the terminal.
fn error_line(line: impl std::fmt::Display) {
    eprintln!(
        "ferry: {}",
        crate::display::escape_controls(&line.to_string())
    );
}

/// Prints a progress or summary line on stderr, escaped for the terminal.
fn note(line: impl std::fmt::Display) {
    eprintln!("{}", crate::display::escape_controls(&line.to_string()));
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
        Command::Serve(a) => serve::serve(a).await,
        Command::Get(a) => get::get(a).await,
        Command::Put(a) => put::put(a).await,
        Command::Ls(a) => remote::ls(a).await,
        Command::Say(a) => remote::say(a).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ferry", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
            // Then a page per command, with its options.
            for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
                let title = format!("ferry-{}", sub.get_name());
                let sub = sub.clone().bin_name(format!("ferry {}", sub.get_name()));
                clap_mangen::Man::new(sub).title(title).render(&mut out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
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

fn exit_for(failures: usize) -> ExitCode {
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
