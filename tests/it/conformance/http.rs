//! A loopback HTTP/1.1 server for the conformance cases: `ADD <url>` sources, and git
//! repositories over git's "dumb" HTTP protocol (static files after `git update-server-info`,
//! as BuildKit's tests serve them with Go's `http.FileServer`). Each case run gets its own
//! site on its own port, with its own request log. It answers
//! `GET` and `HEAD` with `Content-Length`, `Last-Modified`, `ETag` (and `304` to a matching
//! `If-None-Match`), one request per connection. It serves nothing outside a site's directory.
//! Also a TCP "echo" server (BuildKit's `echoserver`): it writes a fixed text to every
//! connection and closes it, for the `RUN --network` cases.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A file served at a fixed path, with its headers.
#[derive(Debug, Clone)]
pub(crate) struct Fixed {
    /// The body.
    pub(crate) body: Vec<u8>,
    /// `Last-Modified`.
    pub(crate) last_modified: Option<String>,
    /// `ETag`, unquoted.
    pub(crate) etag: Option<String>,
    /// `Content-Disposition`.
    pub(crate) content_disposition: Option<String>,
}

#[derive(Debug, Default)]
struct Site {
    dir: PathBuf,
    fixed: HashMap<String, Fixed>,
    log: Vec<String>,
}

/// A case run's site: its URL, its directory and its request log. It has a port of its
/// own, so its URLs are the server's root (`http://127.0.0.1:PORT/`, as BuildKit's test
/// servers give them: a URL of `/` has no file name). Stops accepting when dropped.
#[derive(Debug)]
pub(crate) struct SiteHandle {
    port: u16,
    site: Arc<Mutex<Site>>,
    stop: Arc<AtomicBool>,
}

impl SiteHandle {
    /// A new site serving `dir` and the fixed files (keyed by URL path, `/foo`).
    pub(crate) fn new(dir: &Path, fixed: HashMap<String, Fixed>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let site = Arc::new(Mutex::new(Site {
            dir: dir.to_owned(),
            fixed,
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (served, flag) = (site.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let site = served.clone();
                    std::thread::spawn(move || {
                        let _ = answer(&site, stream);
                    });
                }
            }
        });
        Self { port, site, stop }
    }

    /// The site's base URL (no trailing slash).
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Takes the requests seen since the last call (`"GET /foo"`).
    pub(crate) fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.site.lock().expect("lock").log)
    }
}

impl Drop for SiteHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(site: &Mutex<Site>, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut if_none_match = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let target = words.next().unwrap_or("").to_owned();
    let mut stream = stream;
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let (fixed, dir) = {
        let mut site = site.lock().expect("lock");
        site.log.push(format!("{method} {target}"));
        (site.fixed.get(&path).cloned(), site.dir.clone())
    };
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(&mut stream, "405 Method Not Allowed", &[], b"", false);
    }
    if let Some(file) = fixed {
        let mut headers = Vec::new();
        if let Some(date) = &file.last_modified {
            headers.push(format!("Last-Modified: {date}"));
        }
        if let Some(etag) = &file.etag {
            headers.push(format!("ETag: \"{etag}\""));
            if if_none_match.as_deref() == Some(etag.as_str()) {
                return respond(&mut stream, "304 Not Modified", &headers, b"", true);
            }
        }
        if let Some(value) = &file.content_disposition {
            headers.push(format!("Content-Disposition: {value}"));
        }
        return respond(&mut stream, "200 OK", &headers, &file.body, head);
    }
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|part| !matches!(part, Component::Normal(_)))
    {
        return respond(&mut stream, "404 Not Found", &[], b"", false);
    }
    match std::fs::read(dir.join(relative)) {
        Ok(body) => respond(&mut stream, "200 OK", &[], &body, head),
        Err(_) => respond(&mut stream, "404 Not Found", &[], b"", false),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[String],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// A TCP server on 127.0.0.1 that writes `text` to each connection and closes it; stops
/// accepting when dropped.
#[derive(Debug)]
pub(crate) struct EchoServer {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EchoServer {
    /// Starts it.
    pub(crate) fn start(text: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let text = text.as_bytes().to_vec();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut stream) = stream {
                    let _ = stream.write_all(&text);
                }
            }
        });
        Ok(Self { port, stop })
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
