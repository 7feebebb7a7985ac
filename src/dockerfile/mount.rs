//! `RUN --mount=type=...,key=value,...`: the mount specification, typed and checked.
//!
//! Types and keys follow the Dockerfile reference (`RUN --mount`): `bind` (default), `cache`,
//! `tmpfs`, `secret`, `ssh`. Values may hold variables (`target=$DIR`, `type=$KIND`); those
//! are checked after expansion ([`Mount::parse`] with `allow_variables`, then
//! [`Mount::parse_expanded`]), except `from=`, which BuildKit refuses to expand.

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory of the context or another stage, read-only by default.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// Cache sharing mode (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent writers share the cache (default).
    Shared,
    /// Each writer gets a new cache when it is in use.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One `--mount` of a `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// `type=` (default `bind`).
    #[serde(rename = "type")]
    pub kind: MountType,
    /// `target=` / `dst=` / `destination=`: where it appears in the container.
    pub target: Option<String>,
    /// `source=` / `src=`: path in `from` (bind, cache) or the context.
    pub source: Option<String>,
    /// `from=`: a stage or image providing `source` (bind, cache).
    pub from: Option<String>,
    /// `ro`/`readonly` (default for bind) versus `rw`/`readwrite` (default for cache).
    pub read_only: bool,
    /// `id=` (cache, secret, ssh).
    pub id: Option<String>,
    /// `sharing=` (cache).
    pub sharing: Option<Sharing>,
    /// `mode=` in octal (cache, secret, ssh).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret, ssh).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret, ssh).
    pub gid: Option<u32>,
    /// `required=` (secret, ssh): fail when it is not provided.
    pub required: bool,
    /// `size=` in bytes (tmpfs).
    pub size: Option<u64>,
    /// `env=` (secret): also (or instead) expose the secret as this variable.
    pub env: Option<String>,
    /// The specification as written (before expansion).
    pub spec: String,
}

/// How [`Mount::parse_with`] treats values holding variables.
enum Values<'e> {
    /// As written: every value is checked now.
    Literal,
    /// Not expanded yet: a value holding `$` is checked after expansion (a `type=$VAR` leaves
    /// the type, and so which keys apply, to then).
    Deferred,
    /// Each value is expanded with this before it is read, as BuildKit does.
    Expanded(&'e dyn Fn(&str) -> Result<String, String>),
}

/// Every key BuildKit knows, for "did you mean".
const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// BuildKit's suggestion suffix for a mistyped word among `options`.
fn did_you_mean(word: &str, options: &[&str]) -> String {
    super::error::suggest(word, options)
        .map_or_else(String::new, |near| format!(" (did you mean {near}?)"))
}

impl Mount {
    /// Parses one `--mount` value. With `allow_variables`, values holding `$` are kept
    /// unchecked (they are checked again after expansion, [`Self::parse_expanded`]); a
    /// `type=$VAR` leaves the type unknown until then (`kind` is `Bind` meanwhile). `from=`
    /// takes no variables at all, as in BuildKit: a stage to mount is named as written.
    ///
    /// # Errors
    /// A message naming the bad key or value (BuildKit's wording where it has one).
    pub fn parse(spec: &str, allow_variables: bool) -> Result<Self, String> {
        let values = if allow_variables {
            Values::Deferred
        } else {
            Values::Literal
        };
        Self::parse_with(spec, &values)
    }

