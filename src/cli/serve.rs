//! `ferry serve`.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_util::sync::CancellationToken;

use super::{PrehashArg, ServeArgs, TutorialArg};
use crate::server::{self, Config, TutorialMode};
use crate::service::Prehash;
use crate::storage::{is_object_url, ObjectConfig, ObjectRoot, RootOptions};
use crate::tls::server::ServerTls;

pub(super) async fn serve(a: ServeArgs) -> Result<ExitCode> {
    raise_fd_limit();
    // Past a file-size limit (RLIMIT_FSIZE) the kernel kills the writer
    // with SIGXFSZ; with a handler installed an upload's write fails with
    // EFBIG instead, answered like a full disk, and the server goes on.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::Xfsz as i32,
    ));
    // A message server (the tutorial's) shares no files unless a directory
    // is named: starting one must never expose the current directory.
    let dir = match (&a.dir, a.tutorial) {
        (Some(d), _) => Some(d.clone()),
        (None, TutorialArg::Message) => None,
        (None, _) => Some(".".into()),
    };
    let root_options = RootOptions {
        hidden: a.hidden,
        hardlinks: !a.no_hardlinks,
    };
    let object = match dir.as_deref().and_then(Path::to_str) {
        Some(url) if is_object_url(url) => Some(object_root(url, &a, root_options).await?),
        _ => None,
    };
    let shown = match (&object, &dir) {
        (Some(o), _) => Some(o.url().to_string()),
        (None, Some(d)) => {
            check_dir(d)?;
            Some(
                d.canonicalize()
                    .unwrap_or_else(|_| d.clone())
                    .display()
                    .to_string(),
            )
        }
        (None, None) => None,
    };
    let bind = match &a.bind {
        Some(name) => Some(resolve_bind(name, a.port).await?),
        None => None,
    };
    let tls = server_tls(&a)?;
    let proxy_protocol = a.proxy_protocol.then(|| match &a.trusted_proxy[..] {
        [] => server::proxy::TrustedNet::loopback(),
        given => given.to_vec(),
    });
    let token = server_token(&a)?;
    let listener = server::bind(bind, a.port)?;
    let addr = listener.local_addr().context("listening socket")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "{}",
            startup_line(shown.as_deref(), &a, addr, bind.is_none())
        )?;
        if let Some(t) = &tls {
            let plain = if a.allow_plaintext {
                "plaintext still served"
            } else {
                "plaintext refused"
            };
            writeln!(out, "  TLS {} ({}; {plain})", t.fingerprint(), t.source())?;
        }
        if let Some(trusted) = &proxy_protocol {
            let list: Vec<String> = trusted.iter().map(ToString::to_string).collect();
            writeln!(out, "  PROXY protocol required from {}", list.join(", "))?;
        }
        if dir.is_some() {
            let urls = urls(addr, scheme);
            for u in &urls {
                writeln!(out, "  {u}")?;
            }
            if let (true, Some(t), Some(first)) = (a.auth, &token, urls.first()) {
                // Generated: the user has no other way to learn it.
                let t = t.expose();
                let with = first.replacen("://", &format!("://ferry:{t}@"), 1);
                let host = first
                    .split("://")
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches('/');
                let tls_flag = if tls.is_some() { "--tls " } else { "" };
                writeln!(out, "  token: {t}")?;
                writeln!(out, "  open:  {with}")?;
                writeln!(out, "  get:   ferry get {tls_flag}--token {t} {host} FILE")?;
            } else if token.is_some() {
                writeln!(out, "  token required (HTTP: Authorization: Bearer, or Basic with the token as password)")?;
            }
            if a.qr {
                if let Some(first) = urls.first() {
                    writeln!(out, "{}", qr(first))?;
                }
            }
        }
        out.flush()?;
    }
    let mut config = match (&object, &dir) {
        (Some(o), _) => Config::object(o.clone()),
        (None, Some(d)) => Config::new(d),
        (None, None) => Config::messages_only(),
    };
    config.root_options = root_options;
    config.max_connections = a.max_connections as usize;
    config.idle_timeout = Duration::from_secs(a.idle_timeout.max(1));
    config.grace = Duration::from_secs(a.grace);
    config.prehash = match a.prehash {
        PrehashArg::All => Prehash::All,
        PrehashArg::Listed => Prehash::Listed,
        PrehashArg::Off => Prehash::Off,
    };
    config.ack = a.ack;
    if token.is_some() && tls.is_none() && !bind.is_some_and(|ip| ip.is_loopback()) {
        tracing::warn!(
            "a token over plaintext can be read by anyone on the network, with the files: add --tls"
        );
    }
    config.auth = token
        .as_ref()
        .map(|t| std::sync::Arc::new(crate::auth::Auth::new(t)));
    config.tls = tls;
    config.uploads = a.upload.then_some(crate::storage::WriteRules {
        overwrite: a.overwrite,
        max_size: a.max_upload_size,
    });
    config.allow_plaintext = a.allow_plaintext;
    config.proxy_protocol = proxy_protocol;
    config.tutorial = match a.tutorial {
        TutorialArg::File => TutorialMode::File,
        TutorialArg::Message => TutorialMode::Message,
        TutorialArg::Off => TutorialMode::Off,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    server::run(listener, config, shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The server's TLS identity, if `--tls` (or `--tls-cert`) asks for one.
fn server_tls(a: &ServeArgs) -> Result<Option<ServerTls>> {
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        return Ok(Some(ServerTls::from_pem_files(cert, key)?));
    }
    if !a.tls {
        return Ok(None);
    }
    let dir = crate::tls::server::default_state_dir()
        .context("no place for the certificate: set HOME or XDG_STATE_HOME, or give --tls-cert and --tls-key")?;
    Ok(Some(ServerTls::self_signed_in(
        &dir,
        &crate::tls::server::local_names(),
    )?))
}

/// The access token: given (flag, FERRY_TOKEN or file) or generated.
fn server_token(a: &ServeArgs) -> Result<Option<crate::auth::Secret>> {
    use crate::auth::Secret;
    if a.auth {
        return Ok(Some(Secret::generate()));
    }
    if let Some(path) = &a.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        return Ok(Some(
            Secret::new(line).with_context(|| format!("--token-file {}", path.display()))?,
        ));
    }
    match &a.token {
        Some(t) => Ok(Some(Secret::new(t).context("--token")?)),
        None => Ok(None),
    }
}

