//! `USER` resolution against the image's own `/etc/passwd` and `/etc/group` (never the
//! host's), following runc's `user.GetExecUser` rules, which Docker and BuildKit use:
//! - `name` or `uid`, optionally `:group` or `:gid`;
//! - a numeric uid missing from `passwd` is allowed (gid 0, home `/`); a name is not;
//! - without an explicit group, the supplementary groups are those listing the user's
//!   name in `/etc/group`.

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME` when the environment has none).
    pub home: String,
}

/// Why a `USER` could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A user name not in `/etc/passwd`.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// A group name not in `/etc/group`.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name.
        name: String,
    },
}

struct PasswdLine<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_lines(text: &str) -> impl Iterator<Item = PasswdLine<'_>> {
    text.lines().filter_map(|line| {
        let fields = line.split(':').collect::<Vec<_>>();
        if line.starts_with('#') || fields.len() < 6 {
            return None;
        }
        Some(PasswdLine {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5],
        })
    })
}

struct GroupLine<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_lines(text: &str) -> impl Iterator<Item = GroupLine<'_>> {
    text.lines().filter_map(|line| {
        let fields = line.split(':').collect::<Vec<_>>();
        if line.starts_with('#') || fields.len() < 3 {
            return None;
        }
        Some(GroupLine {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members: fields
                .get(3)
                .map(|members| {
                    members
                        .split(',')
                        .filter(|member| !member.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` (`None` or empty = root) with the image's `passwd` and `group` texts
/// (empty when the files are missing).
///
/// # Errors
/// [`UserError`] for names that are not in the files.
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<ExecUser, UserError> {
    let spec = spec.filter(|spec| !spec.is_empty()).unwrap_or("root");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let numeric = user_part.parse::<u32>().ok();
    let found = passwd_lines(passwd)
        .find(|line| numeric.map_or(line.name == user_part, |uid| line.uid == uid));
    let user_name = found.as_ref().map(|line| line.name.to_owned());
    let mut user = match (found, numeric) {
        (Some(line), _) => ExecUser {
            uid: line.uid,
            gid: line.gid,
            groups: Vec::new(),
            home: line.home.to_owned(),
        },
        (None, Some(uid)) => ExecUser {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".to_owned(),
        },
        // root works even in an image without /etc/passwd (FROM scratch).
        (None, None) if user_part == "root" => ExecUser {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: "/root".to_owned(),
        },
        (None, None) => {
            return Err(UserError::UnknownUser {
                name: user_part.to_owned(),
            });
        }
    };
    match group_part.filter(|group| !group.is_empty()) {
        Some(group_name) => {
            user.gid = match group_name.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_lines(group)
                    .find(|line| line.name == group_name)
                    .map(|line| line.gid)
                    .ok_or_else(|| UserError::UnknownGroup {
                        name: group_name.to_owned(),
                    })?,
            };
        }
        None => {
            if let Some(name) = user_name {
                user.groups = group_lines(group)
                    .filter(|line| line.members.contains(&name.as_str()))
                    .map(|line| line.gid)
                    .collect();
            }
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nadm:x:4:app\nstaff:x:50:app,daemon\nnogroup:x:65534:\napp:x:1000:\n";

    #[rstest]
    #[case(None, 0, 0, &[], "/root")]
    #[case(Some(""), 0, 0, &[], "/root")]
    #[case(Some("nobody"), 65534, 65534, &[], "/nonexistent")]
    #[case(Some("app"), 1000, 1000, &[4, 50], "/home/app")]
    #[case(Some("1000"), 1000, 1000, &[4, 50], "/home/app")]
    #[case(Some("4242"), 4242, 0, &[], "/")]
    #[case(Some("app:staff"), 1000, 50, &[], "/home/app")]
    #[case(Some("app:77"), 1000, 77, &[], "/home/app")]
    #[case(Some("4242:4242"), 4242, 4242, &[], "/")]
    fn resolves_like_runc(
        #[case] spec: Option<&str>,
        #[case] uid: u32,
        #[case] gid: u32,
        #[case] groups: &[u32],
        #[case] home: &str,
    ) {
        let user = resolve(spec, PASSWD, GROUP).unwrap();
        assert_eq!(
            (
                user.uid,
                user.gid,
                user.groups.as_slice(),
                user.home.as_str()
            ),
            (uid, gid, groups, home)
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve(Some("nosuch"), PASSWD, GROUP),
            Err(UserError::UnknownUser {
                name: "nosuch".into()
            })
        );
        assert_eq!(
            resolve(Some("app:nosuch"), PASSWD, GROUP),
            Err(UserError::UnknownGroup {
                name: "nosuch".into()
            })
        );
    }

    #[test]
    fn root_works_without_passwd() {
        assert_eq!(resolve(Some("root"), "", "").unwrap().uid, 0);
    }
}
