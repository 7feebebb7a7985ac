//! The rules, as BuildKit names and describes them (`linter/ruleset.go`).

use super::super::Rule;

const fn rule(
    name: &'static str,
    url: &'static str,
    description: &'static str,
    fix: &'static str,
    experimental: bool,
) -> Rule {
    Rule {
        name,
        description,
        url,
        fix,
        family: super::super::Family::Buildkit,
        experimental,
    }
}

/// `FROM image AS Build`.
pub const STAGE_NAME_CASING: Rule = rule(
    "StageNameCasing",
    "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
    "Stage names should be lowercase",
    "write the stage name in lower case",
    false,
);
/// `FROM image as build` with `FROM` upper case.
pub const FROM_AS_CASING: Rule = rule(
    "FromAsCasing",
    "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
    "The 'as' keyword should match the case of the 'from' keyword",
    "write AS in the same case as FROM",
    false,
);
/// A blank line inside a continued instruction.
pub const NO_EMPTY_CONTINUATION: Rule = rule(
    "NoEmptyContinuation",
    "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
    "Empty continuation lines will become errors in a future release",
    "remove the empty line, or make it a comment",
    false,
);
/// `run` among `RUN`s.
pub const CONSISTENT_INSTRUCTION_CASING: Rule = rule(
    "ConsistentInstructionCasing",
    "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    "write every instruction in the same case (upper case is usual)",
    false,
);
/// Two stages with one name.
pub const DUPLICATE_STAGE_NAME: Rule = rule(
    "DuplicateStageName",
    "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
    "Stage names should be unique",
    "give each stage its own name",
    false,
);
/// `AS scratch`, `AS context`.
pub const RESERVED_STAGE_NAME: Rule = rule(
    "ReservedStageName",
    "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
    "Reserved words should not be used as stage names",
    "rename the stage (scratch and context are reserved)",
    false,
);
/// `CMD node app.js`.
pub const JSON_ARGS_RECOMMENDED: Rule = rule(
    "JSONArgsRecommended",
    "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    "use the exec form: CMD [\"program\", \"arg\"] (or set SHELL explicitly if a shell is wanted)",
    false,
);
/// `MAINTAINER`.
pub const MAINTAINER_DEPRECATED: Rule = rule(
    "MaintainerDeprecated",
    "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    "use LABEL org.opencontainers.image.authors=\"name <mail>\"",
    false,
);
/// `FROM $UNDECLARED`.
pub const UNDEFINED_ARG_IN_FROM: Rule = rule(
    "UndefinedArgInFrom",
    "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
    "FROM command must use declared ARGs",
    "declare the variable with ARG before the first FROM",
    false,
);
/// `WORKDIR app` with no absolute `WORKDIR` before.
pub const WORKDIR_RELATIVE_PATH: Rule = rule(
    "WorkdirRelativePath",
    "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    "use an absolute path (WORKDIR /app)",
    false,
);
/// `COPY $foo .` with `foo` never declared.
pub const UNDEFINED_VAR: Rule = rule(
    "UndefinedVar",
    "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
    "Variables should be defined before their use",
    "declare it with ARG or ENV before this instruction (or fix its spelling)",
    false,
);
/// Two `CMD`s in a stage.
pub const MULTIPLE_INSTRUCTIONS_DISALLOWED: Rule = rule(
    "MultipleInstructionsDisallowed",
    "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
    "Multiple instructions of the same type should not be used in the same stage",
    "keep only the last one",
    false,
);
/// `ENV key value`.
pub const LEGACY_KEY_VALUE_FORMAT: Rule = rule(
    "LegacyKeyValueFormat",
    "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
    "Legacy key/value format with whitespace separator should not be used",
    "write key=value (quote values with spaces)",
    false,
);
/// `FROM --platform=$TARGETPLATFORM`.
pub const REDUNDANT_TARGET_PLATFORM: Rule = rule(
    "RedundantTargetPlatform",
    "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "remove --platform=$TARGETPLATFORM",
    false,
);
/// `ARG API_TOKEN`.
pub const SECRETS_USED_IN_ARG_OR_ENV: Rule = rule(
    "SecretsUsedInArgOrEnv",
    "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
    "Sensitive data should not be used in the ARG or ENV commands",
    "pass secrets with RUN --mount=type=secret,id=NAME and --secret id=NAME,src=FILE",
    false,
);
/// `ARG TAG` then `FROM alpine:$TAG`: empty tag without a build argument.
pub const INVALID_DEFAULT_ARG_IN_FROM: Rule = rule(
    "InvalidDefaultArgInFrom",
    "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
    "Default value for global ARG results in an empty or invalid base image name",
    "give the ARG a default value that makes a valid image name",
    false,
);
/// `FROM --platform=linux/amd64`.
pub const FROM_PLATFORM_FLAG_CONST_DISALLOWED: Rule = rule(
    "FromPlatformFlagConstDisallowed",
    "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
    "FROM --platform flag should not use a constant value",
    "drop --platform (use the command line's), use $BUILDPLATFORM, or name the stage after its platform",
    false,
);
/// `COPY` of a file `.dockerignore` excludes.
pub const COPY_IGNORED_FILE: Rule = rule(
    "CopyIgnoredFile",
    "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/",
    "Attempting to Copy file that is excluded by .dockerignore",
    "remove the file from .dockerignore, or stop copying it",
    true,
);
/// A comment above `ARG`/`FROM ... AS` that does not start with its name.
pub const INVALID_DEFINITION_DESCRIPTION: Rule = rule(
    "InvalidDefinitionDescription",
    "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/",
    "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
    "start the comment with the name, or separate it from the instruction by an empty line",
    true,
);
/// `EXPOSE 80/TCP`.
pub const EXPOSE_PROTO_CASING: Rule = rule(
    "ExposeProtoCasing",
    "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
    "Protocol in EXPOSE instruction should be lowercase",
    "write the protocol in lower case (80/tcp)",
    false,
);
/// `EXPOSE 127.0.0.1:80:80`.
pub const EXPOSE_INVALID_FORMAT: Rule = rule(
    "ExposeInvalidFormat",
    "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    "expose the container port only (EXPOSE 80); map ports when running the container",
    false,
);
