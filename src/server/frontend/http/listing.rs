//! Directory listings: an HTML page for people (breadcrumbs, sortable
//! columns, a filter, dark mode, a phone-sized layout, the commands that
//! fetch what it lists), and the same listing as JSON for programs.
//!
//! The page works with JavaScript off: sorting is by links
//! (`?sort=size&order=desc`) and the filter is a form (`?q=`), both
//! answered by the server; a small script only filters as you type. Every
//! name is HTML-escaped and every link percent-encoded, so any legal name
//! shows as text and downloads through its own link. The page carries a
//! Content-Security-Policy that allows its own style and its one script
//! (by nonce) and nothing else.
//!
//! With uploads on, the page also has an upload form (a file picker for
//! several files, a drop zone, a progress bar). It posts
//! `multipart/form-data` to the directory's own URL: by script, with
//! progress, answered in JSON, then the page reloads; without script, as
//! a plain form, answered by a redirect back to the listing.

use std::fmt::Write;

use serde::Serialize;

use super::url::{href, html};
use crate::display::human_bytes;
use crate::protocol::EntryKind;
use crate::service::FileService;
use crate::storage::Entry;

/// How the listing is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sort {
    Name,
    Size,
    Modified,
}

/// What the page was asked for, besides the directory.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) sort: Sort,
    pub(crate) descending: bool,
    pub(crate) filter: String,
}

impl View {
    pub(crate) fn from_query(query: Option<&str>) -> View {
        let p = |k| super::url::query_param(query, k);
        let sort = match p("sort").as_deref() {
            Some("size") => Sort::Size,
            Some("modified") => Sort::Modified,
            _ => Sort::Name,
        };
        View {
            sort,
            descending: p("order").as_deref() == Some("desc"),
            filter: p("q").unwrap_or_default(),
        }
    }
}

fn kind_word(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "link",
        EntryKind::Other => "other",
    }
}

fn rfc3339(ns: i64) -> String {
    let t = super::files::to_http_time(ns);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    name: String,
    kind: &'a str,
    size: u64,
    mtime: String,
    mtime_ns: i64,
    hash: Option<String>,
}

#[derive(Serialize)]
struct JsonListing<'a> {
    path: String,
    entries: Vec<JsonEntry<'a>>,
}

