//! `xbuild build --call=build|check|outline|targets[,format=json]` and `--check`, as buildx
//! has them: instead of building, evaluate the build checks (`check`, what `xbuild check`
//! does), list the build arguments, secrets and ssh forwards a target takes (`outline`), or
//! list the stages (`targets`), in buildx's text or BuildKit's JSON
//! ([`crate::dockerfile::outline`]).
//!
//! A call other than `build` builds nothing, so flags that only say what to do with a
//! result (`-t`, `--push`, `-o`, `--load`, `--metadata-file`, `--iidfile`, `--cache-to`,
//! attestations) are refused with it rather than ignored.

use std::path::PathBuf;

use super::check::{CheckArgs, Format};
use super::output;
use crate::dockerfile::{self, outline};
use crate::error::{ExitKind, Failure};
use crate::platform;

/// A frontend method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Build (the default).
    Build,
    /// Evaluate the build checks.
    Check,
    /// The target's build arguments, secrets and ssh forwards.
    Outline,
    /// The stages.
    Targets,
}

/// A parsed `--call` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Call {
    /// The method.
    pub(crate) method: Method,
    /// `format=json`.
    pub(crate) json: bool,
    /// `ignorestatus=true`: exit 0 even when the checks found something.
    pub(crate) ignore_status: bool,
}

impl Call {
    /// Parses buildx's `--call` value: `NAME[,format=json|text][,ignorestatus=BOOL]`.
    ///
    /// # Errors
    /// An unknown method or field (exit 2).
    pub(crate) fn parse(value: &str) -> anyhow::Result<Self> {
        let mut method = None;
        let mut json = false;
        let mut ignore_status = false;
        for field in value.split(',').map(str::trim) {
            match field.split_once('=') {
                Some(("format", "json")) => json = true,
                Some(("format", "text" | "")) => json = false,
                Some(("format", other)) => {
                    return Err(Failure::bad_input(format_args!(
                        "--call {value}: format {other:?}: use json or text"
                    ))
                    .into());
                }
                Some(("ignorestatus", flag)) => {
                    ignore_status = flag.parse::<bool>().map_err(|_| {
                        Failure::bad_input(format_args!(
                            "--call {value}: invalid ignorestatus print value: {flag}"
                        ))
                    })?;
                }
                Some(_) => {
                    return Err(Failure::bad_input(format_args!(
                        "--call {value}: invalid print field: {field} (known: format, ignorestatus)"
                    ))
                    .into());
                }
                None if method.is_some() => {
                    return Err(Failure::bad_input(format_args!(
                        "--call {value}: invalid print value: {value}"
                    ))
                    .into());
                }
                None => {
                    method = Some(match field {
                        "build" => Method::Build,
                        "check" | "lint" => Method::Check,
                        "outline" => Method::Outline,
                        "targets" => Method::Targets,
                        other => {
                            return Err(Failure::bad_input(format_args!(
                                "--call {other}: not a method of the Dockerfile frontend \
                                 (known: build, check, outline, targets)"
                            ))
                            .into());
                        }
                    });
                }
            }
        }
        Ok(Self {
            method: method.unwrap_or(Method::Build),
            json,
            ignore_status,
        })
    }
}

/// What a call reads of `xbuild build`'s arguments.
pub(crate) struct CallInputs {
    /// The context directory.
    pub(crate) context: PathBuf,
    /// `-f`.
    pub(crate) file: Option<PathBuf>,
    /// `--build-arg`s as given.
    pub(crate) build_args: Vec<String>,
    /// `--platform`s as given.
    pub(crate) platform: Vec<String>,
    /// `--target`.
    pub(crate) target: Option<String>,
    /// The flags given that only say what to do with a built result (`-t`, `--push`, ...).
    pub(crate) result_flags: Vec<&'static str>,
}

/// Runs `call` (not [`Method::Build`]) for `args`.
///
/// # Errors
/// Flags that only apply to a build, an unreadable or invalid Dockerfile, an unknown target
/// (exit 2); `check` found something (exit 1, unless `ignorestatus=true`).
pub(crate) fn run(args: &CallInputs, call: Call) -> anyhow::Result<()> {
    let name = match call.method {
        Method::Build => return Ok(()),
        Method::Check => "check",
        Method::Outline => "outline",
        Method::Targets => "targets",
    };
    if let Some(flag) = args.result_flags.first() {
        return Err(Failure::bad_input(format_args!(
            "--call={name} builds nothing: {flag} has no result to apply to"
        ))
        .into());
    }
    if args
        .context
        .to_str()
        .is_some_and(crate::remote::is_remote_context)
    {
        return Err(super::unsupported(format_args!(
            "--call={name} with a URL as the build context"
        )));
    }
    // `Dockerfile`, else a lower-case `dockerfile`, as the build finds it.
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| crate::context::locate_dockerfile(&args.context.join("Dockerfile")));
    if call.method == Method::Check {
        let check = CheckArgs {
            context: args.context.clone(),
            file: Some(dockerfile),
            build_args: args.build_args.clone(),
            platform: args.platform.clone(),
            target: args.target.clone(),
            format: if call.json {
                Format::Json
            } else {
                Format::Text
            },
        };
        return match check.run() {
            Err(error)
                if call.ignore_status && crate::error::exit_kind(&error) == ExitKind::Failed =>
            {
                Ok(())
            }
            other => other,
        };
    }
    let file_name = dockerfile.display().to_string();
    let (text, tree) = super::check::read_dockerfile(&dockerfile)?;
    let bad = |error: dockerfile::DockerfileError| {
        Failure::new(ExitKind::BadInput, error.with_file(&file_name))
    };
    let stages = dockerfile::stages(&tree).map_err(bad)?;
    let printed = if call.method == Method::Targets {
        let list = outline::targets(&text, &tree, &stages);
        if call.json {
            json(&list)?
        } else {
            outline::print_targets(&list)
        }
    } else {
        let build_args = super::debug::parse_build_args(&args.build_args);
        let targets = super::values::platform_args(&args.platform)?;
        let host = platform::host();
        let automatic = crate::plan::automatic_args(targets.first().unwrap_or(&host), &host);
        let found = outline::outline(
            &text,
            &tree,
            &stages,
            args.target.as_deref(),
            &build_args,
            &automatic,
        )
        .map_err(bad)?;
        if call.json {
            json(&found)?
        } else {
            outline::print_outline(&found)
        }
    };
    output::stdout_bytes(printed.as_bytes());
    Ok(())
}

/// BuildKit's `result.json`: indented by two spaces, and a newline.
fn json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::new(ExitKind::Failed, anyhow::anyhow!(error)))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_values_as_buildx_parses_them() {
        let call = Call::parse("outline,format=json").unwrap();
        assert_eq!(
            (call.method, call.json, call.ignore_status),
            (Method::Outline, true, false)
        );
        assert_eq!(Call::parse("lint").unwrap().method, Method::Check);
        assert_eq!(Call::parse("build").unwrap().method, Method::Build);
        assert!(
            Call::parse("check,ignorestatus=true")
                .unwrap()
                .ignore_status
        );
        for bad in [
            "outline,targets",
            "describe",
            "outline,format=yaml",
            "check,ignorestatus=maybe",
            "outline,colour=red",
        ] {
            assert!(Call::parse(bad).is_err(), "{bad}");
        }
    }
}