/// Connects to the bucket named by `url` and checks that it answers, so a
/// wrong endpoint or key fails at startup in one line, not on every
/// request.
async fn object_root(
    url: &str,
    a: &ServeArgs,
    opts: RootOptions,
) -> Result<std::sync::Arc<ObjectRoot>> {
    let config = ObjectConfig {
        endpoint: a.s3_endpoint.clone(),
        region: a.s3_region.clone(),
        cacert: a.s3_cacert.clone(),
    };
    let root =
        ObjectRoot::connect(url, &config, opts).with_context(|| format!("cannot serve {url}"))?;
    let patience = crate::service::HEALTH_TIMEOUT * 5;
    tokio::time::timeout(patience, root.check())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot serve {url}: the object store did not answer within {} s",
                patience.as_secs()
            )
        })?
        .with_context(|| format!("cannot serve {url}"))?;
    Ok(std::sync::Arc::new(root))
}

/// Refuses a directory that cannot be served, naming why.
fn check_dir(d: &Path) -> Result<()> {
    match std::fs::metadata(d) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("cannot serve {}: not a directory", d.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("cannot serve {}: no such directory", d.display())
        }
        Err(e) => bail!("cannot serve {}: {e}", d.display()),
    }
}

/// `--bind` as an address, or a host name resolved to its first address.
async fn resolve_bind(name: &str, port: u16) -> Result<IpAddr> {
    if let Ok(ip) = name.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = tokio::net::lookup_host((name, port))
        .await
        .with_context(|| format!("cannot resolve --bind {name}"))?;
    match addrs.next() {
        Some(sa) => Ok(sa.ip()),
        None => bail!("cannot resolve --bind {name}: no addresses"),
    }
}

/// What is shared, how, and with whom: the first line a user reads. It
/// ends in `on ADDR ...`, which scripts (and the tests) read the port from.
fn startup_line(dir: Option<&str>, a: &ServeArgs, addr: SocketAddr, any: bool) -> String {
    let whom = if any && addr.is_ipv6() {
        "every interface, IPv4 and IPv6"
    } else if any || addr.ip().is_unspecified() {
        "every interface"
    } else if addr.ip().is_loopback() {
        "this machine only"
    } else {
        "this address only"
    };
    let what = match dir {
        Some(shown) => {
            let hidden = if a.hidden {
                "hidden files included"
            } else {
                "hidden files excluded"
            };
            let tutorial = match a.tutorial {
                TutorialArg::File => "",
                TutorialArg::Message => "; tutorial clients get the message server",
                TutorialArg::Off => "; tutorial clients refused",
            };
            let mode = match (a.upload, a.overwrite) {
                (false, _) => "read-only".to_string(),
                (true, over) => {
                    let mut m = String::from("uploads on");
                    if over {
                        m.push_str(", overwriting");
                    }
                    if let Some(max) = a.max_upload_size {
                        m.push_str(&format!(", up to {}", crate::display::human_bytes(max)));
                    }
                    m
                }
            };
            format!("serving {shown} ({mode}, {hidden}{tutorial})")
        }
        None => "message server (no files shared)".to_string(),
    };
    format!("ferry: {what} on {addr} ({whom})")
}

/// The `http://` URLs the server can be reached at: one per address of
/// each interface that is up (not loopback, not link-local IPv6, which
/// would need a zone), or the loopback address when that is all there is
/// or all it listens on.
fn urls(addr: SocketAddr, scheme: &str) -> Vec<String> {
    let port = addr.port();
    let url = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}/"),
    };
    if !addr.ip().is_unspecified() {
        return vec![url(addr.ip())];
    }
    let ipv6 = addr.is_ipv6();
    let mut out: Vec<String> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && !i.is_link_local() && i.is_oper_up())
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() || ipv6)
        .map(url)
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        out.push(url(if ipv6 {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }));
    }
    out
}

/// A QR code of `url` in Unicode half blocks, for a phone's camera.
fn qr(url: &str) -> String {
    match qrcode::QrCode::new(url.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
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