    /// Parses one `--mount` value, expanding each value with `expand` before reading it (the
    /// keys and the CSV quoting are not expanded), as BuildKit does. `spec` stays as written.
    ///
    /// # Errors
    /// As [`Self::parse`], and what `expand` returns.
    pub fn parse_expanded(
        spec: &str,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Self, String> {
        Self::parse_with(spec, &Values::Expanded(expand))
    }

    fn parse_with(spec: &str, values: &Values<'_>) -> Result<Self, String> {
        let deferred = |value: &str| matches!(values, Values::Deferred) && value.contains('$');
        let mut fields = Vec::new();
        for (key, value) in split_fields(spec)? {
            let key = key.to_lowercase();
            let value = match (values, value) {
                (Values::Expanded(expand), Some(value)) if key != "from" => Some(expand(&value)?),
                (_, value) => value,
            };
            if key == "from" {
                if let Some(value) = &value {
                    if value.find('$').is_some_and(|at| at + 1 != value.len()) {
                        return Err(
                            "'from' doesn't support variable expansion, define alias stage instead"
                                .to_owned(),
                        );
                    }
                }
            }
            fields.push((key, value));
        }
        let mut kind = MountType::Bind;
        let mut kind_known = true;
        for (key, value) in &fields {
            if key == "type" {
                let value = value.as_deref().unwrap_or("");
                if deferred(value) {
                    kind_known = false;
                    continue;
                }
                kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(format!(
                            "unsupported mount type {value:?}{}",
                            did_you_mean(value, &["bind", "cache", "tmpfs", "secret", "ssh"])
                        ));
                    }
                };
            }
        }
        let mut mount = Self {
            kind,
            target: None,
            source: None,
            from: None,
            read_only: kind == MountType::Bind,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            size: None,
            env: None,
            spec: spec.to_owned(),
        };
        for (key, value) in fields {
            let allowed: &[MountType] = match key.as_str() {
                "type" => continue,
                "target" | "dst" | "destination" | "ro" | "readonly" | "rw" | "readwrite" => &[
                    MountType::Bind,
                    MountType::Cache,
                    MountType::Tmpfs,
                    MountType::Secret,
                    MountType::Ssh,
                ],
                "source" | "src" | "from" => {
                    &[MountType::Bind, MountType::Cache, MountType::Secret]
                }
                "id" => &[MountType::Cache, MountType::Secret, MountType::Ssh],
                "sharing" => &[MountType::Cache],
                "mode" | "uid" | "gid" => &[MountType::Cache, MountType::Secret, MountType::Ssh],
                "required" => &[MountType::Secret, MountType::Ssh],
                "size" => &[MountType::Tmpfs],
                "env" => &[MountType::Secret],
                _ => {
                    let field = match &value {
                        Some(value) => format!("{key}={value}"),
                        None => key.clone(),
                    };
                    return Err(format!(
                        "unexpected key '{key}' in '{field}'{}",
                        did_you_mean(&key, KEYS)
                    ));
                }
            };
            if !kind_known {
                // Checked once the type is known (after expansion).
                continue;
            }
            if !allowed.contains(&kind) {
                return Err(format!(
                    "mount option {key:?} does not apply to type={}",
                    type_name(kind)
                ));
            }
            let needs_value = |value: Option<String>| {
                value
                    .filter(|value| !value.is_empty())
                    .ok_or_else(|| format!("mount option {key:?} needs a value"))
            };
            match key.as_str() {
                "target" | "dst" | "destination" => mount.target = Some(needs_value(value)?),
                "source" | "src" => {
                    if kind == MountType::Secret {
                        // For secrets BuildKit reads `src` as the secret's id alias.
                        mount.id.get_or_insert(needs_value(value)?);
                    } else {
                        mount.source = Some(needs_value(value)?);
                    }
                }
                "from" => {
                    if kind == MountType::Secret {
                        return Err("mount option \"from\" does not apply to type=secret".into());
                    }
                    mount.from = Some(needs_value(value)?);
                }
                "ro" | "readonly" => mount.read_only = parse_bool(&key, value.as_deref())?,
                "rw" | "readwrite" => mount.read_only = !parse_bool(&key, value.as_deref())?,
                "id" => mount.id = Some(needs_value(value)?),
                "env" => mount.env = Some(needs_value(value)?),
                "sharing" => {
                    let value = needs_value(value)?;
                    mount.sharing = Some(match value.to_lowercase().as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => {
                            return Err(format!(
                                "unsupported sharing value {value:?}{}",
                                did_you_mean(&value, &["shared", "private", "locked"])
                            ));
                        }
                    });
                }
                "mode" => {
                    let value = needs_value(value)?;
                    if !deferred(&value) {
                        mount.mode = Some(
                            u32::from_str_radix(&value, 8)
                                .ok()
                                .filter(|mode| *mode <= 0o7777)
                                .ok_or_else(|| format!("mode={value:?} is not an octal mode"))?,
                        );
                    }
                }
                "uid" | "gid" => {
                    let value = needs_value(value)?;
                    if !deferred(&value) {
                        let id = value
                            .parse::<u32>()
                            .map_err(|_| format!("{key}={value:?} is not a number"))?;
                        if key == "uid" {
                            mount.uid = Some(id);
                        } else {
                            mount.gid = Some(id);
                        }
                    }
                }
                "required" => mount.required = parse_bool(&key, value.as_deref())?,
                "size" => {
                    let value = needs_value(value)?;
                    if !deferred(&value) {
                        mount.size = Some(parse_size(&value)?);
                    }
                }
                _ => unreachable!("every key is listed above"),
            }
        }
        if !kind_known {
            return Ok(mount);
        }
        if mount.target.is_none()
            && matches!(kind, MountType::Bind | MountType::Cache | MountType::Tmpfs)
        {
            return Err(format!("type={} mounts need a target", type_name(kind)));
        }
        if kind == MountType::Secret && mount.id.is_none() && mount.target.is_none() {
            return Err("type=secret mounts need an id or a target".into());
        }
        Ok(mount)
    }
}

