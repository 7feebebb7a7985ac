//! Where a registry's credentials may go when its `Bearer` challenge names a token service
//! (the *realm*), and the note the user gets the first time they go to another host.
//!
//! The rules ([`policy`]):
//! - A realm over HTTPS gets the credentials. On another host than the registry (Docker Hub's
//!   `auth.docker.io` for `registry-1.docker.io`, a cloud's token service), the user is told
//!   the first time, as a progress note ([`CredentialNotes`]).
//! - A realm over plain HTTP gets them only on the registry's own host when the registry
//!   itself is plain HTTP (a loopback or `--insecure-registry` host, as today): never from
//!   an HTTPS registry (the password would cross the network in clear text because the
//!   registry said so), never on another host.
//! - Without credentials, a token is asked for anonymously wherever the realm is: nothing
//!   secret is sent.
//!
//! Docker and containerd send the credentials to whatever realm the challenge names.
//!
//! Must not: send anything itself (the transport does), or print (notes go to the progress
//! sink the caller gave).

use std::collections::HashSet;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use reqwest::Url;

use crate::progress::{Event, SharedSink};

/// What may be sent to a token realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The credentials may go there: it is the registry's own host, over the registry's
    /// scheme or HTTPS.
    SameHost,
    /// The credentials may go there (HTTPS), but it is another host: tell the user the
    /// first time.
    OtherHost,
    /// Only an anonymous token request: the credentials would travel over plain HTTP.
    NoCredentials {
        /// Why, for the error when credentials are configured.
        reason: &'static str,
    },
}

/// The policy for sending the credentials of the registry at `registry` (its API base URL)
/// to the token realm `realm`.
///
/// # Errors
/// A realm that is neither `https` nor `http` (the message says what it is).
pub fn policy(registry: &Url, realm: &Url) -> Result<Policy, String> {
    let same_host = registry.host_str() == realm.host_str();
    match realm.scheme() {
        "https" if same_host => Ok(Policy::SameHost),
        "https" => Ok(Policy::OtherHost),
        "http" if registry.scheme() == "https" => Ok(Policy::NoCredentials {
            reason: "plain HTTP from an HTTPS registry",
        }),
        "http" if same_host => Ok(Policy::SameHost),
        "http" => Ok(Policy::NoCredentials {
            reason: "plain HTTP on another host than the registry",
        }),
        other => Err(format!(
            "the token realm {realm} is neither https nor http ({other})"
        )),
    }
}

/// Tells the user, once, that a registry's credentials go to a token service on another
/// host. "Once" is remembered in a small file (normally `realm-notes` under the store: one
/// line per registry and realm), so the note shows at the first use, not at every build;
/// within one process it shows at most once even when that file cannot be written.
///
/// Without a sink (`--progress=quiet`, library use) nothing is shown and nothing is
/// remembered, so the note shows the next time something can show it.
#[derive(Clone, Default)]
pub struct CredentialNotes {
    sink: Option<SharedSink>,
    record: Option<PathBuf>,
    shown: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for CredentialNotes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialNotes")
            .field("sink", &self.sink.as_ref().map(|_| "..."))
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// The largest record file read (it holds a line per registry and realm ever noted).
const RECORD_LIMIT: u64 = 1 << 20;

impl CredentialNotes {
    /// Notes remembered in `record`, shown nowhere yet.
    pub fn remembered_in(record: Option<PathBuf>) -> Self {
        Self {
            sink: None,
            record,
            shown: Arc::default(),
        }
    }