/// The listing as JSON: `{"path", "entries": [{name, kind, size, mtime,
/// mtime_ns, hash}]}` (hash: BLAKE3 hex when the server knows it).
pub(crate) fn json(path: &str, entries: &[Entry], service: &FileService) -> String {
    let listing = JsonListing {
        path: href(path) + if path.is_empty() { "" } else { "/" },
        entries: entries
            .iter()
            .map(|e| JsonEntry {
                name: String::from_utf8_lossy(&e.entry.name).into_owned(),
                kind: kind_word(e.entry.kind),
                size: e.entry.size,
                mtime: rfc3339(e.entry.mtime_ns),
                mtime_ns: e.entry.mtime_ns,
                hash: (e.entry.kind == EntryKind::File)
                    .then(|| service.known_hash(&e.info))
                    .flatten()
                    .map(|h| crate::display::hex(&h)),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&listing).unwrap_or_else(|_| "{}".into())
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #fff; --fg: #1d1d1f; --muted: #6e6e73; --line: #e5e5ea; --link: #0a58ca; --hover: #f2f2f7; }
@media (prefers-color-scheme: dark) { :root { --bg: #161618; --fg: #ececf0; --muted: #9a9aa2; --line: #2c2c31; --link: #6ea8fe; --hover: #222227; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; background: var(--bg); color: var(--fg); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 60rem; margin: 0 auto; }
h1 { font-size: 1.25rem; font-weight: 600; margin: 0 0 .75rem; word-break: break-all; }
h1 a { color: var(--link); text-decoration: none; }
nav.tools { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-bottom: .75rem; }
nav.tools input { flex: 1 1 12rem; padding: .4rem .6rem; border: 1px solid var(--line); border-radius: .4rem; background: var(--bg); color: var(--fg); font: inherit; }
nav.tools button, nav.tools a { padding: .4rem .7rem; border: 1px solid var(--line); border-radius: .4rem; background: var(--hover); color: var(--fg); font: inherit; text-decoration: none; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .45rem .5rem; border-bottom: 1px solid var(--line); }
th a { color: var(--muted); text-decoration: none; font-weight: 600; font-size: .85rem; }
td.size, th.size { text-align: right; white-space: nowrap; }
td.time { white-space: nowrap; color: var(--muted); }
td.name a { color: var(--link); text-decoration: none; word-break: break-all; }
td.name span.other { color: var(--muted); }
tr:hover td { background: var(--hover); }
details { margin-top: 1rem; color: var(--muted); }
form.upload { margin: 0 0 .75rem; padding: .6rem; border: 1px dashed var(--line); border-radius: .4rem; display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
form.upload.over { border-color: var(--link); background: var(--hover); }
form.upload button { padding: .4rem .7rem; border: 1px solid var(--line); border-radius: .4rem; background: var(--hover); color: var(--fg); font: inherit; }
form.upload span { color: var(--muted); }
form.upload progress { flex: 1 1 10rem; }
form.upload output { color: var(--muted); flex-basis: 100%; }
pre { overflow-x: auto; padding: .6rem; background: var(--hover); border-radius: .4rem; color: var(--fg); }
@media (max-width: 36rem) { td.time, th.time { display: none; } body { padding: .6rem; } }
"#;

const SCRIPT: &str = r#"
const box = document.getElementById('filter');
const rows = document.querySelectorAll('tbody tr');
box.addEventListener('input', () => {
  const q = box.value.toLowerCase();
  for (const r of rows) r.hidden = q !== '' && !r.dataset.name.toLowerCase().includes(q);
});
"#;

/// The upload form's script: sends the chosen or dropped files with
/// progress, says what happened, and reloads the listing.
const UPLOAD_SCRIPT: &str = r#"
const up = document.getElementById('upload');
const pick = up.querySelector('input[type=file]');
const bar = up.querySelector('progress');
const said = up.querySelector('output');
function send(files) {
  if (!files || files.length === 0) return;
  const form = new FormData();
  for (const f of files) form.append('file', f, f.name);
  const xhr = new XMLHttpRequest();
  xhr.open('POST', up.action);
  xhr.setRequestHeader('Accept', 'application/json');
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } };
  xhr.onload = () => {
    let r = {};
    try { r = JSON.parse(xhr.responseText); } catch (_) { r = { failed: [{ name: '', error: xhr.responseText.trim() }] }; }
    const saved = r.saved || [], failed = r.failed || [];
    let msg = saved.length + ' of ' + files.length + ' file(s) uploaded';
    for (const f of failed) msg += '; ' + f.name + ': ' + f.error;
    said.textContent = msg;
    up.dataset.state = failed.length || xhr.status >= 400 ? 'failed' : 'done';
    if (up.dataset.state === 'done') setTimeout(() => location.reload(), 700);
  };
  xhr.onerror = () => { said.textContent = 'upload failed: the connection was lost'; up.dataset.state = 'failed'; };
  bar.hidden = false; bar.removeAttribute('value');
  up.dataset.state = 'sending';
  said.textContent = 'uploading ' + files.length + ' file(s)…';
  xhr.send(form);
}
up.addEventListener('submit', (e) => { e.preventDefault(); send(pick.files); });
pick.addEventListener('change', () => send(pick.files));
for (const t of ['dragenter', 'dragover']) document.addEventListener(t, (e) => { e.preventDefault(); up.classList.add('over'); });
document.addEventListener('dragleave', (e) => { if (!e.relatedTarget) up.classList.remove('over'); });
document.addEventListener('drop', (e) => { e.preventDefault(); up.classList.remove('over'); send(e.dataTransfer.files); });
"#;

/// Everything the page needs to show one directory.
pub(crate) struct Page<'a> {
    /// The directory's service path (`""`: the root).
    pub(crate) path: &'a str,
    /// Its entries, sorted by name.
    pub(crate) entries: Vec<Entry>,
    pub(crate) view: View,
    /// `host:port` as the browser addressed us (for the commands shown).
    pub(crate) host: String,
    /// Whether the page came over TLS: the commands then use `https://`
    /// and `ferry get --tls`.
    pub(crate) tls: bool,
    /// Whether the server wants a token: the commands then pass it from
    /// `$FERRY_TOKEN` (the page never shows the token itself).
    pub(crate) token: bool,
    /// Whether the server takes uploads: the page then has its form.
    pub(crate) upload: bool,
    /// A fresh nonce for the page's one script.
    pub(crate) nonce: String,
}

impl Page<'_> {
    /// The page's Content-Security-Policy.
    pub(crate) fn csp(&self) -> String {
        // The upload script posts to this server, and nowhere else.
        let connect = if self.upload {
            "connect-src 'self'; "
        } else {
            ""
        };
        format!(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{}'; {connect}\
             img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            self.nonce
        )
    }

    /// The HTML page.
    pub(crate) fn render(mut self) -> String {
        let dir_href = if self.path.is_empty() {
            "/".to_string()
        } else {
            href(self.path) + "/"
        };
        let title = if self.path.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", self.path)
        };
        let mut out = String::with_capacity(4096 + self.entries.len() * 256);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>Index of {}</title><style>{STYLE}</style></head><body><main>",
            html(&title)
        );
        self.breadcrumbs(&mut out);
        let q = html(&self.view.filter);
        let _ = write!(
            out,
            "<nav class=\"tools\"><form method=\"get\" action=\"{dir}\" role=\"search\" style=\"display:contents\">\
             <input id=\"filter\" name=\"q\" value=\"{q}\" placeholder=\"Filter by name\" aria-label=\"Filter by name\">\
             <button type=\"submit\">Filter</button></form>\
             <a href=\"{dir}?archive=tar\">Download .tar</a><a href=\"{dir}?archive=zip\">Download .zip</a></nav>",
            dir = html(&dir_href)
        );
        if self.upload {
            let _ = write!(
                out,
                "<form id=\"upload\" class=\"upload\" method=\"post\" action=\"{}\" enctype=\"multipart/form-data\">\
                 <input type=\"file\" name=\"file\" multiple aria-label=\"Files to upload\">\
                 <button type=\"submit\">Upload</button><span>or drop files here</span>\
                 <progress hidden></progress><output aria-live=\"polite\"></output></form>",
                html(&dir_href)
            );
        }
        self.sort_entries();
        self.table(&mut out, &dir_href);
        self.commands(&mut out, &dir_href);
        let upload_script = if self.upload { UPLOAD_SCRIPT } else { "" };
        let _ = writeln!(
            out,
            "</main><script nonce=\"{}\">{SCRIPT}{upload_script}</script></body></html>",
            self.nonce
        );
        out
    }

    fn breadcrumbs(&self, out: &mut String) {
        out.push_str("<h1><a href=\"/\">/</a>");
        let mut acc = String::new();
        for part in self.path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            let _ = write!(
                out,
                "<a href=\"{}/\">{}</a>/",
                html(&href(&acc)),
                html(part)
            );
        }
        out.push_str("</h1>");
    }

    fn sort_entries(&mut self) {
        let v = &self.view;
        let filter = v.filter.to_lowercase();
        if !filter.is_empty() {
            self.entries.retain(|e| {
                String::from_utf8_lossy(&e.entry.name)
                    .to_lowercase()
                    .contains(&filter)
            });
        }
        // Directories first, then by the chosen column.
        self.entries.sort_by(|a, b| {
            let (a, b) = (&a.entry, &b.entry);
            let dirs = (b.kind == EntryKind::Dir).cmp(&(a.kind == EntryKind::Dir));
            let by = match v.sort {
                Sort::Name => a.name.cmp(&b.name),
                Sort::Size => a.size.cmp(&b.size).then(a.name.cmp(&b.name)),
                Sort::Modified => a.mtime_ns.cmp(&b.mtime_ns).then(a.name.cmp(&b.name)),
            };
            dirs.then(if v.descending { by.reverse() } else { by })
        });
    }

    /// A column header linking to the listing sorted by it (toggling the
    /// order when it is the current column).
    fn header(&self, dir_href: &str, sort: Sort, key: &str, label: &str, class: &str) -> String {
        let current = self.view.sort == sort;
        let desc = current && !self.view.descending;
        let arrow = match (current, self.view.descending) {
            (true, false) => " ▲",
            (true, true) => " ▼",
            _ => "",
        };
        let mut link = format!(
            "{dir_href}?sort={key}&order={}",
            if desc { "desc" } else { "asc" }
        );
        if !self.view.filter.is_empty() {
            link.push_str("&q=");
            link.extend(percent_encoding::utf8_percent_encode(
                &self.view.filter,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        format!(
            "<th class=\"{class}\"><a href=\"{}\">{label}{arrow}</a></th>",
            html(&link)
        )
    }

    fn table(&self, out: &mut String, dir_href: &str) {
        out.push_str("<table><thead><tr>");
        out.push_str(&self.header(dir_href, Sort::Name, "name", "Name", "name"));
        out.push_str(&self.header(dir_href, Sort::Size, "size", "Size", "size"));
        out.push_str(&self.header(dir_href, Sort::Modified, "modified", "Modified", "time"));
        out.push_str("</tr></thead><tbody>");
        if !self.path.is_empty() {
            out.push_str(
                "<tr data-name=\"..\"><td class=\"name\"><a href=\"../\">../</a></td><td class=\"size\"></td><td class=\"time\"></td></tr>",
            );
        }
        for e in &self.entries {
            let name = String::from_utf8_lossy(&e.entry.name);
            let shown = html(&name);
            let full = if self.path.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", self.path)
            };
            let cell = match e.entry.kind {
                EntryKind::Dir => format!("<a href=\"{}/\">{shown}/</a>", html(&href(&full))),
                EntryKind::File => format!("<a href=\"{}\">{shown}</a>", html(&href(&full))),
                EntryKind::Symlink => {
                    format!("<span class=\"other\">{shown} (link, not followed)</span>")
                }
                EntryKind::Other => {
                    format!("<span class=\"other\">{shown} (not a regular file)</span>")
                }
            };
            let size = if e.entry.kind == EntryKind::File {
                human_bytes(e.entry.size)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<tr data-name=\"{shown}\"><td class=\"name\">{cell}</td><td class=\"size\" title=\"{} bytes\">{size}</td><td class=\"time\">{}</td></tr>",
                e.entry.size,
                html(&rfc3339(e.entry.mtime_ns).replace('T', " ").replace('Z', " UTC"))
            );
        }
        out.push_str("</tbody></table>");
    }

    fn commands(&self, out: &mut String, dir_href: &str) {
        let host = html(&self.host);
        let (scheme, tls) = if self.tls {
            ("https", "--tls ")
        } else {
            ("http", "")
        };
        // The page never shows the token: the commands take it from
        // `$FERRY_TOKEN`.
        let (tls, auth) = if self.token {
            (
                format!("{tls}--token \"$FERRY_TOKEN\" "),
                "-u \":$FERRY_TOKEN\" ",
            )
        } else {
            (tls.to_string(), "")
        };
        let name = self.path.rsplit('/').next().filter(|n| !n.is_empty());
        let tree = if self.path.is_empty() { "." } else { self.path };
        let tar_name = format!("{}.tar", name.unwrap_or("files"));
        let first_file = self
            .entries
            .iter()
            .find(|e| e.entry.kind == EntryKind::File)
            .map(|e| String::from_utf8_lossy(&e.entry.name).into_owned());
        let _ = write!(
            out,
            "<details open><summary>{}</summary><pre>\
             ferry get {tls}-r {host} {} -o .\n\
             curl {auth}-o {} '{scheme}://{host}{}?archive=tar'",
            if self.upload {
                "From a terminal: fetch this, or send files here"
            } else {
                "Fetch this from a terminal"
            },
            html(&shell_word(tree)),
            html(&shell_word(&tar_name)),
            html(dir_href)
        );
        if let Some(f) = first_file {
            let full = if self.path.is_empty() {
                f.clone()
            } else {
                format!("{}/{f}", self.path)
            };
            let _ = write!(
                out,
                "\nferry get {tls}{host} {}\ncurl {auth}-O '{scheme}://{host}{}'",
                html(&shell_word(&full)),
                html(&href(&full))
            );
        }
        if self.upload {
            let to = if self.path.is_empty() {
                String::new()
            } else {
                format!(" --to {}", shell_word(self.path))
            };
            let _ = write!(
                out,
                "\nferry put {tls}{host} FILE{}\ncurl {auth}-T FILE '{scheme}://{host}{}'",
                html(&to),
                html(dir_href)
            );
        }
        out.push_str("</pre></details>");
    }
}

/// A word quoted for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