fn type_name(kind: MountType) -> &'static str {
    match kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// Splits `a=b,c,"d=e,f"` into fields, CSV style (a quoted field may hold commas).
fn split_fields(spec: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    let mut push = |field: &mut String| {
        let text = std::mem::take(field);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match text.split_once('=') {
            Some((key, value)) => fields.push((key.trim().to_owned(), Some(value.to_owned()))),
            None => fields.push((text.to_owned(), None)),
        }
    };
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => push(&mut field),
            ch => field.push(ch),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in mount {spec:?}"));
    }
    push(&mut field);
    if fields.is_empty() {
        return Err("empty mount specification".into());
    }
    Ok(fields)
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::to_lowercase).as_deref() {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(format!("{key}={other:?} is not true or false")),
    }
}

/// `1024`, `64k`, `10m`, `1g` (binary units, as Docker's `RAMInBytes`).
fn parse_size(value: &str) -> Result<u64, String> {
    let lower = value.to_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let digits_end = lower
        .find(|ch: char| !ch.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "ki" => 1 << 10,
        "m" | "mi" => 1 << 20,
        "g" | "gi" => 1 << 30,
        "t" | "ti" => 1 << 40,
        _ => return Err(format!("size={value:?} is not a size (e.g. 64m)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| format!("size={value:?} is not a size (e.g. 64m)"))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[test]
    fn bind_defaults_read_only() {
        let mount = Mount::parse("target=/src,source=.,from=build", false).unwrap();
        assert_eq!(mount.kind, MountType::Bind);
        assert!(mount.read_only);
        assert_eq!(mount.from.as_deref(), Some("build"));
        assert!(
            !Mount::parse("type=bind,target=/x,rw", false)
                .unwrap()
                .read_only
        );
    }

    #[test]
    fn cache_options() {
        let mount = Mount::parse(
            "type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1000,gid=1000",
            false,
        )
        .unwrap();
        assert_eq!(mount.kind, MountType::Cache);
        assert!(!mount.read_only);
        assert_eq!(mount.sharing, Some(Sharing::Locked));
        assert_eq!(mount.mode, Some(0o755));
        assert_eq!((mount.uid, mount.gid), (Some(1000), Some(1000)));
    }

    #[test]
    fn tmpfs_secret_ssh() {
        assert_eq!(
            Mount::parse("type=tmpfs,target=/t,size=64m", false)
                .unwrap()
                .size,
            Some(64 << 20)
        );
        let secret = Mount::parse("type=secret,id=token,env=TOKEN,required", false).unwrap();
        assert_eq!(secret.id.as_deref(), Some("token"));
        assert!(secret.required);
        assert_eq!(secret.env.as_deref(), Some("TOKEN"));
        let ssh = Mount::parse("type=ssh", false).unwrap();
        assert_eq!(ssh.kind, MountType::Ssh);
    }

    #[test]
    fn variables_are_checked_later() {
        let mount = Mount::parse("type=cache,target=/c,uid=$UID", true).unwrap();
        assert_eq!(mount.uid, None);
        assert!(Mount::parse("type=cache,target=/c,uid=$UID", false).is_err());
    }

    /// BuildKit's testMountArg: `type=$MNT_TYPE` is expanded, then read (not lower-cased and
    /// refused as written).
    #[test]
    fn a_type_from_a_variable_is_read_after_expansion() {
        let spec = "type=$MNT_TYPE,target=/mytmp,size=$SIZE";
        let deferred = Mount::parse(spec, true).unwrap();
        assert_eq!(deferred.spec, spec);
        let expand = |value: &str| Ok(value.replace("$MNT_TYPE", "tmpfs").replace("$SIZE", "64k"));
        let mount = Mount::parse_expanded(spec, &expand).unwrap();
        assert_eq!(mount.kind, MountType::Tmpfs);
        assert_eq!(mount.size, Some(64 << 10));
        assert_eq!(mount.target.as_deref(), Some("/mytmp"));
        assert!(!mount.read_only);
        let wrong = |value: &str| Ok(value.replace("$MNT_TYPE", "nfs").replace("$SIZE", "1"));
        assert!(
            Mount::parse_expanded(spec, &wrong)
                .unwrap_err()
                .starts_with("unsupported mount type \"nfs\"")
        );
    }

    /// Values are expanded one by one, after the CSV split: a value holding a comma stays
    /// one value.
    #[test]
    fn values_are_expanded_after_the_split() {
        let expand = |value: &str| Ok(value.replace("$DIR", "/a,b"));
        let mount = Mount::parse_expanded("type=cache,target=$DIR,id=x", &expand).unwrap();
        assert_eq!(mount.target.as_deref(), Some("/a,b"));
        assert_eq!(mount.id.as_deref(), Some("x"));
    }

    /// BuildKit's testMountFromError: `from=` names a stage as written; a `$` at the very
    /// end is no variable.
    #[test]
    fn from_takes_no_variables() {
        for spec in [
            "from=$FROM,target=/x",
            "from=${FROM},target=/x",
            "from=a$b,target=/x",
        ] {
            let error = Mount::parse(spec, true).unwrap_err();
            assert_eq!(
                error, "'from' doesn't support variable expansion, define alias stage instead",
                "{spec}"
            );
        }
        assert_eq!(
            Mount::parse("from=odd$,target=/x", true)
                .unwrap()
                .from
                .as_deref(),
            Some("odd$")
        );
    }

    #[rstest]
    #[case("type=nfs,target=/x", "unsupported mount type \"nfs\"")]
    #[case(
        "type=tmp,target=/x",
        "unsupported mount type \"tmp\" (did you mean tmpfs?)"
    )]
    #[case(
        "typ=cache,target=/x",
        "unexpected key 'typ' in 'typ=cache' (did you mean type?)"
    )]
    #[case("type=bind", "need a target")]
    #[case("type=cache,target=/x,size=1", "does not apply")]
    #[case("type=tmpfs,target=/x,from=a", "does not apply")]
    #[case("target=/x,colour=blue", "unexpected key 'colour' in 'colour=blue'")]
    #[case(
        "type=cache,target=/x,sharing=maybe",
        "unsupported sharing value \"maybe\""
    )]
    #[case(
        "type=bind,target=/x,from=$STAGE",
        "'from' doesn't support variable expansion"
    )]
    #[case("type=cache,target=/x,mode=999", "octal")]
    #[case("type=cache,target=/x,uid=root", "not a number")]
    #[case("type=secret", "id or a target")]
    #[case("type=bind,target=/x,ro=yes", "true or false")]
    #[case("type=tmpfs,target=/x,size=lots", "not a size")]
    #[case("target=\"/x", "unterminated quote")]
    fn invalid(#[case] spec: &str, #[case] message: &str) {
        let error = Mount::parse(spec, false).unwrap_err();
        assert!(error.contains(message), "{spec}: {error}");
    }
}