    /// The same, shown as progress notes on `sink`.
    #[must_use]
    pub fn shown_on(mut self, sink: SharedSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The credentials for `registry` are about to go to `realm`, another host: shows the
    /// note unless it was shown before.
    pub fn foreign_realm(&self, registry: &str, realm: &Url) {
        let Some(sink) = &self.sink else {
            return;
        };
        let origin = realm.origin().ascii_serialization();
        let key = format!("{registry} {origin}");
        {
            let Ok(mut shown) = self.shown.lock() else {
                return;
            };
            if !shown.insert(key.clone()) || self.recorded(&key) {
                return;
            }
        }
        sink.emit(Event::Note {
            message: format!(
                "sending the credentials for {registry} to its token service on another host: {} (shown once)",
                realm.as_str().split('?').next().unwrap_or("")
            ),
        });
        self.record(&key);
    }

    fn recorded(&self, key: &str) -> bool {
        let Some(path) = &self.record else {
            return false;
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(RECORD_LIMIT).read_to_string(&mut text))
            .is_ok_and(|_| text.lines().any(|line| line == key))
    }

    /// Best effort: an unwritable record only means the note shows again next time.
    fn record(&self, key: &str) {
        let Some(path) = &self.record else {
            return;
        };
        if path.parent().is_none_or(|dir| !dir.is_dir()) {
            return;
        }
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(format!("{key}\n").as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn https_realms_get_credentials_other_hosts_with_a_note() {
        let registry = url("https://registry-1.docker.io/");
        assert_eq!(
            policy(&registry, &url("https://auth.docker.io/token")),
            Ok(Policy::OtherHost)
        );
        assert_eq!(
            policy(&registry, &url("https://registry-1.docker.io:8443/token")),
            Ok(Policy::SameHost)
        );
        // From a plain-HTTP (insecure) registry too.
        assert_eq!(
            policy(
                &url("http://127.0.0.1:5000/"),
                &url("https://localhost/token")
            ),
            Ok(Policy::OtherHost)
        );
    }

    #[test]
    fn plain_http_realms_get_credentials_only_from_their_own_plain_registry() {
        assert_eq!(
            policy(
                &url("http://127.0.0.1:5000/"),
                &url("http://127.0.0.1:5000/token")
            ),
            Ok(Policy::SameHost)
        );
        assert_eq!(
            policy(
                &url("http://127.0.0.1:5000/"),
                &url("http://127.0.0.1:5001/token")
            ),
            Ok(Policy::SameHost)
        );
        assert!(matches!(
            policy(&url("https://reg.example/"), &url("http://reg.example/token")),
            Ok(Policy::NoCredentials { reason }) if reason.contains("HTTPS registry")
        ));
        assert!(matches!(
            policy(
                &url("https://reg.example/"),
                &url("http://auth.example/token")
            ),
            Ok(Policy::NoCredentials { .. })
        ));
        assert!(matches!(
            policy(&url("http://reg.lan:5000/"), &url("http://auth.lan/token")),
            Ok(Policy::NoCredentials { reason }) if reason.contains("another host")
        ));
        assert!(policy(&url("https://reg.example/"), &url("ftp://reg.example/t")).is_err());
    }

    #[test]
    fn a_note_shows_once_and_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("realm-notes");
        let sink = Arc::new(crate::progress::Recorder::default());
        let realm = url("https://auth.example/token?scope=x");
        let notes = CredentialNotes::remembered_in(Some(record.clone())).shown_on(sink.clone());
        notes.foreign_realm("reg.example", &realm);
        notes.foreign_realm("reg.example", &realm);
        assert_eq!(sink.events().len(), 1);
        // Another process on the same store: remembered.
        let again = CredentialNotes::remembered_in(Some(record.clone())).shown_on(sink.clone());
        again.foreign_realm("reg.example", &realm);
        assert_eq!(sink.events().len(), 1);
        // Another registry with the same realm: its own note.
        again.foreign_realm("other.example", &realm);
        assert_eq!(sink.events().len(), 2);
        let Event::Note { message } = &sink.events()[0] else {
            panic!("a note");
        };
        assert_eq!(
            message,
            "sending the credentials for reg.example to its token service on another host: https://auth.example/token (shown once)"
        );
        // Without a sink: nothing shown, nothing remembered.
        let quiet = CredentialNotes::remembered_in(Some(dir.path().join("other")));
        quiet.foreign_realm("reg.example", &realm);
        assert!(!dir.path().join("other").exists());
    }
}
