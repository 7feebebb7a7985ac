//! Login, logout and credentials against the HTTPS + htpasswd registry of
//! [`crate::regenv`]: wrong passwords, `--password-stdin`, config.json, and a
//! `docker-credential-*` helper written here. No output may ever contain a password.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::os::unix::fs::PermissionsExt as _;

use crate::regenv::{self, PASSWORD, Setup, TestRegistry, USER};
use crate::util;

fn assert_no_secret(output: &std::process::Output, secret: &str) {
    let (stdout, stderr) = (util::stdout(output), util::stderr(output));
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "secret leaked: stdout {stdout:?} stderr {stderr:?}"
    );
}

/// A wrong password is refused with a clear error and exit 1, from stdin or the command
/// line (which also warns), and nothing is stored; pushing without or with wrong stored
/// credentials fails the same way.
#[test]
fn wrong_password_is_a_clear_error_without_the_secret() {
    if !regenv::ready(Setup::TlsAuth) {
        return;
    }
    let registry = TestRegistry::start(Setup::TlsAuth);
    let home = util::temp_dir();
    let wrong = "wr0ng-Secret-77aa";

    let output = regenv::run_with_stdin(
        registry.xbuild(home.path()).args([
            "login",
            "-u",
            USER,
            "--password-stdin",
            &registry.host,
        ]),
        &format!("{wrong}\n"),
    );
    assert_eq!(output.status.code(), Some(1), "{}", util::stderr(&output));
    assert!(
        util::stderr(&output).contains(&format!(
            "authentication to {} failed: the registry refused the credentials",
            registry.host
        )),
        "{}",
        util::stderr(&output)
    );
    assert_no_secret(&output, wrong);
    assert!(!home.path().join("docker").join("config.json").exists());

    let output = util::run(registry.xbuild(home.path()).args([
        "login",
        "-u",
        USER,
        "-p",
        wrong,
        &registry.host,
    ]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        util::stderr(&output).contains("--password-stdin"),
        "{}",
        util::stderr(&output)
    );
    assert_no_secret(&output, wrong);

    let name = format!("{}/auth/busybox:latest", registry.host);
    regenv::store_with_busybox(home.path(), &name);
    let output = util::run(registry.xbuild(home.path()).args(["push", &name]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        util::stderr(&output).contains("needs credentials"),
        "{}",
        util::stderr(&output)
    );

    // Wrong credentials stored in config.json.
    let config = home.path().join("docker").join("config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let auth = base64_encode(&format!("{USER}:{wrong}"));
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
    )
    .unwrap();
    let output = util::run(registry.xbuild(home.path()).args(["push", &name]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        util::stderr(&output).contains("refused the credentials"),
        "{}",
        util::stderr(&output)
    );
    assert_no_secret(&output, wrong);
    assert_no_secret(&output, &auth);
}

/// `--password-stdin` logs in, stores base64 credentials in config.json (mode 0600) with a
/// warning, they serve a push, and `logout` removes them.
#[test]
fn password_stdin_login_stores_config_and_logout_removes() {
    if !regenv::ready(Setup::TlsAuth) {
        return;
    }
    let registry = TestRegistry::start(Setup::TlsAuth);
    let home = util::temp_dir();
    let output = regenv::run_with_stdin(
        registry.xbuild(home.path()).args([
            "login",
            "-u",
            USER,
            "--password-stdin",
            &registry.host,
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(util::stdout(&output), "Login Succeeded\n");
    assert!(
        util::stderr(&output).contains("unencrypted"),
        "{}",
        util::stderr(&output)
    );
    assert_no_secret(&output, PASSWORD);

    let config = home.path().join("docker").join("config.json");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(
        json["auths"][&registry.host]["auth"],
        base64_encode(&format!("{USER}:{PASSWORD}")).as_str()
    );

    let name = format!("{}/auth/busybox:latest", registry.host);
    regenv::store_with_busybox(home.path(), &name);
    let output = util::run(registry.xbuild(home.path()).args(["push", &name]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_no_secret(&output, PASSWORD);

    let output = util::run(
        registry
            .xbuild(home.path())
            .args(["logout", &registry.host]),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(json["auths"].get(&registry.host).is_none(), "{json}");
    let output = util::run(registry.xbuild(home.path()).args(["push", &name]));
    assert_eq!(output.status.code(), Some(1));
}

/// With `credsStore` naming a helper, `login` stores through `docker-credential-<name>
/// store` (config.json keeps no secret), `push` reads through `get`, `logout` calls
/// `erase`.
#[test]
fn credential_helper_is_used_for_store_get_and_erase() {
    if !regenv::ready(Setup::TlsAuth) {
        return;
    }
    let registry = TestRegistry::start(Setup::TlsAuth);
    let home = util::temp_dir();
    let helper_dir = home.path().join("helper");
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&helper_dir).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("docker-credential-xtest");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
dir='{}'
echo "$1" >> "$dir/calls"
case "$1" in
  store) cat > "$dir/stored.json" ;;
  get) read server; echo "$server" > "$dir/asked"
       if [ -f "$dir/stored.json" ]; then cat "$dir/stored.json"
       else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read server; rm -f "$dir/stored.json" ;;
esac
"#,
            helper_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = home.path().join("docker").join("config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, r#"{"credsStore":"xtest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let output = regenv::run_with_stdin(
        registry.xbuild(home.path()).env("PATH", &path).args([
            "login",
            "-u",
            USER,
            "--password-stdin",
            &registry.host,
        ]),
        PASSWORD,
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(
        util::stderr(&output).contains("docker-credential-xtest"),
        "{}",
        util::stderr(&output)
    );
    assert_no_secret(&output, PASSWORD);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(helper_dir.join("stored.json")).unwrap()).unwrap();
    assert_eq!(stored["ServerURL"], registry.host.as_str());
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASSWORD);
    assert!(!std::fs::read_to_string(&config).unwrap().contains("auths"));

    let name = format!("{}/helper/busybox:latest", registry.host);
    regenv::store_with_busybox(home.path(), &name);
    let output = util::run(
        registry
            .xbuild(home.path())
            .env("PATH", &path)
            .args(["push", &name]),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(
        std::fs::read_to_string(helper_dir.join("asked"))
            .unwrap()
            .trim(),
        registry.host
    );

    let output = util::run(
        registry
            .xbuild(home.path())
            .env("PATH", &path)
            .args(["logout", &registry.host]),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(!helper_dir.join("stored.json").exists());
    let calls = std::fs::read_to_string(helper_dir.join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.first(), Some(&"store"));
    assert!(calls.contains(&"get"), "{calls:?}");
    assert_eq!(calls.last(), Some(&"erase"));
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// What the fake token registry saw.
#[derive(Default)]
struct Seen {
    token_requests: Vec<String>,
}

/// A registry that speaks only the bearer flow: `/v2/...` answers 401 with a challenge
/// until it gets the token `/token` issued for exactly the scope it needs; `/token` wants
/// Basic `USER:PASSWORD` (GET) or the refresh token `rt-1` (POST, OAuth2 grant).
fn fake_bearer_registry() -> (String, std::sync::Arc<std::sync::Mutex<Seen>>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let (realm_host, seen_by_server) = (host.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
                // Not HTTP (the TLS probe of a loopback registry): hang up, as Go does.
                if request.first().is_some_and(|b| !b.is_ascii_uppercase()) {
                    break;
                }
            }
            if request.first().is_none_or(|b| !b.is_ascii_uppercase()) {
                continue;
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let (head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let body_owned;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() < length {
                let mut rest = vec![0u8; length - body.len()];
                let _ = stream.read_exact(&mut rest);
                body_owned = format!("{body}{}", String::from_utf8_lossy(&rest));
                body = &body_owned;
            }
            let mut lines = head.lines();
            let request_line = lines.next().unwrap_or("");
            let target = request_line.split_whitespace().nth(1).unwrap_or("");
            let authorization = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .to_owned();
            let basic = format!("Basic {}", base64_encode(&format!("{USER}:{PASSWORD}")));
            let scope = "repository:bearer/app:pull";
            let answer = if target.starts_with("/token") {
                let (query, form) = (target.split_once('?').map_or("", |(_, q)| q), body);
                seen_by_server.lock().unwrap().token_requests.push(format!(
                    "{} {}{}",
                    request_line.split(' ').next().unwrap_or(""),
                    query,
                    form
                ));
                let granted = (request_line.starts_with("GET") && authorization == basic)
                    || (request_line.starts_with("POST")
                        && form.contains("grant_type=refresh_token")
                        && form.contains("refresh_token=rt-1"));
                let wanted = query.contains("scope=repository%3Abearer%2Fapp%3Apull")
                    || form.contains("scope=repository%3Abearer%2Fapp%3Apull");
                if granted && wanted {
                    let json = r#"{"token":"tok-app-pull","access_token":"tok-app-pull"}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                        json.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_owned()
                }
            } else if authorization == "Bearer tok-app-pull"
                && target == "/v2/bearer/app/manifests/latest"
            {
                let json = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                )
            } else {
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{realm_host}/token\",service=\"fake\",scope=\"{scope}\"\r\nContent-Length: 0\r\n\r\n"
                )
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (host, seen)
}

/// The bearer flow: a 401 challenge, a token fetched from the realm with Basic credentials
/// for exactly the pull scope, then the request with the token. Without credentials the
/// token service refuses, and the error says so.
#[test]
fn bearer_token_flow_asks_the_pull_scope_with_basic_credentials() {
    let (host, seen) = fake_bearer_registry();
    let home = util::temp_dir();
    let reference = format!("{host}/bearer/app:latest");
    let xbuild = || {
        let mut command = util::xbuild(home.path());
        command.env("DOCKER_CONFIG", home.path().join("docker"));
        command
    };
    let output = util::run(xbuild().args(["manifest", "inspect", &reference]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        util::stderr(&output).contains("token service refused"),
        "{}",
        util::stderr(&output)
    );

    let config = home.path().join("docker").join("config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let auth = base64_encode(&format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let output = util::run(xbuild().args(["manifest", "inspect", &reference]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(
        util::stdout(&output).contains("\"schemaVersion\": 2"),
        "{}",
        util::stdout(&output)
    );
    let requests = seen.lock().unwrap().token_requests.clone();
    let last = requests.last().unwrap();
    assert!(
        last.starts_with(
            "GET service=fake&scope=repository%3Abearer%2Fapp%3Apull&account=xbuilder"
        ),
        "{requests:?}"
    );
}

/// An identity token in config.json is exchanged with the OAuth2 refresh-token grant
/// (POST), which oci-client does not implement.
#[test]
fn identity_token_uses_the_refresh_token_grant() {
    let (host, seen) = fake_bearer_registry();
    let home = util::temp_dir();
    let config = home.path().join("docker").join("config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{host}":{{"identitytoken":"rt-1"}}}}}}"#),
    )
    .unwrap();
    let mut command = util::xbuild(home.path());
    command.env("DOCKER_CONFIG", home.path().join("docker"));
    let output = util::run(command.args([
        "imagetools",
        "inspect",
        "--raw",
        &format!("{host}/bearer/app:latest"),
    ]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(util::stdout(&output).starts_with("{\"schemaVersion\":2"));
    let requests = seen.lock().unwrap().token_requests.clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST ") && r.contains("grant_type=refresh_token")),
        "{requests:?}"
    );
    assert_no_secret(&output, "rt-1");
}

/// An HTTPS registry whose CA is not in `certs.d` is refused with advice, not reached over
/// plain HTTP instead.
#[test]
fn untrusted_certificate_is_refused_with_advice() {
    if !regenv::ready(Setup::TlsAuth) {
        return;
    }
    let registry = TestRegistry::start(Setup::TlsAuth);
    let home = util::temp_dir();
    let mut command = util::xbuild(home.path());
    command.env("DOCKER_CONFIG", home.path().join("docker"));
    let output = util::run(command.args([
        "manifest",
        "inspect",
        &format!("{}/any/image:1", registry.host),
    ]));
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TLS certificate not trusted"), "{stderr}");
    assert!(
        stderr.contains(&format!("certs.d/{}/ca.crt", registry.host)),
        "{stderr}"
    );
}
