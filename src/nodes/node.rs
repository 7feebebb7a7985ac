//! A build node: the platforms it builds and its SSH endpoint.
//!
//! `--node PLATFORMS=ssh://[USER@]HOST[:PORT][?xbuild=PATH&root=PATH]`: `PLATFORMS` is one
//! platform or several, comma separated (`linux/arm64,linux/arm/v7`); `xbuild=` is the xbuild
//! program on the node (default: `xbuild` on the login shell's `PATH`), `root=` its store
//! (default: that xbuild's own default, `/var/lib/xbuild` for root). Query values may be
//! percent-encoded.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::platform::Platform;

/// One node of a builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its name (`<builder>0`, `<builder>1`, ... as buildx names them).
    pub name: String,
    /// The platforms it builds.
    pub platforms: Vec<Platform>,
    /// How it is reached.
    pub endpoint: Endpoint,
}

/// An `ssh://` endpoint and where xbuild lives on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The login name (`None`: ssh's default, from `~/.ssh/config` or the local user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port (`None`: ssh's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The xbuild program on the node (`None`: `xbuild` on `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xbuild: Option<String>,
    /// The store on the node (`None`: the node's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

/// Why a `--node` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No `=` between platforms and endpoint.
    #[error("--node {0}: expected PLATFORM[,PLATFORM...]=ssh://[USER@]HOST[:PORT]")]
    Shape(String),
    /// A platform that does not parse.
    #[error("--node {value}: {message}")]
    Platform {
        /// The whole value.
        value: String,
        /// Why the platform is wrong.
        message: String,
    },
    /// An endpoint other than `ssh://`.
    #[error(
        "--node {0}: only ssh:// endpoints are supported (tcp://, docker-container:// and kubernetes are not supported yet)"
    )]
    Scheme(String),
    /// A malformed `ssh://` endpoint.
    #[error("--node {value}: {message}")]
    Endpoint {
        /// The whole value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

impl Node {
    /// Parses a `--node` value (see the module documentation); `name` names the node.
    ///
    /// # Errors
    /// [`NodeError`] naming the value and what is wrong with it.
    pub fn parse(name: &str, value: &str) -> Result<Self, NodeError> {
        let (platforms, endpoint) = value
            .split_once('=')
            .ok_or_else(|| NodeError::Shape(value.to_owned()))?;
        let mut parsed = Vec::new();
        for text in platforms.split(',').map(str::trim) {
            let platform = Platform::parse(text).map_err(|error| NodeError::Platform {
                value: value.to_owned(),
                message: error.to_string(),
            })?;
            if !parsed.contains(&platform) {
                parsed.push(platform);
            }
        }
        Ok(Self {
            name: name.to_owned(),
            platforms: parsed,
            endpoint: Endpoint::parse(endpoint).map_err(|error| match error {
                NodeError::Scheme(_) => NodeError::Scheme(value.to_owned()),
                NodeError::Endpoint { message, .. } => NodeError::Endpoint {
                    value: value.to_owned(),
                    message,
                },
                other => other,
            })?,
        })
    }
}

impl Endpoint {
    /// Parses `ssh://[USER@]HOST[:PORT][?xbuild=PATH&root=PATH]`.
    ///
    /// # Errors
    /// [`NodeError::Scheme`] for another scheme, [`NodeError::Endpoint`] for a bad one.
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let bad = |message: &str| NodeError::Endpoint {
            value: text.to_owned(),
            message: message.to_owned(),
        };
        let Some(rest) = text.strip_prefix("ssh://") else {
            return Err(NodeError::Scheme(text.to_owned()));
        };
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') {
            return Err(bad("a path after the host is not used by ssh:// endpoints"));
        }
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host_port)) if !user.is_empty() => {
                (Some(percent_decode(user).map_err(|m| bad(&m))?), host_port)
            }
            Some(_) => return Err(bad("empty user name before @")),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("unexpected text after ]")),
            }
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.starts_with('-') {
            return Err(bad("a host cannot start with -"));
        }
        let port = port
            .map(|port| {
                port.parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))
            })
            .transpose()?;
        let mut endpoint = Self {
            user,
            host: host.to_owned(),
            port,
            xbuild: None,
            root: None,
        };
        for pair in query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("query options are KEY=VALUE"))?;
            let value = percent_decode(value).map_err(|m| bad(&m))?;
            if value.is_empty() {
                return Err(bad(&format!("{key}= is empty")));
            }
            match key {
                "xbuild" => endpoint.xbuild = Some(value),
                "root" => endpoint.root = Some(value),
                other => {
                    return Err(bad(&format!(
                        "unknown option {other:?} (known: xbuild=, root=)"
                    )));
                }
            }
        }
        Ok(endpoint)
    }

    /// `user@host` (or `host`), as ssh takes it on its command line.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ssh://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        let mut separator = '?';
        for (key, value) in [("xbuild", &self.xbuild), ("root", &self.root)] {
            if let Some(value) = value {
                write!(f, "{separator}{key}={}", percent_encode(value))?;
                separator = '&';
            }
        }
        Ok(())
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_node() {
        let node = Node::parse(
            "b0",
            "linux/arm64,linux/arm/v7=ssh://build@10.1.2.3:2222?xbuild=/opt/x%20b/xbuild&root=/srv/xb",
        )
        .unwrap();
        assert_eq!(
            node.platforms,
            [
                Platform::parse("linux/arm64").unwrap(),
                Platform::parse("linux/arm/v7").unwrap()
            ]
        );
        let endpoint = &node.endpoint;
        assert_eq!(endpoint.user.as_deref(), Some("build"));
        assert_eq!(endpoint.host, "10.1.2.3");
        assert_eq!(endpoint.port, Some(2222));
        assert_eq!(endpoint.xbuild.as_deref(), Some("/opt/x b/xbuild"));
        assert_eq!(endpoint.root.as_deref(), Some("/srv/xb"));
        assert_eq!(endpoint.destination(), "build@10.1.2.3");
        assert_eq!(
            endpoint.to_string(),
            "ssh://build@10.1.2.3:2222?xbuild=/opt/x%20b/xbuild&root=/srv/xb"
        );
        assert_eq!(Endpoint::parse(&endpoint.to_string()).unwrap(), *endpoint);
    }

    #[test]
    fn parses_short_and_ipv6_endpoints() {
        let endpoint = Endpoint::parse("ssh://arm-box").unwrap();
        assert_eq!((endpoint.user, endpoint.port), (None, None));
        assert_eq!(endpoint.host, "arm-box");
        let endpoint = Endpoint::parse("ssh://root@[fd00::2]:22").unwrap();
        assert_eq!(endpoint.host, "fd00::2");
        assert_eq!(endpoint.to_string(), "ssh://root@[fd00::2]:22");
    }

    #[test]
    fn refuses_bad_values() {
        assert!(matches!(
            Node::parse("n", "ssh://host"),
            Err(NodeError::Shape(_))
        ));
        assert!(matches!(
            Node::parse("n", "linux/nope=ssh://host"),
            Err(NodeError::Platform { .. })
        ));
        assert!(matches!(
            Node::parse("n", "linux/arm64=tcp://host:1234"),
            Err(NodeError::Scheme(_))
        ));
        for bad in [
            "ssh://",
            "ssh://host:0",
            "ssh://host:x",
            "ssh://host/path",
            "ssh://-oProxyCommand=x",
            "ssh://host?color=red",
            "ssh://@host",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(NodeError::Endpoint { .. })),
                "{bad}"
            );
        }
    }
}
